"""The study's linear-probe baseline: when it runs, its metrics.json entry, and the summary's paired test."""

import math

import numpy as np
import pytest

from medclf.config import Config, config_fingerprint
from medclf.data import ImageSet
from medclf.data.splitting import Fold
from medclf.experiments.baseline import baseline_kind, fold_baseline
from medclf.experiments.summary import _baseline_summary, paired_against_baseline
from medclf.models import build_model
from medclf.training.device import resolve_runtime


def _config(tmp_path=None, *, baseline=None, pretrained=None, stages=None) -> Config:
    data = {"source": {"type": "synthetic"}} | ({"cache_dir": str(tmp_path)} if tmp_path else {})
    model = {"name": "test_resnet"} | ({"pretrained": pretrained} if pretrained is not None else {})
    training = {"device": "cpu"} | ({"stages": stages} if stages else {})
    evaluation = {"baseline": baseline} if baseline else {}
    return Config.model_validate({"name": "t", "data": data, "model": model, "training": training,
                                  "evaluation": evaluation})


def _pretrained(config: Config, **evaluation) -> Config:
    """``config`` with model.pretrained true, set past validation (which would look for the weights)."""
    return config.model_copy(update={"model": config.model.model_copy(update={"pretrained": True}),
                                     "evaluation": config.evaluation.model_copy(update=evaluation)})


def test_auto_is_the_probe_only_for_a_pretrained_backbone_that_is_not_already_probed():
    assert baseline_kind(_config()) is None  # the tiny studies of the suite: random features, no baseline
    assert baseline_kind(_config(baseline="linear_probe")) == "linear_probe"
    assert baseline_kind(_pretrained(_config())) == "linear_probe"
    assert baseline_kind(_pretrained(_config(), baseline="none")) is None
    assert baseline_kind(_pretrained(_config(stages=[{"kind": "probe", "epochs": 1}]))) is None


def test_the_default_keeps_older_runs_fingerprints_and_a_written_value_changes_it():
    assert config_fingerprint(_config()) == config_fingerprint(_config(baseline="auto"))
    assert config_fingerprint(_config(baseline="none")) != config_fingerprint(_config())


def _data(n: int = 60) -> ImageSet:
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2
    images = rng.integers(0, 60, (n, 1, 8, 8)).astype(np.uint8) + (labels * 150)[:, None, None, None].astype(np.uint8)
    return ImageSet(images=images, labels=labels.astype(np.int64), ids=np.array([f"{i}.png" for i in range(n)]),
                    splits=np.array(["train"] * n), class_names=["a", "b"], fingerprint="baseline-test")


def _fold(index: int) -> Fold:
    return Fold(index, np.arange(0, 30), np.arange(30, 40), np.arange(40, 50), np.arange(50, 60))


def test_the_probe_is_scored_on_the_folds_parts_with_the_models_metrics(tmp_path):
    config, data = _config(tmp_path, baseline="linear_probe"), _data()
    runtime = resolve_runtime(config.training, build_model(config.model, in_chans=1, n_classes=2, size_hw=(8, 8)))
    first = fold_baseline(config, data, _fold(0), runtime)
    assert first["kind"] == "linear_probe" and first["fit_s"] >= 0 and first["features_s"] >= 0
    assert set(first["metrics"]) == {"val", "holdout", "test"}
    assert {"accuracy", "auc_macro", "f1_macro"} <= set(first["metrics"]["test"])
    assert first["metrics"]["test"]["auc_macro"] > 0.9  # bright class b: separable on any features
    assert len(list(tmp_path.rglob("*"))) > 0  # the features went to the study's cache ...
    again = fold_baseline(config, data, _fold(0), runtime)  # ... and the same fold reads them back
    assert again["metrics"] == first["metrics"] and again["C"] == first["C"]
    assert fold_baseline(_config(tmp_path), data, _fold(0), runtime) is None  # auto, not pretrained


def _result(fold: int, model_auc: float, probe_auc: float, *, split: str = "test") -> dict:
    return {"fold": fold, "n_images": {"train": 80, "val": 20, "holdout": 0, split: 20},
            "metrics": {split: {"accuracy": 0.8, "auc_macro": model_auc}},
            "baseline": {"kind": "linear_probe", "C": 1.0, "fit_s": 0.1, "features_s": 0.2,
                         "metrics": {split: {"accuracy": 0.7, "auc_macro": probe_auc}}}}


def test_the_summary_pairs_the_model_with_its_probe_fold_by_fold():
    losing = [_result(k, m, b) for k, (m, b) in enumerate([(0.70, 0.79), (0.72, 0.80), (0.71, 0.78), (0.69, 0.80),
                                                          (0.73, 0.79)])]
    summary = _baseline_summary(losing, ["test"])
    assert summary["kind"] == "linear_probe"
    assert summary["metrics"]["test"]["auc_macro"]["mean"] == pytest.approx(0.792)
    paired = summary["paired"]["test"]
    assert paired["metric"] == "auc_macro"
    assert paired["model"] == pytest.approx(0.71) and paired["baseline"] == pytest.approx(0.792)
    assert paired["diff"] == pytest.approx(-0.082)
    assert paired["p_value"] < 0.05 and paired["wilcoxon_p"] is not None
    assert paired["beats"] is False and paired["verdict"].startswith("worse than a linear probe")
    winning = [_result(k, b + 0.05 + 0.01 * k, b) for k, b in enumerate([0.7, 0.72, 0.71, 0.69, 0.73])]
    assert paired_against_baseline(winning, "test")["beats"] is True


def test_one_fold_has_a_difference_but_no_test_and_no_baseline_no_entry():
    paired = paired_against_baseline([_result(0, 0.9, 0.8)], "test")
    assert paired["diff"] == pytest.approx(0.1) and paired["p_value"] is None and paired["beats"] is False
    assert "no paired test" in paired["verdict"]
    assert _baseline_summary([{k: v for k, v in _result(0, 0.9, 0.8).items() if k != "baseline"}], ["test"]) is None
    undefined = paired_against_baseline([_result(0, math.nan, 0.8), _result(1, math.nan, 0.7)], "test")
    assert undefined["diff"] is None and undefined["model"] is None and undefined["beats"] is False


def test_a_study_with_the_probe_forced_puts_it_beside_the_model(tiny_splits, tmp_path):
    import csv

    from medclf.config import parse_config
    from medclf.experiments.study import run_study
    from medclf.runfolder import read_json
    from tiny_data import tiny_study

    config = parse_config(tiny_study(tiny_splits, tmp_path / "cache", training={"epochs": 1},
                                     evaluation={"baseline": "linear_probe"}))
    summary = run_study(config, tmp_path / "run")
    fold = read_json(tmp_path / "run" / "fold-0" / "metrics.json")
    assert set(fold["baseline"]["metrics"]) == set(fold["metrics"]) == {"val", "holdout", "test"}
    assert summary["baseline"]["kind"] == "linear_probe" and list(summary["baseline"]["paired"]) == [
        "test", "holdout", "val"]
    assert summary["baseline"]["paired"]["test"]["p_value"] is not None  # two folds: a paired test
    with open(tmp_path / "run" / "folds.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    test_row = next(r for r in rows if r["fold"] == "0" and r["split"] == "test")
    assert float(test_row["baseline_accuracy"]) == pytest.approx(fold["baseline"]["metrics"]["test"]["accuracy"])
    assert all(r["baseline_auc_macro"] == "" for r in rows if r["fold"] == "ensemble")


def test_probabilities_cover_every_class_and_every_label():
    from medclf.experiments.baseline import probe_probabilities
    from medclf.training.probe import fit_linear_probe

    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 3))
    single = fit_linear_probe(x, (x[:, 0] > 0).astype(np.int64) * 2, multilabel=False, class_weight=None, seed=0,
                              cs=2, inner_folds=2, n_classes=3)  # class 1 absent from the training rows
    probs = probe_probabilities(single, x, n_classes=3, multilabel=False)
    assert probs.shape == (40, 3) and np.allclose(probs.sum(1), 1) and not probs[:, 1].any()
    multi = fit_linear_probe(x, np.column_stack([x[:, 0] > 0, np.zeros(40)]).astype(np.int64), multilabel=True,
                             class_weight=None, seed=0, cs=2, inner_folds=2)  # label 1 never occurs
    probs = probe_probabilities(multi, x, n_classes=2, multilabel=True)
    assert probs.shape == (40, 2) and probs[:, 1].max() < 1e-3 and 0 < probs[:, 0].mean() < 1
