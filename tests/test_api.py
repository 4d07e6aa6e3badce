"""The Python API: ``medclf.run_study`` with callbacks, from a dict, a YAML path or a Config."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import medclf
from medclf.config import Config
from medclf.errors import ConfigError
from tiny_data import tiny_study


class Recorder(medclf.StudyCallback):
    """Every hook call, in order, with its arguments; ``fail_at``: the hook call that raises."""

    def __init__(self, fail_at: tuple[Any, ...] | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.fail_at = fail_at

    def _record(self, *call: Any) -> None:
        self.calls.append(call)
        if call[:len(self.fail_at or ())] == self.fail_at:
            raise RuntimeError(f"a bug in the user's callback at {call[:2]}")

    def on_study_start(self, config, out):
        self._record("study_start", config, out)

    def on_fold_start(self, fold):
        self._record("fold_start", fold)

    def on_epoch_end(self, fold, epoch, logs):
        self._record("epoch_end", fold, epoch, logs)

    def on_fold_end(self, fold, metrics):
        self._record("fold_end", fold, metrics)

    def on_study_end(self, summary):
        self._record("study_end", summary)

    def on_report(self, path):
        self._record("report", path)


def _history(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def _read(path: Path) -> Any:
    return json.loads(path.read_text())


def test_run_study_calls_every_hook_in_order_with_its_arguments(tiny_splits: Path, tmp_path: Path):
    config = tiny_study(tiny_splits, tmp_path / "cache", name="api", training={"epochs": 1})
    recorder = Recorder()
    out = tmp_path / "run"
    summary = medclf.run_study(config, out, callbacks=[recorder], report=False)

    assert [c[0] for c in recorder.calls] == ["study_start", "fold_start", "epoch_end", "fold_end",
                                              "fold_start", "epoch_end", "fold_end", "study_end"]
    _, given, folder = recorder.calls[0]
    assert isinstance(given, Config) and given.name == "api" and given.training.epochs == 1 and folder == out
    for k, start in ((0, 1), (1, 4)):
        assert recorder.calls[start] == ("fold_start", k)
        (history_row,) = _history(out / f"fold-{k}" / "history.csv")
        _, fold, epoch, logs = recorder.calls[start + 1]
        assert (fold, epoch) == (k, 1) and set(logs) == set(history_row)
        assert logs == pytest.approx(history_row)
        assert recorder.calls[start + 2] == ("fold_end", k, _read(out / f"fold-{k}" / "metrics.json"))
    assert recorder.calls[-1] == ("study_end", summary) and summary == _read(out / "summary.json")
    assert not (out / "report.html").exists()  # report=False: no report, no on_report


def test_a_failing_callback_raises_keeps_finished_folds_and_the_study_resumes(trained_run: Path, copy_run,
                                                                            figures_not_drawn):
    run = copy_run(trained_run)
    (run / "fold-1" / "complete.json").unlink()  # fold 1 is to be trained again
    with pytest.raises(RuntimeError, match="a bug in the user's callback"):
        medclf.run_study(run / "config.yaml", run, callbacks=[Recorder(fail_at=("fold_start", 1))])
    assert (run / "fold-0" / "complete.json").is_file()

    recorder = Recorder()
    summary = medclf.run_study(run / "config.yaml", run, callbacks=[recorder])  # a YAML path, and the report
    kinds = [c[0] for c in recorder.calls]
    # fold 0 was complete: on_fold_end with its metrics.json, no on_fold_start
    assert kinds == ["study_start", "fold_end", "fold_start", "epoch_end", "epoch_end", "fold_end", "study_end",
                     "report"]
    assert recorder.calls[1] == ("fold_end", 0, _read(run / "fold-0" / "metrics.json"))
    assert recorder.calls[-2] == ("study_end", summary)
    assert recorder.calls[-1] == ("report", run / "report.html") and (run / "report.html").is_file()


def test_run_study_checks_a_dict_as_every_command_checks_a_config(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"the config dict is not a valid medclf config: training.epochz: unknown "
                                          r"key. Did you mean 'training.epochs'\?"):
        medclf.run_study({"data": {"source": {"type": "synthetic"}}, "training": {"epochz": 1}}, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_import_medclf_stays_light_and_loads_the_api_on_first_use():
    code = "import sys, medclf; print(sorted(m for m in ('torch', 'medclf.api') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    import medclf.api

    assert medclf.StudyCallback is medclf.api.StudyCallback and medclf.run_study is medclf.api.run_study
    assert {"run_study", "StudyCallback"} <= set(dir(medclf))
    with pytest.raises(AttributeError, match="no attribute 'run_studies'"):
        medclf.run_studies  # noqa: B018
