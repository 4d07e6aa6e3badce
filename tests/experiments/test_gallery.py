import numpy as np

from medclf.experiments.gallery import _predicting_folds
from medclf.runfolder import Predictions, choose_gallery

CLASSES = ["a", "b"]


def _preds(ids: list[str], wrong: bool = True) -> Predictions:
    probs = np.tile([0.1, 0.9], (len(ids), 1))
    return Predictions(ids=ids, labels=["a"] * len(ids), probs=probs, predicted=["b" if wrong else "a"] * len(ids))


def test_ensemble_test_images_are_explained_by_every_fold():
    ensemble = _preds(["t1", "t2"])
    folds = [(0, {"test": _preds(["t1", "t2"])}), (1, {"test": _preds(["t1", "t2"])})]
    choice = choose_gallery(CLASSES, multilabel=False, ensemble=ensemble, folds=folds)
    assert _predicting_folds(choice, ensemble, folds) == [[0, 1], [0, 1]]


def test_a_fold_test_split_is_explained_by_that_fold():
    folds = [(2, {"val": _preds(["v"])}), (3, {"test": _preds(["t1", "t2"])})]
    choice = choose_gallery(CLASSES, multilabel=False, ensemble=None, folds=folds)
    assert _predicting_folds(choice, None, folds) == [[3], [3]]


def test_pooled_validation_images_are_explained_by_the_fold_that_held_them_out():
    folds = [(0, {"val": _preds(["v1", "v2"])}), (1, {"val": _preds(["v3"])})]
    choice = choose_gallery(CLASSES, multilabel=False, ensemble=None, folds=folds)
    owners = _predicting_folds(choice, None, folds)
    assert [owners[i] for i, _ in choice.worst] == [[0], [0], [1]]
