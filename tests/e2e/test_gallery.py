"""A real tiny run keeps the gallery's images (gallery.npz) and its report shows them without the data."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np


def test_the_run_keeps_the_gallery_and_the_report_needs_no_data(trained_run: Path, copy_run, tiny_splits: Path,
                                                                 tmp_path: Path):
    from medclf.reporting import write_report
    from medclf.runfolder import read_gallery

    out = copy_run(trained_run)  # the report is rewritten: never into the shared run
    kept = read_gallery(out)
    assert kept and all(image.dtype == np.uint8 and image.shape[-2:] == (16, 16) for image in kept.values())
    # the run already wrote a report (with its data at hand): what is checked below must come from this one
    (out / "report.html").unlink()
    shutil.rmtree(out / "figures")
    shutil.rmtree(out / "tables")
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
