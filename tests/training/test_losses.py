import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medclf.config import LossConfig
from medclf.errors import ConfigError
from medclf.training.losses import build_loss, n_outputs, probabilities

NAMES = ["a", "b", "c"]
LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.3, 0.2], [-1.0, 2.0, 0.5], [0.0, 0.0, 3.0]])
TARGET = torch.tensor([0, 2, 1, 2])
TRAIN = np.array([0] * 60 + [1] * 30 + [2] * 10)


def _loss(**kw):
    return build_loss(LossConfig(**kw), class_names=NAMES, train_targets=TRAIN)


def test_plain_cross_entropy_matches_torch():
    assert _loss(label_smoothing=0.0)(LOGITS, TARGET) == pytest.approx(float(F.cross_entropy(LOGITS, TARGET)))


def test_balanced_class_weights_come_from_the_training_fold_and_change_the_loss():
    loss = _loss(label_smoothing=0.0, class_weights="balanced")
    expected_w = torch.tensor([100 / (3 * 60), 100 / (3 * 30), 100 / (3 * 10)])
    assert torch.allclose(loss.weight, expected_w)
    assert float(loss(LOGITS, TARGET)) == pytest.approx(float(F.cross_entropy(LOGITS, TARGET, weight=expected_w)))
    assert float(loss(LOGITS, TARGET)) != pytest.approx(float(_loss(label_smoothing=0.0)(LOGITS, TARGET)))


def test_explicit_class_weights_by_list_or_name():
    by_list = _loss(label_smoothing=0.0, class_weights=[1.0, 2.0, 5.0])
    by_name = _loss(label_smoothing=0.0, class_weights={"b": 2.0, "c": 5.0})
    assert torch.equal(by_list.weight, by_name.weight)
    with pytest.raises(ConfigError, match=r"class_weights names \['z'\], which are not classes"):
        _loss(class_weights={"z": 2.0})
    with pytest.raises(ConfigError, match="has 2 values but there are 3 classes"):
        _loss(class_weights=[1.0, 2.0])


def test_label_smoothing_reaches_cross_entropy():
    smoothed = float(_loss(label_smoothing=0.2)(LOGITS, TARGET))
    assert smoothed == pytest.approx(float(F.cross_entropy(LOGITS, TARGET, label_smoothing=0.2)))
    assert smoothed != pytest.approx(float(_loss(label_smoothing=0.0)(LOGITS, TARGET)))


def test_focal_with_gamma_zero_is_cross_entropy_and_gamma_down_weights_easy_images():
    ce = float(F.cross_entropy(LOGITS, TARGET))
    assert float(_loss(name="focal", gamma=0.0, label_smoothing=0.0)(LOGITS, TARGET)) == pytest.approx(ce)
    # smoothing softens focal's targets exactly as it does cross-entropy's
    smoothed = float(F.cross_entropy(LOGITS, TARGET, label_smoothing=0.1))
    assert float(_loss(name="focal", gamma=0.0, label_smoothing=0.1)(LOGITS, TARGET)) == pytest.approx(smoothed)
    easy = torch.tensor([[6.0, 0.0, 0.0]]), torch.tensor([0])
    hard = torch.tensor([[0.0, 0.5, 0.0]]), torch.tensor([0])
    ratio = lambda loss, xy: float(loss(*xy)) / float(F.cross_entropy(*xy))  # noqa: E731
    focal = _loss(name="focal", gamma=2.0, label_smoothing=0.0)
    assert ratio(focal, easy) < 0.01 < ratio(focal, hard)


def test_focal_alpha_weights_classes():
    alpha = [0.25, 0.5, 1.0]
    one = float(_loss(name="focal", gamma=2.0, alpha=alpha, label_smoothing=0.0)(LOGITS[:1], TARGET[:1]))
    plain = float(_loss(name="focal", gamma=2.0, label_smoothing=0.0)(LOGITS[:1], TARGET[:1]))
    assert one == pytest.approx(0.25 * plain)


def test_a_single_focal_alpha_weights_the_positive_class_of_a_binary_task():
    train = np.array([0] * 75 + [1] * 25)
    logits, y = torch.tensor([[1.0, -0.5], [0.2, 0.4]]), torch.tensor([0, 1])

    def focal(**kw):
        cfg = LossConfig(name="focal", gamma=2.0, label_smoothing=0.0, **kw)
        return build_loss(cfg, class_names=["neg", "pos"], train_targets=train)

    loss = focal(alpha=0.25)
    assert torch.allclose(loss.alpha, torch.tensor([0.75, 0.25]))
    per_image = [float(focal()(logits[i:i + 1], y[i:i + 1])) for i in range(2)]
    assert float(loss(logits, y)) == pytest.approx((0.75 * per_image[0] + 0.25 * per_image[1]) / 2)
    with pytest.raises(ConfigError, match=r"a single number \(0.25\) weights the positive class of a two-class"):
        _loss(name="focal", alpha=0.25)  # three classes: which one is positive?


def test_multilabel_focal_takes_alpha_class_weights_and_smoothing():
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    logits = torch.tensor([[0.5, -1.0, 2.0], [0.1, 0.3, -0.2]])

    def focal(**kw):
        return build_loss(LossConfig(name="focal", **kw), class_names=NAMES, train_targets=y.numpy(), multilabel=True)

    plain = focal(gamma=0.0, label_smoothing=0.0)
    assert float(plain(logits, y)) == pytest.approx(float(F.binary_cross_entropy_with_logits(logits, y)))
    p = torch.sigmoid(logits)
    p_t = p * y + (1 - p) * (1 - y)
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    expected = ((1 - p_t) ** 2 * bce * (0.25 * y + 0.75 * (1 - y)) * torch.tensor([1.0, 2.0, 3.0])).mean()
    weighted = focal(gamma=2.0, alpha=0.25, class_weights=[1.0, 2.0, 3.0], label_smoothing=0.0)
    assert float(weighted(logits, y)) == pytest.approx(float(expected))
    smoothed = focal(gamma=0.0, label_smoothing=0.2)
    assert float(smoothed(logits, y)) == pytest.approx(float(F.binary_cross_entropy_with_logits(logits, y * 0.8 + 0.1)))


def _checked_loss(**loss) -> LossConfig:
    """``training.loss`` through the config boundary, where the keys a loss reads are checked."""
    from medclf.experiments.validation import parse_checked_config

    raw = {"data": {"source": {"type": "synthetic"}}, "training": {"loss": loss}}  # no path: nothing to exist
    return parse_checked_config(raw).training.loss


def test_a_key_the_loss_does_not_read_is_refused():
    with pytest.raises(ValueError, match=r"loss 'cross_entropy' does not read gamma \(gamma is read by focal\)"):
        _checked_loss(gamma=1.0)
    with pytest.raises(ValueError, match=r"loss 'bce' does not read alpha"):
        _checked_loss(name="bce", alpha=0.25)
    with pytest.raises(ValueError, match=r"loss 'poisson' does not read class_weights, label_smoothing"):
        _checked_loss(name="poisson", class_weights="balanced", label_smoothing=0.2)
    # 0 switches smoothing off, and a default (as a resolved config.yaml writes every key) is accepted
    assert _checked_loss(name="poisson", label_smoothing=0.0, gamma=2.0, alpha=None).name == "poisson"


def test_bce_on_two_classes_uses_one_logit_and_pos_weight():
    train = np.array([0] * 75 + [1] * 25)
    cfg = LossConfig(name="bce", label_smoothing=0.0, pos_weight="balanced")
    loss = build_loss(cfg, class_names=["neg", "pos"], train_targets=train)
    assert loss.n_outputs == 1 and n_outputs(cfg, n_classes=2) == 1
    assert torch.allclose(loss.pos_weight, torch.tensor([3.0]))
    logits, y = torch.tensor([[0.3], [-1.0]]), torch.tensor([1, 0])
    expected = F.binary_cross_entropy_with_logits(logits, y.float()[:, None], pos_weight=torch.tensor([3.0]))
    assert float(loss(logits, y)) == pytest.approx(float(expected))
    probs = probabilities(logits, loss.activation)
    assert probs.shape == (2, 2) and torch.allclose(probs[:, 1], torch.sigmoid(logits[:, 0]))


def test_bce_explicit_pos_weight_and_class_weights():
    train = np.array([0] * 75 + [1] * 25)
    logits, y = torch.tensor([[0.3], [-1.0], [2.0]]), torch.tensor([1, 0, 0])
    loss = build_loss(LossConfig(name="bce", label_smoothing=0.0, pos_weight=2.0, class_weights=[3.0, 1.0]),
                      class_names=["neg", "pos"], train_targets=train)
    t = y.float()[:, None]
    expected = F.binary_cross_entropy_with_logits(logits, t, weight=torch.tensor([[1.0], [3.0], [3.0]]),
                                                  pos_weight=torch.tensor([2.0]))
    assert float(loss(logits, y)) == pytest.approx(float(expected))
    y_ml = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    ml = build_loss(LossConfig(name="bce", label_smoothing=0.0, class_weights=[1.0, 2.0, 3.0]), class_names=NAMES,
                    train_targets=y_ml.numpy(), multilabel=True)
    logits_ml = torch.tensor([[0.5, -1.0, 2.0], [0.1, 0.3, -0.2]])
    expected_ml = F.binary_cross_entropy_with_logits(logits_ml, y_ml, weight=torch.tensor([1.0, 2.0, 3.0]))
    assert float(ml(logits_ml, y_ml)) == pytest.approx(float(expected_ml))


def test_single_label_poisson_scores_one_hot_counts_with_softmax_probabilities():
    loss = build_loss(LossConfig(name="poisson"), class_names=NAMES, train_targets=TRAIN)
    expected = F.poisson_nll_loss(LOGITS, F.one_hot(TARGET, 3).float(), log_input=True)
    assert float(loss(LOGITS, TARGET)) == pytest.approx(float(expected))
    assert loss.activation == "softmax"


def test_multilabel_bce_and_poisson_take_multi_hot_targets():
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    logits = torch.randn(2, 3)
    bce = build_loss(LossConfig(name="bce", label_smoothing=0.0), class_names=NAMES, train_targets=y.numpy(),
                     multilabel=True)
    assert float(bce(logits, y)) == pytest.approx(float(F.binary_cross_entropy_with_logits(logits, y)))
    assert bce.activation == "sigmoid"
    poisson = build_loss(LossConfig(name="poisson"), class_names=NAMES, train_targets=y.numpy(), multilabel=True)
    assert float(poisson(logits, y)) == pytest.approx(float(F.poisson_nll_loss(logits, y, log_input=True)))
    p = probabilities(logits, poisson.activation)
    assert torch.allclose(p, 1 - torch.exp(-torch.exp(logits)))
    # cross_entropy on multi-label data is the per-label sigmoid BCE
    ce = build_loss(LossConfig(label_smoothing=0.0), class_names=NAMES, train_targets=y.numpy(), multilabel=True)
    assert float(ce(logits, y)) == pytest.approx(float(bce(logits, y)))


def test_balanced_needs_every_class_in_the_training_fold():
    with pytest.raises(ConfigError, match=r"balanced weights need every class.*\['c'\]"):
        build_loss(LossConfig(class_weights="balanced"), class_names=NAMES, train_targets=np.array([0, 1, 1]))


def test_a_two_class_bce_pos_weight_names_the_positive_class():
    train = np.array([0] * 75 + [1] * 25)
    names = ["normal", "abnormal"]  # data.positive_class: abnormal puts it second, the one logit's class
    loss = build_loss(LossConfig(name="bce", label_smoothing=0.0, pos_weight={"abnormal": 4.0}), class_names=names,
                      train_targets=train)
    assert torch.allclose(loss.pos_weight, torch.tensor([4.0]))
    with pytest.raises(ConfigError, match=r"one output, the positive class \('abnormal'.*against the 'normal' ones"):
        build_loss(LossConfig(name="bce", pos_weight={"normal": 4.0}), class_names=names, train_targets=train)
