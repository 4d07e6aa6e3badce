"""The gallery files of a run folder (medclf.runfolder): one choice rule for the run and the report."""

from __future__ import annotations

import numpy as np
import pytest

from medclf.errors import RunFolderError
from medclf.runfolder import GALLERY, Predictions, choose_gallery, read_gallery, write_gallery

CLASSES = ["a", "b"]


def _preds(ids, labels, p_b):
    probs = np.array([[1 - p, p] for p in p_b])
    return Predictions(list(ids), list(labels), probs, [CLASSES[int(p >= 0.5)] for p in p_b])


def test_the_most_confidently_wrong_come_first_and_the_ensemble_wins():
    ensemble = _preds("wxyz", "aaab", [0.9, 0.6, 0.2, 0.95])  # w, x wrong; z right
    fold = _preds("wxyz", "bbbb", [0.1, 0.1, 0.1, 0.1])
    choice = choose_gallery(CLASSES, multilabel=False, ensemble=ensemble, folds=[(0, {"test": fold})], n=18)
    assert choice.label == "test images, fold ensemble"
    assert [(choice.predictions.ids[i], s) for i, s in choice.worst] == [("w", 0.9), ("x", 0.6)]
    # no ensemble and no test split: every fold's holdout pooled, in fold order
    folds = [(0, {"holdout": _preds("p", "a", [0.7])}), (1, {"holdout": _preds("q", "a", [0.8])})]
    choice = choose_gallery(CLASSES, multilabel=False, ensemble=None, folds=folds, n=1)
    assert choice.label == "holdout images (no test split), all folds pooled"
    assert [choice.predictions.ids[i] for i, _ in choice.worst] == ["q"]
    assert choose_gallery(CLASSES, multilabel=False, ensemble=None, folds=[(0, {})]) is None


def test_gallery_round_trips_and_is_byte_identical(tmp_path):
    images = np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4)
    (tmp_path / "one").mkdir()
    write_gallery(tmp_path / "one", ["x/1.png", "y/2.png"], images)
    (tmp_path / "two").mkdir()
    write_gallery(tmp_path / "two", ["x/1.png", "y/2.png"], images)
    assert (tmp_path / "one" / GALLERY).read_bytes() == (tmp_path / "two" / GALLERY).read_bytes()
    kept = read_gallery(tmp_path / "one")
    assert list(kept) == ["x/1.png", "y/2.png"] and np.array_equal(kept["y/2.png"], images[1])
    (tmp_path / "one" / GALLERY).write_bytes(b"garbage")
    with pytest.raises(RunFolderError, match="gallery.npz cannot be read"):
        read_gallery(tmp_path / "one")
    with pytest.raises(RunFolderError, match="gallery.npz is missing"):
        read_gallery(tmp_path)
