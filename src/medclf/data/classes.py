"""The class order of a dataset (its label index order) and the positive class of a two-class task.

Each layout finds the classes in its own default order (sorted folder or label names; an npz's label order).
``data.classes`` fixes another order and ``data.positive_class`` moves a two-class task's positive class
second. Every later stage reads label index 1 as the positive class (binary metrics and AUC, the ROC and PR
curves, focal ``alpha``, BCE ``pos_weight``, decision thresholds), so ordering the classes here, once for
every layout, is the only place that choice is made.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence

from medclf.config import DataConfig
from medclf.data.layouts.base import SourceListing
from medclf.errors import ConfigError

__all__ = ["apply_class_order", "class_order", "positive_class", "reorder_labels"]


def positive_class(class_names: Sequence[str], *, multilabel: bool) -> str | None:
    """The positive class of a two-class single-label task (always the second class), else None."""
    return str(class_names[1]) if len(class_names) == 2 and not multilabel else None


def class_order(
    found: Sequence[str], *, classes: Sequence[str] | None, positive: str | None, multilabel: bool
) -> list[str]:
    """The class order a data config asks for, given the classes the data has.

    Args:
        found: the data's classes in the layout's default order.
        classes: ``data.classes``: the order wanted; it must name exactly the classes in ``found``.
        positive: ``data.positive_class``: moved second, for a two-class single-label task only.
        multilabel: whether the classes are the labels of a multi-label task.

    Returns:
        The classes in label index order.

    Raises:
        ConfigError: ``classes`` misses or adds a class; ``positive`` is not a class, or the task is not
            two-class single-label.
    """
    order = list(found) if classes is None else _checked_classes(classes, found)
    if positive is None:
        return order
    if multilabel or len(order) != 2:
        if multilabel:
            task = f"this task is multi-label with {len(order)} labels ({order})"
        else:
            task = f"this task has {len(order)} classes ({order})"
        raise ConfigError(
            f"data.positive_class ({positive!r}) applies to two-class single-label tasks only; {task}. Remove "
            "data.positive_class (one-vs-rest metrics treat each class in turn as positive)."
        )
    if positive not in order:
        raise ConfigError(
            f"data.positive_class {positive!r} is not a class of the data; the data's classes are {order}."
            f"{_typo_hint([positive], order)} Name one of them."
        )
    return [name for name in order if name != positive] + [positive]


def _checked_classes(classes: Sequence[str], found: Sequence[str]) -> list[str]:
    """``classes`` when it names exactly the classes in ``found``, else a ConfigError naming the odd ones."""
    unknown = [c for c in classes if c not in found]
    missing = [c for c in found if c not in classes]
    if not unknown and not missing:
        return list(classes)
    parts = []
    if unknown:
        parts.append(f"names {unknown}, which the data does not have")
    if missing:
        parts.append(f"leaves out {missing}")
    raise ConfigError(
        f"data.classes {list(classes)} {' and '.join(parts)}; the data's classes are {list(found)}."
        f"{_typo_hint(unknown, missing or found)} data.classes must list every class of the data once, in the "
        "label order wanted (or leave it out for the default order)."
    )


def _typo_hint(names: Sequence[str], candidates: Sequence[str]) -> str:
    """" Is 'abnormall' a typo of 'abnormal'?" for the first name spelt almost like a candidate."""
    for name in names:
        close = difflib.get_close_matches(name, [str(c) for c in candidates], n=1, cutoff=0.6)
        if close:
            return f" Is {name!r} a typo of {close[0]!r}?"
    return ""


def reorder_labels(
    labels: Sequence[int] | Sequence[Sequence[int]], old: Sequence[str], new: Sequence[str], *, multilabel: bool
) -> list:
    """Labels indexing ``old`` rewritten to index ``new`` (the same names, reordered).

    Single-label: each class index is mapped; multi-label: each multi-hot row's columns are permuted.
    """
    if multilabel:
        columns = [list(old).index(name) for name in new]
        return [[row[k] for k in columns] for row in labels]
    new_index = [list(new).index(name) for name in old]  # old label index -> new label index
    return [new_index[int(label)] for label in labels]


def apply_class_order(listing: SourceListing, cfg: DataConfig) -> SourceListing:
    """The listing with its classes in the order ``cfg.classes`` / ``cfg.positive_class`` ask for.

    Raises:
        ConfigError: see :func:`class_order`.
    """
    old = list(listing.class_names)
    new = class_order(old, classes=cfg.classes, positive=cfg.positive_class, multilabel=listing.multilabel)
    if new == old:
        return listing
    labels = reorder_labels(listing.labels, old, new, multilabel=listing.multilabel)
    return dataclasses.replace(listing, labels=labels, class_names=new)
