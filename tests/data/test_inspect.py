"""``medclf inspect``'s report: unreadable files are counted and named (the first few), by id."""

from __future__ import annotations

import json
from pathlib import Path

from medclf.data.inspect import inspect_dataset, unreadable_summary


def test_unreadable_files_are_counted_and_the_first_few_named(tmp_path: Path, make_config, img) -> None:
    root = tmp_path / "data"
    for cls in ("a", "b"):
        for i in range(3):
            img.write(root / cls / f"{i}.png", seed=10 * ord(cls) + i)
    for i in range(7):  # zero-byte files, and one DICOM that is not one
        (root / "b" / f"bad{i}.{'dcm' if i == 6 else 'png'}").write_bytes(b"garbage" * 30 if i == 6 else b"")
    report = inspect_dataset(make_config({"type": "folder", "path": str(root)}), out=tmp_path / "ins")
    assert report["n_unreadable"] == 7 and report["n_images"] == 6
    assert [u["path"] for u in report["unreadable"]] == [f"b/bad{i}.png" for i in range(6)] + ["b/bad6.dcm"]  # ids, not machine paths
    assert json.loads((tmp_path / "ins" / "inspect.json").read_text())["n_unreadable"] == 7
    line = unreadable_summary(report)
    assert line.startswith("7 unreadable files left out: b/bad0.png (") and "b/bad4.png (" in line
    assert "bad5" not in line and line.endswith("; and 2 more, all listed in inspect.json")
    assert "0 bytes" in line  # the reason is given with each name


def test_summary_of_one_or_no_unreadable_file() -> None:
    one = {"unreadable": [{"path": "x/1.png", "reason": "the image file is empty (0 bytes)"}]}
    assert unreadable_summary(one) == "1 unreadable file left out: x/1.png (the image file is empty (0 bytes))"
    assert unreadable_summary({"unreadable": []}) is None
