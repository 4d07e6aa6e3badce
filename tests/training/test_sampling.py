import numpy as np
import torch

from medclf.training.sampling import epoch_plan, plan_size

LABELS = np.array([0] * 50 + [1] * 12 + [2] * 5)


def _counts(index):
    return np.bincount(LABELS[index.numpy()], minlength=3)


def test_none_visits_every_image_once():
    order, is_copy = epoch_plan(LABELS, "none", generator=torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == list(range(len(LABELS))) and not is_copy.any()


def test_duplicate_balances_the_classes_with_flagged_copies():
    order, is_copy = epoch_plan(LABELS, "duplicate", generator=torch.Generator().manual_seed(0))
    assert _counts(order).tolist() == [50, 50, 50]
    assert len(order) == plan_size(LABELS, "duplicate") == 150
    assert int(is_copy.sum()) == 150 - len(LABELS)
    originals = order[~is_copy]
    assert sorted(originals.tolist()) == list(range(len(LABELS)))  # every image once, plus copies
    # copies are drawn from the class's own images only
    assert set(LABELS[order[is_copy].numpy()]) == {1, 2}


def test_weighted_sampler_draws_classes_about_equally():
    order, _ = epoch_plan(np.repeat(LABELS, 20), "weighted_sampler", generator=torch.Generator().manual_seed(0))
    shares = np.bincount(np.repeat(LABELS, 20)[order.numpy()], minlength=3) / len(order)
    assert np.allclose(shares, 1 / 3, atol=0.04)


def test_plans_are_seeded():
    a = epoch_plan(LABELS, "augment", generator=torch.Generator().manual_seed(3))[0]
    b = epoch_plan(LABELS, "augment", generator=torch.Generator().manual_seed(3))[0]
    assert torch.equal(a, b)


def test_the_training_plan_of_multilabel_rows_is_a_plain_shuffle():
    from medclf.training.sampling import training_plan

    rows = np.eye(3)[LABELS % 3]  # multi-hot rows: never resampled, whatever their labels
    order, is_copy = training_plan(rows, "none", multilabel=True, generator=torch.Generator().manual_seed(4))
    assert torch.equal(order, torch.randperm(len(rows), generator=torch.Generator().manual_seed(4)))
    assert not is_copy.any()
    single = training_plan(LABELS, "duplicate", multilabel=False, generator=torch.Generator().manual_seed(4))
    expected = epoch_plan(LABELS, "duplicate", generator=torch.Generator().manual_seed(4))
    assert all(torch.equal(a, b) for a, b in zip(single, expected))
