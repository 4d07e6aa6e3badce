"""A study callback that records every hook call, shared by the tests of callbacks and executors."""

from __future__ import annotations

from typing import Any

from medclf.experiments.callbacks import StudyCallback


class Recorder(StudyCallback):
    """Every hook call, in order, with its arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def on_study_start(self, config, out):
        self.calls.append(("study_start", config.name, out))

    def on_fold_start(self, fold):
        self.calls.append(("fold_start", fold))

    def on_epoch_end(self, fold, epoch, logs):
        self.calls.append(("epoch_end", fold, epoch, logs))

    def on_fold_end(self, fold, metrics):
        self.calls.append(("fold_end", fold, metrics))

    def on_study_end(self, summary):
        self.calls.append(("study_end", summary))
