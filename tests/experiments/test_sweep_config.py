"""Sweep files: the sweep section's validation, and its expansion into named, validated variants."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medclf.errors import ConfigError
from medclf.experiments.sweep_config import apply_dotted, load_sweep

BASE = {
    "name": "s",
    "data": {"source": {"type": "synthetic", "n_patients": 8}, "image_size": 32},
    "model": {"name": "test_resnet"},
    "training": {"epochs": 1},
    "cv": {"n_folds": 2},
}


def write(tmp_path: Path, sweep: dict, base: dict | None = None) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**(base or BASE), "sweep": sweep}, sort_keys=False))
    return path


def test_variants_then_grid_each_the_base_with_its_overrides(tmp_path: Path):
    plan = load_sweep(write(tmp_path, {
        "variants": {"ce": {}, "weighted": {"training.loss.class_weights": "balanced"}},
        "grid": {"training.loss.name": ["focal"], "training.loss.gamma": [1.0, 2.0], "training.loss.alpha": [0.25, 0.5]},
    }))
    names = [v.name for v in plan.variants]
    assert names == ["ce", "weighted", "gamma=1.0,alpha=0.25", "gamma=1.0,alpha=0.5", "gamma=2.0,alpha=0.25",
                     "gamma=2.0,alpha=0.5"]
    assert plan.baseline == "ce"  # the first variant when none is named
    focal = plan.variants[-1]
    assert focal.overrides == {"training.loss.name": "focal", "training.loss.gamma": 2.0, "training.loss.alpha": 0.5}
    assert focal.config.training.loss.name == "focal" and focal.config.training.loss.gamma == 2.0
    assert focal.config.training.epochs == 1 and focal.config.model.name == "test_resnet"
    assert plan.variants[1].config.training.loss.class_weights == "balanced"
    # every variant shares the split seed and cv section, so the folds are paired
    assert all(v.config.seed == 0 and v.config.cv == plan.variants[0].config.cv for v in plan.variants)


def test_grid_names_use_the_full_key_when_leaves_collide(tmp_path: Path):
    plan = load_sweep(write(tmp_path, {"grid": {"training.optimizer.name": ["sgd", "adam"],
                                                "training.loss.name": ["cross_entropy", "focal"]}}))
    assert [v.name for v in plan.variants][:2] == ["training.optimizer.name=sgd,training.loss.name=cross_entropy",
                                                   "training.optimizer.name=sgd,training.loss.name=focal"]
    assert len(plan.variants) == 4


def test_a_misspelt_override_names_the_variant(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"variant 'bad' of .*sweep.yaml is not a valid medclf config: "
                                          r"training.optimiser: unknown key. Did you mean 'training.optimizer'\?"):
        load_sweep(write(tmp_path, {"variants": {"ok": {}, "bad": {"training.optimiser.name": "sgd"}}}))


@pytest.mark.parametrize(("sweep", "match"), [
    ({"variants": {"sgd": {}}, "baseline": "sgdd"}, r"sweep.baseline 'sgdd' is not a variant. Did you mean 'sgd'\?"),
    ({"variants": {"a": {}}, "metric": "auc_marco"},
     r"sweep.metric: cannot rank on 'auc_marco'. Did you mean 'auc_macro'\? Choose one of: accuracy, .*loss\.$"),
    ({"variants": {"a": {}}, "grdi": {}}, r"sweep.grdi: unknown key. Did you mean 'grid'\?"),
    ({"variants": {"a": {}, "b": {"cv.n_folds": 3}}}, r"variant 'b' changes seed or cv, so it would run on other folds"),
    ({}, r"a grid sweep needs sweep.grid or sweep.variants"),
    ({"grid": {"training.epochs": []}}, r"grid keys need at least one value; empty: training.epochs"),
    ({"search": "optuna"}, r"sweep.search: optuna needs sweep.space"),
    ({"search": "random", "split": "test", "space": {"training.epochs": [1, 2]}}, r"never test"),
    ({"search": "random", "space": {"training.optimizer.lr": {"low": 1, "high": 0.1}}}, r"low < high"),
    ({"search": "random", "space": {"training.optimizer.lr": {"low": 0, "high": 1, "log": True}}}, r"low > 0"),
    ({"variants": {"a": {}}, "ray": {"num_gpu_per_task": 1}}, r"sweep.ray.num_gpu_per_task: unknown key"),
    # a range is reported as a range, without the union's tag or a "not a valid list" from the other branch
    ({"search": "random", "space": {"training.optimizer.lr": {"low": 0.1, "high": 1, "lgo": True}}},
     r"valid sweep config: sweep.space.training.optimizer.lr.lgo: unknown key. Did you mean 'low'\? Valid keys "
     r"here: low, high, log, step, type.$"),
    ({"search": "random", "space": {"training.epochs": 3}},
     r"sweep.space.training.epochs: a search space entry is a list of choices or a range .* \(got 3\)"),
    ({"search": "optuna", "space": {"training.optimizer.lr": {"low": 1e-4, "high": 0.1, "log": True, "step": 0.01}}},
     r"sweep.space.training.optimizer.lr: a range takes log: true or a step, not both; got log: true and step: 0.01"),
    ({"search": "random", "space": {"training.epochs": []}}, r"sweep.space choices need at least one value; empty: "
                                                             r"training.epochs.$"),
    # a search may not change the folds either
    ({"search": "random", "space": {"cv.n_folds": [2, 3], "training.epochs": [1, 2]}},
     r"sweep: sweep.space may not vary cv.n_folds: every trial must run on the base config's folds"),
    ({"search": "optuna", "space": {"seed": {"low": 0, "high": 9, "type": "int"}}}, r"sweep.space may not vary seed:"),
])
def test_sweep_section_errors(tmp_path: Path, sweep: dict, match: str):
    with pytest.raises(ConfigError, match=match):
        load_sweep(write(tmp_path, sweep))


def test_a_file_without_a_sweep_section_is_refused(tmp_path: Path):
    path = tmp_path / "plain.yaml"
    path.write_text(yaml.safe_dump(BASE))
    with pytest.raises(ConfigError, match="has no sweep: section"):
        load_sweep(path)


def test_search_plans_the_base_as_its_baseline(tmp_path: Path):
    plan = load_sweep(write(tmp_path, {"search": "optuna", "trials": 3,
                                       "space": {"training.optimizer.lr": {"low": 1e-4, "high": 1e-2, "log": True}}}))
    assert [v.name for v in plan.variants] == ["base"] and plan.baseline == "base"
    assert plan.variants[0].score_test is False


def test_apply_dotted_copies_and_creates_parents():
    raw = {"training": {"epochs": 1}}
    out = apply_dotted(raw, {"training.loss.gamma": 2.0, "model.head": {"dropout": 0.3}})
    assert out == {"training": {"epochs": 1, "loss": {"gamma": 2.0}}, "model": {"head": {"dropout": 0.3}}}
    assert raw == {"training": {"epochs": 1}}


def test_apply_dotted_indexes_a_list_the_base_writes_as_an_override_does():
    raw = {"training": {"stages": [{"epochs": 1}, {"epochs": 2}]}}
    out = apply_dotted(raw, {"training.stages.1.lr": 0.01})
    assert out["training"]["stages"] == [{"epochs": 1}, {"epochs": 2, "lr": 0.01}]
    assert raw["training"]["stages"][1] == {"epochs": 2}  # the base is left as written
    with pytest.raises(ConfigError, match=r"^sweep key 'training\.stages\.2\.lr': training\.stages has 2 element"):
        apply_dotted(raw, {"training.stages.2.lr": 0.01})


@pytest.mark.parametrize(("space", "match"), [
    ({"training.optimiser.lr": {"low": 1e-4, "high": 1e-2, "log": True}},
     r"sweep.space value training.optimiser.lr: 0.0001 of .*sweep.yaml is not a valid medclf config: "
     r"training.optimiser: unknown key. Did you mean 'training.optimizer'\?"),
    ({"training.batch_size": [8, 16], "training.optimizer.name": ["sgd", "adamm"]},
     r"sweep.space value training.optimizer.name: adamm of .* Unknown optimizer 'adamm'. Did you mean 'adam'\?"),
    ({"training.epochs": {"low": 1, "high": 3}},  # a float range on an integer key: only an inner value fails
     r"sweep.space value training.epochs: 1.74 of .*training.epochs: Input should be a valid integer"),
    ({"training.batch_size": {"low": 0, "high": 16, "type": "int"}}, r"sweep.space value training.batch_size: 0 of"),
])
def test_search_space_is_validated_at_load_with_probe_values(tmp_path: Path, space: dict, match: str):
    with pytest.raises(ConfigError, match=match):
        load_sweep(write(tmp_path, {"search": "random", "trials": 2, "space": space}))


def test_a_valid_search_space_loads(tmp_path: Path):
    plan = load_sweep(write(tmp_path, {"search": "optuna", "space": {
        "training.epochs": {"low": 1, "high": 3, "type": "int"}, "training.batch_size": [8, 16],
        "training.optimizer.lr": {"low": 1e-4, "high": 1e-2, "log": True}}}))
    assert set(plan.sweep.space) == {"training.epochs", "training.batch_size", "training.optimizer.lr"}
