"""training.recipe: auto picks probe_finetune for a pretrained backbone on a small fold, finetune everywhere else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medclf.config import config_fingerprint, parse_config
from medclf.experiments.auto_recipe import PROBE_FINETUNE_MAX_TRAIN, auto_recipe, resolve_recipe

SMALL = PROBE_FINETUNE_MAX_TRAIN


def _config(model: dict | None = None, **training):
    return parse_config({"data": {"source": {"type": "synthetic"}},
                         "model": model or {"name": "tf_efficientnet_lite0", "pretrained": True},
                         "training": training})


def test_auto_is_the_default_and_picks_probe_finetune_for_a_pretrained_backbone_on_small_data():
    config = _config()
    assert config.training.recipe == "auto"
    assert auto_recipe(config, SMALL) == "probe_finetune"
    assert auto_recipe(config, SMALL + 1) == "finetune"  # not measured to win above: finetune stays


@pytest.mark.parametrize("model, training", [
    ({"name": "tf_efficientnet_lite0"}, {}),  # random weights: nothing to probe
    (None, {"stages": [{"epochs": 2, "freeze": "backbone"}]}),  # its own stages
    (None, {"freeze": "backbone"}),  # its own freezing, which the recipe's stages would replace
    (None, {"freeze_batchnorm": True}),
    (None, {"epochs": 1}),  # no epoch left to fine-tune after the probe
    (None, {"loss": {"name": "focal"}}),  # a loss a logistic regression cannot fit
    ({"name": "tf_efficientnet_lite0", "pretrained": True, "head": {"hidden": [64]}}, {}),  # hidden layers
], ids=["random-weights", "stages", "freeze", "freeze-batchnorm", "one-epoch", "focal", "hidden-head"])
def test_auto_trains_finetune_where_a_probe_does_not_fit_or_the_config_chose(model, training):
    assert auto_recipe(_config(model, **training), 100) == "finetune"


def test_a_named_recipe_is_never_changed():
    config = _config(recipe="finetune")
    assert resolve_recipe(config, 100) is config


def test_resolving_keeps_what_the_config_wrote_over_the_recipe():
    config = _config(epochs=8, optimizer={"weight_decay": 0.01}, batch_size=16)
    resolved = resolve_recipe(config, 100).training
    assert resolved.recipe == "probe_finetune"
    assert [(s.kind, s.epochs) for s in resolved.stages] == [("probe", 1), ("sgd", 7)]
    assert resolved.optimizer.weight_decay == 0.01 and resolved.batch_size == 16  # written: kept
    assert resolved.optimizer.lr == 1e-4 and resolved.loss.label_smoothing == 0.0  # not written: the recipe's
    large = resolve_recipe(config, SMALL + 1).training
    assert large.recipe == "finetune" and large.optimizer.lr == 1e-3 and large.loss.label_smoothing == 0.1


def test_auto_without_pretrained_weights_keeps_the_fingerprint_of_finetune():
    plain = {"name": "test_resnet"}
    assert config_fingerprint(_config(plain)) == config_fingerprint(_config(plain, recipe="finetune"))
    # with pretrained weights auto may train differently: a run folder made with finetune is another study
    assert config_fingerprint(_config()) != config_fingerprint(_config(recipe="finetune"))


def test_a_small_pretrained_study_trains_probe_finetune_and_records_it(tmp_path: Path):
    from medclf.experiments import run_study

    config = parse_config({
        "name": "auto", "seed": 0,
        "data": {"source": {"type": "synthetic", "n_patients": 40, "slices_per_patient": 1, "image_size": 32},
                 "image_size": 32},
        "model": {"name": "tf_efficientnet_lite0", "pretrained": True},
        "training": {"epochs": 2, "batch_size": 16},
        "cv": {"mode": "holdout", "val_fraction": 0.25},
    })
    summary = run_study(config, tmp_path / "run")
    fold = json.loads((tmp_path / "run" / "fold-0" / "metrics.json").read_text())
    assert fold["recipe"] == "probe_finetune" and fold["epochs_run"] == 2
    history = (tmp_path / "run" / "fold-0" / "history.csv").read_text().splitlines()
    assert [line.split(",")[1] for line in history[1:]] == ["0", "1"]  # the probe stage, then fine-tuning
    assert "baseline" not in fold and summary.get("baseline") is None  # the probe is its own first stage
