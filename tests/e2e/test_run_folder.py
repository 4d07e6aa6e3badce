"""The run folder's completion rule through the real CLI: damaged folds are named, refused or retrained.

Each check damages a private copy of the session's finished run (``trained_run``) and runs a command on it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medclf.cli import app
from medclf.runfolder import record_complete

runner = CliRunner()


@pytest.fixture()
def finished(trained_run: Path, copy_run) -> Path:
    """A copy of the session's finished run of ``tiny_config``'s study (same config fingerprint: a rerun resumes)."""
    out = copy_run(trained_run)
    assert json.loads((out / "fold-1" / "complete.json").read_text())["n_folds"] == 2
    return out


def _copy(run: Path, name: str) -> Path:
    target = run.parent / name
    shutil.copytree(run, target)
    return target


def _garbage(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * (path.stat().st_size // 256) + b"\0" * (path.stat().st_size % 256))


def _one_paragraph(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return " ".join(result.output.split())


def _compact(text: str) -> str:
    return "".join(text.split())


def test_predict_and_report_refuse_a_damaged_fold_and_name_it(finished: Path, tiny_splits: Path, tmp_path: Path):
    images = str(tiny_splits / "test" / "circle")
    out_csv = str(tmp_path / "p.csv")
    # weights overwritten with garbage of the same size: named by the completion record
    run = _copy(finished, "garbage")
    _garbage(run / "fold-1" / "model.safetensors")
    text = _one_paragraph(runner.invoke(app, ["predict", str(run), images, "--out", out_csv]))
    assert "fold 1: " in text and "fold-1/model.safetensors was altered" in text and "--fold 0" in text
    assert "fold 0:" not in text
    one = runner.invoke(app, ["predict", str(run), images, "--fold", "0", "--out", out_csv])
    assert one.exit_code == 0, one.output
    assert "fold-1/model.safetensors was altered" in _one_paragraph(runner.invoke(app, ["report", str(run)]))

    # the same garbage with a record rewritten to match: the weights still do not load, named, no traceback
    record_complete(run / "fold-1", **{k: v for k, v in json.loads((finished / "fold-1" / "complete.json")
                                                                     .read_text()).items() if k != "files"})
    text = _one_paragraph(runner.invoke(app, ["predict", str(run), images, "--out", out_csv]))
    assert "fold-1/model.safetensors does not load as safetensors weights" in text

    # a truncated predictions.csv, or a fold folder deleted, is not used silently either
    run = _copy(finished, "truncated")
    csv_path = run / "fold-0" / "predictions.csv"
    csv_path.write_bytes(csv_path.read_bytes()[:-200])
    assert "fold-0/predictions.csv is" in _one_paragraph(runner.invoke(app, ["report", str(run)]))
    shutil.rmtree(run / "fold-0")
    text = _one_paragraph(runner.invoke(app, ["predict", str(run), images, "--out", out_csv]))
    assert "fold 0: missing" in text


def test_non_finite_weights_are_refused_by_predict(finished: Path, tiny_splits: Path, tmp_path: Path):
    from safetensors.torch import load_file, save_file

    run = _copy(finished, "nan")
    weights = load_file(str(run / "fold-1" / "model.safetensors"))
    save_file({k: v * float("nan") if v.is_floating_point() else v for k, v in weights.items()},
              str(run / "fold-1" / "model.safetensors"))
    facts = {k: v for k, v in json.loads((run / "fold-1" / "complete.json").read_text()).items() if k != "files"}
    record_complete(run / "fold-1", **facts)  # as if the model had trained to NaN
    text = _one_paragraph(runner.invoke(app, ["predict", str(run), str(tiny_splits / "test"), "--out",
                                              str(tmp_path / "p.csv")]))
    assert "fold 1 (" in text and "fold-1/model.safetensors): the model gives non-finite probabilities" in text


def test_resume_retrains_a_damaged_fold_with_a_warning_and_ends_with_the_same_metrics(
    finished: Path, tiny_config: Path, figures_not_drawn
):
    first = json.loads((finished / "summary.json").read_text())
    ensemble = (finished / "ensemble" / "predictions.csv").read_text()
    csv_path = finished / "fold-1" / "predictions.csv"
    csv_path.write_bytes(csv_path.read_bytes()[:-300])  # truncated: before, the ensemble summed to 0.5 here
    (finished / "run.json").write_text('{"config_fing')  # and a truncated run.json (a full disk)
    again = runner.invoke(app, ["run", str(tiny_config), "--out", str(finished), "--quiet"])
    assert again.exit_code == 0, again.output
    output = " ".join(again.output.split())
    assert "run.json is unreadable" in output and "re-established from the folds' complete.json records" in output
    compact = "".join(output.split())  # the console wraps long paths anywhere
    assert "warning: fold 1 is not complete:" in output and "fold-1/predictions.csvis" in compact, output
    assert "fold 0: already complete, skipped" in output and "fold 1: already complete" not in output
    second = json.loads((finished / "summary.json").read_text())
    assert second["metrics"] == first["metrics"] and second["ensemble"] == first["ensemble"]
    assert (finished / "ensemble" / "predictions.csv").read_text() == ensemble
    assert json.loads((finished / "run.json").read_text())["config_fingerprint"] == first["config_fingerprint"]
