import pytest
import torch

from medclf.config import SchedulerConfig
from medclf.training.schedulers import build_scheduler


def _opt(lr=0.1):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr, momentum=0.9)


def _lrs(opt, sched, n):
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.after_batch()
    return out


@pytest.mark.parametrize("total", [4, 5, 6, 8, 40])
def test_onecycle_peaks_at_lr_for_any_length(total):
    opt = _opt()
    sched = build_scheduler(opt, SchedulerConfig(name="onecycle"), epochs=1, steps_per_epoch=total)
    lrs = _lrs(opt, sched, total)
    assert max(lrs) == pytest.approx(0.1)
    assert lrs[0] == pytest.approx(0.1 / 25)
    assert lrs[-1] < 0.01


def test_onecycle_too_short_is_constant():
    assert build_scheduler(_opt(), SchedulerConfig(name="onecycle"), epochs=1, steps_per_epoch=3).scheduler is None


def test_cosine_warms_up_then_decays_to_min_lr():
    opt = _opt()
    cfg = SchedulerConfig(name="cosine", warmup_epochs=1, min_lr=0.01)
    lrs = _lrs(opt, build_scheduler(opt, cfg, epochs=3, steps_per_epoch=10), 30)
    assert lrs[0] == pytest.approx(0.01) and lrs[9] == pytest.approx(0.1)
    assert lrs[-1] == pytest.approx(0.01, abs=1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_none_is_constant():
    assert build_scheduler(_opt(), SchedulerConfig(name="none"), epochs=3, steps_per_epoch=10).scheduler is None


def test_step_decays_every_step_size_epochs():
    opt = _opt()
    sched = build_scheduler(opt, SchedulerConfig(name="step", step_size=2, gamma=0.5), epochs=6, steps_per_epoch=5)
    lrs = _lrs(opt, sched, 30)
    assert lrs[0] == lrs[9] == pytest.approx(0.1)  # epochs 1-2
    assert lrs[10] == lrs[19] == pytest.approx(0.05)  # epochs 3-4
    assert lrs[20] == pytest.approx(0.025)


def test_plateau_decays_after_patience_epochs_without_improvement():
    opt = _opt()
    sched = build_scheduler(opt, SchedulerConfig(name="plateau", patience=1, factor=0.5), epochs=10,
                            steps_per_epoch=5, monitor="val_auc_macro", mode="max")
    for _ in range(5):
        sched.after_batch()  # per-batch calls leave plateau alone
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    for auc in (0.8, 0.9, 0.9, 0.9):
        sched.after_epoch({"val_auc_macro": auc})
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)  # 2 epochs without improvement > patience 1
    sched.after_epoch({"val_auc_macro": 0.95})
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
