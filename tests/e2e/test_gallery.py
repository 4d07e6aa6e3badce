"""A real tiny run keeps the gallery's images (gallery.npz) and its report shows them without the data."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np


def test_the_run_keeps_the_gallery_and_the_report_needs_no_data(tiny_config: Path, tiny_splits: Path,
                                                                 tmp_path: Path):
    from medclf.reporting import write_report
    from medclf.runfolder import read_gallery

    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "medclf", "run", str(tiny_config), "--out", str(out), "--quiet",
         "-o", "training.epochs=1"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    kept = read_gallery(out)
    assert kept and all(image.dtype == np.uint8 and image.shape[-2:] == (16, 16) for image in kept.values())
    hidden = tmp_path / "elsewhere"
    shutil.move(tiny_splits, hidden)  # the report reads the run folder only
    try:
        html = write_report(out).read_text()
    finally:
        shutil.move(hidden, tiny_splits)
    assert "The images are not shown" not in html and (out / "figures" / "misclassified.png").exists()
    with open(out / "tables" / "misclassified.csv", newline="", encoding="utf-8") as handle:
        shown = [row["id"] for row in csv.DictReader(handle)]
    assert shown == list(kept)
