"""The report of a real tiny study, rendered in headless Chromium: no console errors, no network, key sections.

Skips (with the reason) only when Debian's ``chromium`` is not installed; ``.ci/run`` installs it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium")
SECTIONS = ["Overview", "Data", "Metrics", "Classification report", "Confusion matrices",
            "ROC and precision-recall curves", "Training curves", "Calibration", "Misclassified images",
            "Timing and model", "Configuration", "Environment"]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run does)")
def test_report_of_a_real_run_renders_in_chromium_offline(tiny_config: Path, tmp_path: Path):
    from playwright.sync_api import sync_playwright

    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "medclf", "run", str(tiny_config), "--out", str(out), "--quiet",
         "-o", "training.epochs=1"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = out / "report.html"
    assert f"report {report}" in " ".join(done.stdout.split())
    assert (out / "figures" / "misclassified.png").exists() or "No misclassified" in report.read_text()

    errors, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-background-networking", "--disable-component-update", "--no-first-run",
            "--disable-default-apps", "--disable-sync",
        ])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda req: requests.append(req.url))
            page.goto(report.as_uri(), wait_until="load")
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            headings = page.locator("h2").all_inner_texts()
            toc = page.locator("nav.toc a").all_inner_texts()
            broken = page.evaluate("[...document.images].filter(i => !i.complete || i.naturalWidth === 0).length")
            n_images = page.evaluate("document.images.length")
            height = page.evaluate("document.body.scrollHeight")
        finally:
            browser.close()

    assert errors == []
    assert [u for u in requests if u != report.as_uri() and not u.startswith("data:")] == []
    for section in SECTIONS:
        assert section in headings and section in toc
    assert n_images >= 10 and broken == 0
    assert height > 3000
    assert (tmp_path / "report.png").stat().st_size > 50_000
