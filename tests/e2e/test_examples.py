"""The shipped configs: every example validates, and the packaged demo runs (shrunk to seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medclf.cli import app
from medclf.config import load_config

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").rglob("*.yaml"))
runner = CliRunner()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_validates(path: Path):
    assert load_config(path).name


def test_examples_demo_is_the_packaged_demo():
    from importlib.resources import files

    packaged = Path(str(files("medclf") / "resources" / "demo.yaml"))
    assert (Path(__file__).resolve().parents[2] / "examples" / "demo.yaml").read_text() == packaged.read_text()


def test_demo_command_runs_the_packaged_config(tmp_path: Path):
    shrink = ["-o", "data.source.n_patients=32", "-o", "data.source.slices_per_patient=3", "-o", "cv.n_folds=2",
              "-o", "cv.val_fraction=0.5",
              "-o", "training.epochs=1", "-o", "data.image_size=32", "-o", "data.source.image_size=32"]
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--quiet", *shrink])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["name"] == "demo"
    assert summary["data"]["n_patients"] == 32 and summary["data"]["n_images"] == 96
    assert len(summary["metrics"]["holdout"]["accuracy"]["folds"]) == 2
    assert "test" in summary["ensemble"]
