"""The report of a real tiny study, rendered in headless Chromium: no console errors, no network, key sections,
and a printed PDF that starts with content rather than a blank page.

Skips (with the reason) only when Debian's ``chromium`` is not installed; ``.ci/run`` installs it.
"""

from __future__ import annotations

import json
import re
import shutil
import zlib
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium")
SECTIONS = ["Overview", "Data", "Metrics", "Classification report", "Confusion matrices",
            "ROC and precision-recall curves", "Training curves", "Calibration", "Misclassified images",
            "Timing and model", "Configuration", "Environment"]


def _pdf_pages(pdf: bytes) -> list[bytes]:
    """The decompressed content stream of each page of Chromium's PDF, in page order (no PDF library here)."""
    objects = {int(m[1]): m[2] for m in re.finditer(rb"(\d+) 0 obj\s*(.*?)endobj", pdf, re.S)}

    def stream(n: int) -> bytes:
        # the stream's bytes by its /Length, read from the whole file: compressed bytes may hold "endobj",
        # "endstream" or a trailing "\r", which a search for the end marker would cut at
        head = re.search(rb"(?<![0-9])%d 0 obj\s*<<(.*?)>>\s*stream\r?\n" % n, pdf, re.S)
        length = re.search(rb"/Length\s+(\d+)(\s+0\s+R)?", head[1])
        size = int(re.search(rb"\d+", objects[int(length[1])])[0]) if length[2] else int(length[1])
        data = pdf[head.end():head.end() + size]
        return zlib.decompress(data) if b"/FlateDecode" in head[1] else data

    def leaves(n: int) -> list[int]:  # the page tree: /Pages nodes hold /Kids, pages hold /Contents
        if not re.search(rb"/Type\s*/Pages\b", objects[n]):
            return [n]
        kids = re.search(rb"/Kids\s*\[(.*?)\]", objects[n], re.S)[1]
        return [page for k in re.findall(rb"(\d+) 0 R", kids) for page in leaves(int(k))]

    (root,) = [n for n, body in objects.items() if re.search(rb"/Type\s*/Pages\b", body) and b"/Parent" not in body]
    return [stream(int(re.search(rb"/Contents\s+(\d+) 0 R", objects[page])[1])) for page in leaves(root)]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run does)")
def test_report_of_a_real_run_renders_in_chromium_offline(trained_run: Path, tmp_path: Path):
    from playwright.sync_api import sync_playwright

    out = trained_run  # the session's run of the tiny study: `medclf run` wrote its report; only read here
    report = out / "report.html"
    assert f"report {report}" in " ".join((out.parent / "run.stdout").read_text().split())
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
            pdf = page.pdf(prefer_css_page_size=True)  # what Print -> Save as PDF gives
        finally:
            browser.close()

    assert errors == []
    assert [u for u in requests if u != report.as_uri() and not u.startswith("data:")] == []
    for section in SECTIONS:
        assert section in headings and section in toc
    assert n_images >= 10 and broken == 0
    assert height > 3000
    assert (tmp_path / "report.png").stat().st_size > 50_000

    # printed: every section after the overview starts a page, and the first page is not a blank title page
    # (it was, when the contents' heading also broke before itself): title, contents and overview share it
    pages = _pdf_pages(pdf)
    text_runs = [len(re.findall(rb"\bT[jJ]\b", page)) for page in pages]
    assert len(SECTIONS) - 1 <= len(pages) <= 4 * len(SECTIONS), text_runs
    assert text_runs[0] >= 200 and text_runs[0] >= sorted(text_runs)[len(text_runs) // 2] / 2, text_runs

    # the environment is the run's, recorded in summary.json, and the report shows it as such
    environment = json.loads((out / "summary.json").read_text())["environment"]
    assert {"python", "torch", "torchvision", "timm", "numpy", "scikit-learn", "medclf", "device"} <= set(environment)
    assert environment["device"] == "cpu"
    rows = (out / "tables" / "environment.csv").read_text().splitlines()
    assert f"torch,{environment['torch']},run" in rows and "device,cpu,run" in rows
