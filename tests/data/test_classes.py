from pathlib import Path

import numpy as np
import pytest

from medclf.data import load_dataset
from medclf.data.classes import apply_class_order, class_order, positive_class, reorder_labels
from medclf.data.layouts import SourceListing
from medclf.errors import ConfigError


# ------------------------------------------------------------------------------------------------ the order
def test_the_default_order_is_the_layouts_and_its_second_class_is_positive() -> None:
    assert class_order(["abnormal", "normal"], classes=None, positive=None, multilabel=False) == ["abnormal", "normal"]
    assert positive_class(["abnormal", "normal"], multilabel=False) == "normal"
    assert positive_class(["a", "b", "c"], multilabel=False) is None
    assert positive_class(["a", "b"], multilabel=True) is None


def test_classes_fixes_the_order_and_positive_class_moves_it_second() -> None:
    found = ["a", "b", "c"]
    assert class_order(found, classes=["c", "a", "b"], positive=None, multilabel=False) == ["c", "a", "b"]
    assert class_order(["abnormal", "normal"], classes=None, positive="abnormal", multilabel=False) == [
        "normal", "abnormal"]
    assert class_order(["abnormal", "normal"], classes=None, positive="normal", multilabel=False) == [
        "abnormal", "normal"]
    assert class_order(["abnormal", "normal"], classes=["normal", "abnormal"], positive="abnormal",
                       multilabel=False) == ["normal", "abnormal"]


@pytest.mark.parametrize(("classes", "message"), [
    (["abnormall", "normal"], r"data\.classes \['abnormall', 'normal'\] names \['abnormall'\], which the data does "
                              r"not have and leaves out \['abnormal'\]; the data's classes are \['abnormal', "
                              r"'normal'\]\. Is 'abnormall' a typo of 'abnormal'\?"),
    (["normal", "abnormal", "other"], r"names \['other'\], which the data does not have; the data's classes"),
    (["normal", "other"], r"names \['other'\].* and leaves out \['abnormal'\]"),
])
def test_classes_must_name_exactly_the_datas_classes(classes: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        class_order(["abnormal", "normal"], classes=classes, positive=None, multilabel=False)


def test_a_class_left_out_of_classes_is_named() -> None:
    with pytest.raises(ConfigError, match=r"data\.classes \['a', 'b'\] leaves out \['c'\]; the data's classes are "
                                          r"\['a', 'b', 'c'\]\..*list every class of the data once"):
        class_order(["a", "b", "c"], classes=["a", "b"], positive=None, multilabel=False)


def test_positive_class_errors_name_the_key_the_value_and_the_task() -> None:
    with pytest.raises(ConfigError, match=r"data\.positive_class 'abnormall' is not a class of the data; the data's "
                                          r"classes are \['abnormal', 'normal'\]\. Is 'abnormall' a typo"):
        class_order(["abnormal", "normal"], classes=None, positive="abnormall", multilabel=False)
    with pytest.raises(ConfigError, match=r"applies to two-class single-label tasks only; this task has 3 classes "
                                          r"\(\['a', 'b', 'c'\]\)"):
        class_order(["a", "b", "c"], classes=None, positive="a", multilabel=False)
    with pytest.raises(ConfigError, match=r"two-class single-label tasks only; this task is multi-label with 2 labels"):
        class_order(["a", "b"], classes=None, positive="b", multilabel=True)


# ------------------------------------------------------------------------------------------- the labels
def test_reorder_labels_maps_indices_and_permutes_multi_hot_columns() -> None:
    assert reorder_labels([0, 1, 2, 1], ["a", "b", "c"], ["c", "a", "b"], multilabel=False) == [1, 2, 0, 2]
    rows = [[1, 0, 0], [0, 1, 1]]
    assert reorder_labels(rows, ["a", "b", "c"], ["c", "a", "b"], multilabel=True) == [[0, 1, 0], [1, 0, 1]]


def test_apply_class_order_keeps_every_images_class_name(make_config) -> None:
    listing = SourceListing(labels=[0, 1, 1, 0], ids=["w", "x", "y", "z"], splits=["train"] * 4,
                            class_names=["abnormal", "normal"])
    cfg = make_config({"type": "folder", "path": "unused"}, positive_class="abnormal")
    reordered = apply_class_order(listing, cfg)
    assert reordered.class_names == ["normal", "abnormal"] and reordered.labels == [1, 0, 0, 1]
    assert reordered.ids == listing.ids and listing.labels == [0, 1, 1, 0]  # the input is left alone
    assert apply_class_order(listing, make_config({"type": "folder", "path": "unused"})) is listing


# ------------------------------------------------------------------------------------ through load_dataset
@pytest.fixture
def binary_tree(tmp_path: Path, img) -> Path:
    root = tmp_path / "binary"
    for k, (name, n) in enumerate((("abnormal", 2), ("normal", 3))):
        for i in range(n):
            img.write(root / name / f"{i}.png", seed=10 * k + i)
    return root


def test_a_reordered_dataset_has_permuted_labels_and_another_fingerprint(binary_tree: Path, make_config) -> None:
    source = {"type": "folder", "path": str(binary_tree)}
    default = load_dataset(make_config(source))
    flipped = load_dataset(make_config(source, positive_class="abnormal"))
    listed = load_dataset(make_config(source, classes=["normal", "abnormal"]))
    assert default.class_names == ["abnormal", "normal"]
    assert flipped.class_names == listed.class_names == ["normal", "abnormal"]
    np.testing.assert_array_equal(flipped.ids, default.ids)
    np.testing.assert_array_equal(flipped.images, default.images)  # the same decoded (cached) pixels
    np.testing.assert_array_equal(flipped.labels, 1 - default.labels)
    names = lambda data: [data.class_names[k] for k in data.labels]  # noqa: E731
    assert names(flipped) == names(default) == [p.split("/")[0] for p in default.ids]
    assert flipped.counts()["train"] == {"normal": 3, "abnormal": 2}
    # a reordered run is a different dataset: a resumed run never mixes folds trained on the other order
    assert flipped.fingerprint != default.fingerprint and flipped.fingerprint == listed.fingerprint


def test_a_multilabel_manifest_follows_classes(tmp_path: Path, make_config, img) -> None:
    for name in ("a.png", "b.png", "c.png"):
        img.write(tmp_path / name, seed=len(name) + ord(name[0]))
    (tmp_path / "labels.csv").write_text("path,label\na.png,x|y\nb.png,y\nc.png,z|x\n")
    source = {"type": "csv", "path": str(tmp_path / "labels.csv"), "multilabel": True}
    default = load_dataset(make_config(source))
    ordered = load_dataset(make_config(source, classes=["z", "y", "x"]))
    assert default.class_names == ["x", "y", "z"] and ordered.class_names == ["z", "y", "x"]
    np.testing.assert_array_equal(ordered.labels, default.labels[:, ::-1])
    with pytest.raises(ConfigError, match=r"multi-label with 3 labels"):
        load_dataset(make_config(source, positive_class="x"))
