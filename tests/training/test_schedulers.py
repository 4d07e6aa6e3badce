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
        sched.step()
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
    assert build_scheduler(_opt(), SchedulerConfig(name="onecycle"), epochs=1, steps_per_epoch=3) is None


def test_cosine_warms_up_then_decays_to_min_lr():
    opt = _opt()
    cfg = SchedulerConfig(name="cosine", warmup_epochs=1, min_lr=0.01)
    lrs = _lrs(opt, build_scheduler(opt, cfg, epochs=3, steps_per_epoch=10), 30)
    assert lrs[0] == pytest.approx(0.01) and lrs[9] == pytest.approx(0.1)
    assert lrs[-1] == pytest.approx(0.01, abs=1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_none_is_constant():
    assert build_scheduler(_opt(), SchedulerConfig(name="none"), epochs=3, steps_per_epoch=10) is None
