"""The study-level flow under torchrun, rank by rank, without a process group (tests/training/test_ddp.py runs it)."""

import numpy as np
import pytest

from medclf.config import Config
from medclf.data.splitting import Fold
from medclf.errors import ConfigError, DataError, MedclfError
from medclf.experiments import distributed
from medclf.experiments.distributed import RankExecutor, _check, _follow, _Plan
from medclf.experiments.executors import FoldTask, LocalExecutor


def _config(**training) -> Config:
    return Config.model_validate({"name": "t", "data": {"source": {"type": "synthetic"}},
                                  "model": {"name": "test_resnet"}, "training": {"device": "cpu", **training}})


def _fold(index: int) -> Fold:
    return Fold(index, np.arange(4), np.arange(4, 6), np.empty(0, int), np.empty(0, int))


def test_the_global_batch_must_give_each_process_two_images():
    _check(_config(batch_size=8), 4, None)
    with pytest.raises(ConfigError, match=r"batch_size 6 is the global batch, shared by the 4 processes.*at least 8"):
        _check(_config(batch_size=6), 4, None)


def test_folds_side_by_side_cannot_run_under_torchrun():
    _check(_config(), 2, LocalExecutor(parallel=1))  # the command line's default executor
    with pytest.raises(ConfigError, match="under torchrun every process trains each fold together"):
        _check(_config(), 2, LocalExecutor(parallel=2))


def test_rank_0_broadcasts_the_folds_to_train_then_trains_them_here(monkeypatch):
    sent, ran = [], []
    monkeypatch.setattr(distributed, "broadcast_object", lambda plan: sent.append(plan) or plan)
    tasks = [FoldTask("t", _config(), None, _fold(k), "fp") for k in (1, 3)]
    executor = RankExecutor()
    executor.run(tasks, run_inline=lambda task: ran.append(task.fold.index), log=print)
    assert executor.planned
    assert [f.index for f in sent[0].folds] == [1, 3] and sent[0].fingerprint == "fp" and sent[0].error is None
    assert ran == [1, 3]


def test_the_other_ranks_stop_with_rank_0s_reason(monkeypatch):
    monkeypatch.setattr(distributed, "broadcast_object", lambda _: _Plan(error="RunFolderError"))
    with pytest.raises(MedclfError, match=r"rank 0 stopped before training \(RunFolderError\); its own message"):
        _follow(_config())


def test_the_other_ranks_refuse_data_that_is_not_rank_0s(monkeypatch):
    monkeypatch.setattr(distributed, "broadcast_object", lambda _: _Plan(folds=[_fold(0)], fingerprint="rank0"))
    monkeypatch.setattr(distributed, "load_dataset", lambda _: type("Data", (), {"fingerprint": "other"})())
    monkeypatch.setattr(distributed, "fit_fold", lambda *a, **k: pytest.fail("fitted other data"))
    with pytest.raises(DataError, match=r"fingerprint other\) is not the data rank 0 loaded \(rank0\)"):
        _follow(_config())


def test_the_other_ranks_fit_each_planned_fold_without_callbacks(monkeypatch):
    data = type("Data", (), {"fingerprint": "fp"})()
    replies = iter([_Plan(folds=[_fold(0), _fold(2)], fingerprint="fp"), {"summary": 1}])
    fitted = []
    monkeypatch.setattr(distributed, "broadcast_object", lambda _: next(replies))
    monkeypatch.setattr(distributed, "load_dataset", lambda _: data)
    monkeypatch.setattr(distributed, "fit_fold", lambda config, d, fold, callbacks: fitted.append((fold.index,
                                                                                                    callbacks)))
    assert _follow(_config()) == {"summary": 1}  # rank 0's summary
    assert fitted == [(0, []), (2, [])]


def test_with_every_fold_complete_the_other_ranks_load_nothing(monkeypatch):
    replies = iter([_Plan(), {"summary": 1}])
    monkeypatch.setattr(distributed, "broadcast_object", lambda _: next(replies))
    monkeypatch.setattr(distributed, "load_dataset", lambda _: pytest.fail("loaded data for nothing"))
    assert _follow(_config()) == {"summary": 1}


def test_rank_0_releases_the_others_when_it_fails_before_training(monkeypatch):
    from medclf.errors import RunFolderError

    sent = []
    monkeypatch.setattr(distributed, "broadcast_object", lambda plan: sent.append(plan) or plan)

    def refuse(*args, executor, **kwargs):
        raise RunFolderError("runs/x holds a run of a different config")

    monkeypatch.setattr(distributed, "run_study", refuse)
    with pytest.raises(RunFolderError):
        distributed._lead(_config(), None, overwrite=False, progress=None, log=print, callbacks=())
    assert sent == [_Plan(error="RunFolderError")]


def test_rank_0_sends_its_summary_after_the_study(monkeypatch):
    sent = []
    monkeypatch.setattr(distributed, "broadcast_object", lambda obj: sent.append(obj) or obj)

    def study(*args, executor, **kwargs):
        executor.run([], run_inline=None, log=print)  # every fold complete: an empty plan
        return {"summary": 1}

    monkeypatch.setattr(distributed, "run_study", study)
    assert distributed._lead(_config(), None, overwrite=False, progress=None, log=print, callbacks=()) == {"summary": 1}
    assert sent == [_Plan(), {"summary": 1}]
