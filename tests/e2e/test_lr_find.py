"""``medclf lr-find`` on the tiny study: the curve, the suggestions, the files, and refusals."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from typer.testing import CliRunner

from medclf.cli import app

runner = CliRunner()


def test_lr_find_prints_both_suggestions_and_writes_the_curve(tiny_config: Path, tmp_path: Path):
    out = tmp_path / "lr"
    result = runner.invoke(app, ["lr-find", str(tiny_config), "--steps", "30", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output

    suggested = dict(re.findall(r"suggested lr \((steepest|valley)\): (\S+)", result.output))
    assert set(suggested) == {"steepest", "valley"}
    for value in suggested.values():
        assert 1e-7 <= float(value) <= 10.0

    with open(out / "lr_find.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["step", "lr", "loss", "smoothed_loss"]
    assert 5 <= len(rows) <= 30 and [int(r["step"]) for r in rows] == list(range(1, len(rows) + 1))
    lrs = [float(r["lr"]) for r in rows]
    assert lrs == sorted(lrs) and abs(lrs[0] - 1e-7) < 1e-12
    assert (out / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.iterdir()) == ["lr_find.csv", "lr_find.png"]  # no run folder, no leftovers


def test_lr_find_refuses_a_bad_config_and_a_bad_range_in_one_paragraph(tiny_config: Path, tmp_path: Path):
    out = tmp_path / "lr"
    bad = runner.invoke(app, ["lr-find", str(tiny_config), "-o", "training.optimizer.name=adamx", "--out", str(out)])
    assert bad.exit_code == 2
    assert "training.optimizer.name" in bad.output and "adamw" in bad.output

    backwards = runner.invoke(app, ["lr-find", str(tiny_config), "--start", "1", "--end", "0.1", "--out", str(out)])
    assert backwards.exit_code == 2 and "0 < start < end" in backwards.output
    assert not out.exists()
