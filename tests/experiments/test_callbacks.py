"""Study callbacks fed by the training loop's epochs, and status messages as records of the ``medclf.*`` loggers."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from medclf.config import load_config
from medclf.experiments import run_study
from medclf.experiments.callbacks import EpochRelay, log_to
from study_hooks import Recorder


def test_log_to_sends_warning_lines_at_warning_level_and_the_rest_at_info(caplog):
    log = log_to(logging.getLogger("medclf.test"))
    with caplog.at_level(logging.INFO, logger="medclf"):
        log("fold 0: best epoch 1/1")
        log("warning: 3 images are byte-identical copies of others")
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("medclf.test", logging.INFO, "fold 0: best epoch 1/1"),
        ("medclf.test", logging.WARNING, "warning: 3 images are byte-identical copies of others"),
    ]
    assert caplog.records[0].filename == Path(__file__).name  # the record names the caller, not log_to


def test_epoch_relay_hands_every_study_callback_a_copy_of_the_epoch_logs():
    first, second = Recorder(), Recorder()
    relay = EpochRelay([first, second], fold=3)
    logs = {"epoch": 1, "train_loss": 0.5}
    relay.on_epoch_end(None, 1, logs)  # type: ignore[arg-type]
    assert first.calls == second.calls == [("epoch_end", 3, 1, {"epoch": 1, "train_loss": 0.5})]
    first.calls[0][3]["train_loss"] = 9.0
    assert logs["train_loss"] == 0.5 and second.calls[0][3]["train_loss"] == 0.5


def test_a_resumed_study_logs_fold_lines_and_warnings_and_ends_every_fold(trained_run: Path, copy_run, caplog):
    run = copy_run(trained_run)
    damaged = run / "fold-1" / "predictions.csv"
    damaged.write_bytes(damaged.read_bytes()[:-300])  # fold 1 is trained again, with a warning
    config = load_config(run / "config.yaml")
    recorder = Recorder()
    with caplog.at_level(logging.INFO, logger="medclf"):
        summary = run_study(config, run, callbacks=[recorder])

    records = [(r.name, r.levelname, r.getMessage()) for r in caplog.records if r.name.startswith("medclf.")]
    assert ("medclf.experiments.study", "INFO", "fold 0: already complete, skipped") in records
    assert any(level == "WARNING" and message.startswith("warning: fold 1 is not complete:")
               for _, level, message in records), records
    assert any(name == "medclf.experiments.study" and level == "INFO" and message.startswith("fold 1: best epoch")
               for name, level, message in records), records

    kinds = [c[0] if c[0] != "epoch_end" else f"epoch_end {c[1]}/{c[2]}" for c in recorder.calls]
    # the skipped fold reaches on_fold_end (from its metrics.json), never on_fold_start or on_epoch_end
    assert kinds == ["study_start", "fold_end", "fold_start", "epoch_end 1/1", "epoch_end 1/2", "fold_end",
                     "study_end"]
    assert recorder.calls[0] == ("study_start", "tiny", run)
    assert recorder.calls[1] == ("fold_end", 0, json.loads((run / "fold-0" / "metrics.json").read_text()))
    assert recorder.calls[5] == ("fold_end", 1, json.loads((run / "fold-1" / "metrics.json").read_text()))
    assert recorder.calls[-1] == ("study_end", summary)
