"""A run folder received from someone else: predicting from it never runs code or reads files it names."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from medclf import runfolder
from medclf.cli import app

runner = CliRunner()


class _Payload:
    """Unpickling this creates ``marker``: the stand-in for code run by a hostile pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def medclf(*args: str) -> tuple[int, str]:
    """The real command line, in this process (no second torch import); exit code and one-line output."""
    result = runner.invoke(app, list(args))
    return result.exit_code, " ".join(result.output.split())


def _tamper(fold: Path, **changes) -> None:
    """Edit fold/model.json and re-sign complete.json, as a sender who controls the whole folder would."""
    spec = json.loads((fold / "model.json").read_text())
    (fold / "model.json").write_text(json.dumps(spec | changes))
    record = json.loads((fold / "complete.json").read_text())
    record.pop("files")
    runfolder.record_complete(fold, **record)


def test_a_hostile_model_json_is_refused_and_runs_nothing(trained_run: Path, copy_run, tiny_splits: Path,
                                                          tmp_path: Path):
    out = copy_run(trained_run)  # the received folder: a finished run its sender then edited
    marker, evil = tmp_path / "marker", tmp_path / "evil.pth"
    torch.save(_Payload(marker), evil)
    images = str(tiny_splits / "test")

    _tamper(out / "fold-1", kwargs={"checkpoint_path": str(evil)})
    code, output = medclf("predict", str(out), images, "--out", str(tmp_path / "p.csv"), "--quiet")
    assert code == 2, output
    assert "model.json is refused: kwargs.checkpoint_path makes timm open and unpickle" in output
    assert not marker.exists() and not (tmp_path / "p.csv").exists()

    _tamper(out / "fold-1", kwargs={}, architecture=f"local-dir:{tmp_path}")
    code, output = medclf("predict", str(out), images, "--fold", "1", "--out", str(tmp_path / "p.csv"), "--quiet")
    assert code == 2 and "is not an architecture registered in the installed timm" in output, output

    code, output = medclf("predict", str(out), images, "--fold", "0", "--out", str(tmp_path / "p.csv"), "--quiet")
    assert code == 0, output  # the untouched fold still predicts: the refusals come from the edits alone
    assert not marker.exists()
