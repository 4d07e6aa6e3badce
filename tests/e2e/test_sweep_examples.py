"""The shipped sweeps (examples/sweeps/): each validates, every variant's network builds, searches sample validly."""

from __future__ import annotations

from pathlib import Path

import pytest

from medclf.experiments.search import RandomSampler
from medclf.experiments.sweep_config import load_sweep
from medclf.models import build_model
from medclf.training.losses import n_outputs
from real_data import skip_if_it_reads_absent_real_data

SWEEPS = sorted((Path(__file__).resolve().parents[2] / "examples" / "sweeps").glob("*.yaml"))


def test_the_issue_asks_for_these_studies():
    names = {p.stem for p in SWEEPS}
    assert {"augmentation", "losses", "optimizers", "batch_size", "regularization", "cnn_layers", "freeze",
            "architectures"} <= names


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_every_sweep_example_validates_and_builds(path: Path):
    skip_if_it_reads_absent_real_data(path)
    plan = load_sweep(path)
    variants = list(plan.variants)
    if plan.sweep.search != "grid":
        sampler = RandomSampler(plan.sweep.space, seed=0)
        variants += [plan.make_variant(f"trial-{i}", sampler.ask(), score_test=False) for i in range(3)]
    else:
        assert plan.baseline in {v.name for v in variants} and len(variants) >= 2
    for v in variants:
        model = v.config.model
        size = v.config.data.size_hw
        n_out = n_outputs(v.config.training.loss, n_classes=2)
        assert build_model(model, in_chans=v.config.data.channels, n_classes=n_out, size_hw=size) is not None
