"""The page `medclf serve` answers at /, driven in headless Chromium: choose an image, see the class, the
probabilities, the decision and the Grad-CAM overlay, or the server's error for a refused file; no console
errors, no request to another host.

Skips (with the reason) only when Debian's ``chromium`` is not installed; ``.ci/run`` installs it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from medclf.inference.serve import ServedModel, create_app, running_server

CHROMIUM = shutil.which("chromium")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run does)")
def test_the_served_page_shows_class_decision_and_overlay(binary_run: Path, binary_splits: Path, tmp_path: Path):
    from playwright.sync_api import expect, sync_playwright

    image = sorted((binary_splits / "test" / "abnormal").glob("*.png"))[0]
    served = ServedModel.load(binary_run)
    errors, requests = [], []
    with running_server(create_app(served)) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-background-networking", "--disable-component-update", "--no-first-run",
            "--disable-default-apps", "--disable-sync",
        ])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 800})
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda req: requests.append(req.url))
            page.goto(url + "/", wait_until="load")
            expect(page.locator("#model")).to_contain_text("operating point")
            page.set_input_files("#file", str(image))
            expect(page.locator("#result")).to_be_visible(timeout=60_000)
            expect(page.locator("#overlay-figure")).to_be_visible()
            page.wait_for_function("document.getElementById('overlay').naturalWidth > 0")
            page.screenshot(path=str(tmp_path / "served.png"), full_page=True)
            predicted = page.locator("#predicted").inner_text()
            decision = page.locator("#decision").inner_text()
            rows = page.locator("#probabilities tbody tr").all_inner_texts()
            overlay_size = page.evaluate("[document.getElementById('overlay').naturalWidth, "
                                         "document.getElementById('overlay').naturalHeight]")
            preview_ok = page.evaluate("document.getElementById('input').naturalWidth > 0")
            # a file the server refuses: its error is shown, the old result hidden
            page.set_input_files("#file", {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"})
            expect(page.locator("#error")).to_contain_text("415")
            expect(page.locator("#result")).to_be_hidden()
        finally:
            browser.close()

    # the one console error is the browser's note of the refused upload's 415 answer
    assert [e for e in errors if "status of 415" not in e] == [] and len(errors) <= 1
    assert all(u.startswith((url, "data:", "blob:")) for u in requests), requests
    assert predicted in ("abnormal", "normal")
    assert decision.startswith(f"Decision at {served.operating_point}:")
    assert [r.split()[0] for r in rows] == served.class_names
    assert overlay_size == [16, 16] and preview_ok
    assert (tmp_path / "served.png").stat().st_size > 10_000
