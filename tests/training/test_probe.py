import numpy as np
import pytest
import torch

from medclf.config import ModelConfig
from medclf.config.training import LossConfig
from medclf.errors import ConfigError, DataError, ModelError
from medclf.models import build_model
from medclf.training.device import Runtime
from medclf.training.loop import predict_proba
from medclf.training.losses import n_outputs
from medclf.training.probe import (
    ABSENT_LOGIT,
    MIN_STD,
    final_linear,
    fit_linear_probe,
    knn_probabilities,
    pooled_features,
    write_probe,
)

CPU = Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=False)
SIZE = 16
FEATURES = 96  # test_resnet's pooled features
LAYERS = [{"type": "conv", "filters": 4}, {"type": "maxpool", "size": 2}, {"type": "conv", "filters": 6},
          {"type": "maxpool", "size": 2}, {"type": "dense", "units": 12}]


def _images(y: np.ndarray, *, seed: int = 0) -> torch.Tensor:
    """16 px grayscale images whose brightness depends on the class (or on the labels), plus noise."""
    rng = np.random.default_rng(seed)
    level = y if y.ndim == 1 else y @ np.array([1, 2, 4])[: y.shape[1]]
    x = rng.integers(0, 90, (len(y), 1, SIZE, SIZE)) + 20 * level[:, None, None, None]
    return torch.from_numpy(np.clip(x, 0, 255).astype(np.uint8))


def _model(n_classes: int, **cfg) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(**{"name": "test_resnet", **cfg}), in_chans=1, n_classes=n_classes,
                       size_hw=(SIZE, SIZE))


def _probe_matches_sklearn(model, y, *, activation, multilabel=False, n_classes=None):
    x = _images(y)
    features = pooled_features(model, x, batch_size=16, runtime=CPU)
    fit = fit_linear_probe(features, y, multilabel=multilabel, class_weight=None, seed=0, cs=5, inner_folds=3,
                           n_classes=n_classes)
    write_probe(model, fit, activation)
    ours = predict_proba(model, x, batch_size=16, runtime=CPU, activation=activation)
    if multilabel:
        theirs = np.stack([p.predict_proba(features)[:, 1] for p in fit.pipelines], axis=1)
    else:
        theirs = fit.pipelines[0].predict_proba(features)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    return fit, ours


def test_three_class_softmax_probe_predicts_what_sklearn_predicts():
    y = np.repeat([0, 1, 2], 12)
    fit, probs = _probe_matches_sklearn(_model(3), y, activation="softmax")
    assert fit.coef.shape == (3, FEATURES) and fit.intercept.shape == (3,)
    assert isinstance(fit.C, float) and fit.C > 0 and fit.inner_folds == 3 and fit.notes == []
    assert (probs.argmax(1) == y).mean() > 0.8  # the classes are separable by brightness


def test_two_output_softmax_gets_half_logits_of_the_binary_fit():
    y = np.repeat([0, 1], 15)
    model = _model(2)
    fit, _ = _probe_matches_sklearn(model, y, activation="softmax")
    assert fit.coef.shape == (1, FEATURES)
    weight = final_linear(model).weight.detach()
    torch.testing.assert_close(weight[0], -weight[1])


def test_one_logit_binary_head_copies_the_fit():
    y = np.repeat([0, 1], 15)
    n_out = n_outputs(LossConfig(name="bce"), n_classes=2)
    assert n_out == 1
    model = _model(n_out)
    fit, probs = _probe_matches_sklearn(model, y, activation="binary")
    assert probs.shape == (30, 2) and final_linear(model).weight.shape == (1, FEATURES)


def test_multilabel_sigmoid_probe_fits_one_model_per_label():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (40, 3))
    y[:4] = [[1, 1, 1], [0, 0, 0], [1, 0, 1], [0, 1, 0]]
    fit, probs = _probe_matches_sklearn(_model(3), y, activation="sigmoid", multilabel=True)
    assert fit.coef.shape == (3, FEATURES) and len(fit.C) == 3 and len(fit.pipelines) == 3
    assert probs.shape == (40, 3)


def test_medclf_head_with_batchnorm_takes_the_probe_in_its_output_layer():
    model = _model(3, head={"pool": "avgmax", "batchnorm": True})
    assert final_linear(model) is model.head.layers[-1]
    with torch.no_grad():  # BatchNorm statistics that matter, so the features are not the pooled map itself
        bn = model.head.layers[0]
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.uniform_(0.5, 2)
    _probe_matches_sklearn(model, np.repeat([0, 1, 2], 12), activation="softmax")


def test_layers_net_probe_writes_its_classifier():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="layers", layers=LAYERS), in_chans=1, n_classes=3, size_hw=(SIZE, SIZE))
    assert final_linear(model) is model.net.classifier
    fit, _ = _probe_matches_sklearn(model, np.repeat([0, 1, 2], 12), activation="softmax")
    assert fit.coef.shape == (3, 12)


def test_hidden_head_layers_are_refused_with_the_fix():
    model = _model(3, head={"hidden": [8]})
    with pytest.raises(ConfigError, match=r"model\.head\.hidden.*hidden: \[\]"):
        final_linear(model)


def test_pooled_features_are_the_final_linear_layers_input():
    model = _model(3).eval()
    x = _images(np.repeat([0, 1, 2], 3))
    features = pooled_features(model, x, batch_size=4, runtime=CPU)
    assert features.shape == (9, model.net.num_features) and features.dtype == np.float32
    with torch.no_grad():
        expected = model.net.forward_head(model.net.forward_features(model.norm(x.float() / 255)), pre_logits=True)
    np.testing.assert_allclose(features, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_a_class_of_one_row_gets_a_plain_fit_and_a_note():
    rng = np.random.default_rng(0)
    y = np.array([0] * 10 + [1] * 10 + [2])
    features = rng.normal(size=(21, 5)) + y[:, None]
    fit = fit_linear_probe(features, y, multilabel=False, class_weight="balanced", seed=0, cs=3)
    assert fit.C == 1.0 and fit.inner_folds == 0 and "single row" in fit.notes[0]
    fewer = fit_linear_probe(features[:20], y[:20], multilabel=False, class_weight=None, seed=0, cs=3,
                             inner_folds=15)
    assert fewer.inner_folds == 10 and "10 inner folds instead of 15" in fewer.notes[0]


def test_scaler_is_folded_with_std_clipped_for_constant_features():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    tiny = 3.0 + 1e-9 * rng.normal(size=40)  # a float-noise feature: scaling it to unit std would amplify noise
    features = np.c_[rng.normal(size=(40, 2)) * 50 + 7 + 60 * y[:, None], tiny, np.full(40, 3.0)]
    fit = fit_linear_probe(features, y, multilabel=False, class_weight=None, seed=0, cs=4, inner_folds=2)
    assert fit.std[2] == MIN_STD and fit.std[3] == 1.0  # StandardScaler leaves a constant feature unscaled
    np.testing.assert_allclose(fit.mean, features.mean(0))
    logits = (features - fit.mean) / fit.std @ fit.coef.T + fit.intercept
    np.testing.assert_allclose(1 / (1 + np.exp(-logits[:, 0])), fit.pipelines[0].predict_proba(features)[:, 1])


def test_absent_classes_get_a_vanishing_probability():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 2], 10)
    fit = fit_linear_probe(rng.normal(size=(20, 4)) + y[:, None], y, multilabel=False, class_weight=None, seed=0,
                           n_classes=3)
    assert fit.coef.shape == (3, 4) and fit.intercept[1] == ABSENT_LOGIT and not fit.coef[1].any()
    with pytest.raises(DataError, match="two classes"):
        fit_linear_probe(rng.normal(size=(6, 4)), np.zeros(6), multilabel=False, class_weight=None, seed=0)


def test_write_probe_refuses_a_shape_or_activation_it_cannot_hold():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 6)
    fit = fit_linear_probe(rng.normal(size=(18, FEATURES)) + y[:, None], y, multilabel=False, class_weight=None,
                           seed=0, cs=3)
    with pytest.raises(ModelError, match="3 output row"):
        write_probe(_model(4), fit, "softmax")
    with pytest.raises(ConfigError, match="normalised_sigmoid"):
        write_probe(_model(3), fit, "normalised_sigmoid")


def test_knn_probabilities_vote_among_cosine_neighbours():
    train = np.array([[1.0, 0.0], [2.0, 0.1], [3.0, -0.1], [0.0, 1.0], [0.1, 2.0]])
    labels = np.array([0, 0, 0, 2, 2])
    query = np.array([[5.0, 0.2], [0.2, 5.0]])  # far in Euclidean terms, close in angle
    probs = knn_probabilities(train, labels, query, k=3, n_classes=3)
    np.testing.assert_allclose(probs, [[1.0, 0.0, 0.0], [1 / 3, 0.0, 2 / 3]])
    multi = knn_probabilities(train, np.eye(3)[labels], query, k=10, n_classes=3)  # k capped at 5 rows
    np.testing.assert_allclose(multi, [[0.6, 0.0, 0.4]] * 2)
