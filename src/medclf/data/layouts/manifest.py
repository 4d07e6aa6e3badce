"""The ``csv`` layout, a CSV manifest: one row per image, with optional patient, study, split and fold columns,
and either one label per image or several (``a|b`` in one column, or one 0/1 column per label).
"""

from __future__ import annotations

import difflib
import warnings
from collections import Counter
from pathlib import Path

from medclf.config import CsvSource
from medclf.data.csv_rows import csv_image_path, read_csv_rows
from medclf.data.dataset import Preprocessing
from medclf.data.layouts.base import (
    SPLIT_ALIASES,
    SourceListing,
    relative_id,
    require_classes,
    require_file,
    require_labels_in_train,
)
from medclf.errors import DataError

__all__ = ["csv_layout"]

Rows = list[tuple[int, dict[str, str]]]


def csv_layout(source: CsvSource, prep: Preprocessing) -> SourceListing:
    """A CSV manifest: one row per image; paths relative to the CSV's folder.

    Optional columns (used when the header has them): ``split_column`` (train, val/valid, test),
    ``patient_column`` (groups), ``study_column`` (study-level evaluation), ``fold_column`` (0, 1, ...: the
    fold whose held-out part holds the image; empty: in no fold's held-out part).
    """
    csv_path = require_file(source.path, "a CSV with one row per image")
    header, rows = read_csv_rows(csv_path)
    label_columns = list(source.label_columns or [])
    for column, key in [(source.path_column, "path_column")] + (
        [(c, "label_columns") for c in label_columns] or [(source.label_column, "label_column")]
    ):
        if column not in header:
            raise DataError(
                f"has no column {column!r} (data.source.{key}); its columns are {header}: set "
                f"data.source.{key} to the right one",
                path=csv_path,
            )
    files, splits = _parse_paths(csv_path, rows, source)
    if label_columns:
        class_names, labels = label_columns, [_binary_row(csv_path, line, row, label_columns) for line, row in rows]
    elif source.multilabel:
        class_names, labels = _split_labels(csv_path, rows, source)
    else:
        names = [_label(csv_path, line, row, source.label_column) for line, row in rows]
        class_names = _sorted_labels(set(names))
        require_classes(class_names, csv_path, f"distinct values in column {source.label_column!r}")
        _warn_label_typos(csv_path, names, source.label_column)
        index = {name: i for i, name in enumerate(class_names)}
        labels = [index[n] for n in names]
        _require_in_train(csv_path, names, splits, source.label_column)
    multilabel = bool(label_columns) or source.multilabel
    if multilabel and len(class_names) < 1:
        raise DataError("a multi-label manifest needs at least one label", path=csv_path)
    if multilabel:
        where = "(data.source.label_columns)" if label_columns else f"in column {source.label_column!r}"
        require_labels_in_train(csv_path, class_names, labels, splits, source=where)
    listing = SourceListing(
        labels=labels, ids=[relative_id(f, csv_path.parent) for f in files], splits=splits,
        class_names=class_names, files=files, root=csv_path.parent, multilabel=multilabel,
        groups=_optional_column(rows, header, source.patient_column),
        studies=_optional_column(rows, header, source.study_column),
        holdout_folds=_fold_column(csv_path, rows, header, source.fold_column),
    )
    order = sorted(range(len(files)), key=listing.ids.__getitem__)
    return listing.subset(order)


def _parse_paths(csv_path: Path, rows: Rows, source: CsvSource) -> tuple[list[Path], list[str]]:
    """(files, splits) of a manifest's rows; each file checked and listed once."""
    files, splits = [], []
    first_line: dict[Path, int] = {}
    split_column = source.split_column
    for line, row in rows:
        value = row.get(source.path_column)
        file = csv_image_path(csv_path, line, value, allow_outside=source.allow_outside_paths)
        if file in first_line:
            raise DataError(
                f"line {line}: {file.name!r} is listed again (first on line {first_line[file]}); list each image once",
                path=csv_path,
            )
        first_line[file] = line
        files.append(file)
        splits.append(_csv_split(csv_path, line, row.get(split_column)) if split_column in row else "train")
    return files, splits


def _label(csv_path: Path, line: int, row: dict[str, str], column: str) -> str:
    label = (row.get(column) or "").strip()
    if not label:
        raise DataError(f"line {line}: empty label in column {column!r}", path=csv_path)
    return label


def _split_labels(csv_path: Path, rows: Rows, source: CsvSource) -> tuple[list[str], list[list[int]]]:
    """Multi-label ``a|b`` cells as (label names, 0/1 rows); an empty cell is an image with no label."""
    sets = []
    for _, row in rows:
        cell = (row.get(source.label_column) or "").strip()
        sets.append({part.strip() for part in cell.split(source.label_separator) if part.strip()})
    names = _sorted_labels(set().union(*sets))
    if not names:
        raise DataError(f"column {source.label_column!r} holds no labels at all", path=csv_path)
    return names, [[int(n in s) for n in names] for s in sets]


def _binary_row(csv_path: Path, line: int, row: dict[str, str], columns: list[str]) -> list[int]:
    out = []
    for column in columns:
        value = (row.get(column) or "").strip()
        if value not in ("0", "1", "0.0", "1.0"):
            raise DataError(
                f"line {line}: column {column!r} holds {value!r}; label columns must hold 0 or 1", path=csv_path
            )
        out.append(int(float(value)))
    return out


def _require_in_train(csv_path: Path, names: list[str], splits: list[str], column: str) -> None:
    """Every class of the test split also has train or val rows (a model cannot learn a class it never sees)."""
    train = {n for n, s in zip(names, splits) if s != "test"}
    for name, split in zip(names, splits):
        if name not in train:
            raise DataError(
                f"label {name!r} (column {column!r}) appears in the {split} split but never in train or val "
                f"(labels there: {_sorted_labels(train)}); add training rows of it or remove it",
                path=csv_path,
            )


def _warn_label_typos(csv_path: Path, names: list[str], column: str) -> None:
    """Warn about a rare label spelt almost like a common one ('pneumnia' next to 'pneumonia'): a typo that is
    large enough to split becomes a class of its own without any error."""
    counts = Counter(names)
    for rare, n_rare in sorted(counts.items()):
        common = [c for c, n in counts.items() if c != rare and n >= 10 * n_rare and not (c + rare).isdigit()]
        close = difflib.get_close_matches(rare, common, n=1, cutoff=0.75)
        if close:
            warnings.warn(
                f"{csv_path}: label {rare!r} (column {column!r}, {n_rare} rows) is spelt almost like {close[0]!r} "
                f"({counts[close[0]]} rows) and is trained as a class of its own; if it is a typo, correct those rows",
                RuntimeWarning,
                stacklevel=3,
            )


def _optional_column(rows: Rows, header: list[str], column: str) -> list[str] | None:
    """The stripped values of ``column`` when the header has it; an empty cell becomes the row's own group."""
    if column not in header:
        return None
    return [(row.get(column) or "").strip() or f"<row {line}>" for line, row in rows]


def _fold_column(csv_path: Path, rows: Rows, header: list[str], column: str) -> list[int] | None:
    if column not in header:
        return None
    folds = []
    for line, row in rows:
        value = (row.get(column) or "").strip()
        try:
            folds.append(int(value) if value else -1)
        except ValueError:
            raise DataError(
                f"line {line}: fold {value!r} (column {column!r}) is not an integer fold number", path=csv_path
            ) from None
    if len({f for f in folds if f >= 0}) < 2:
        raise DataError(f"column {column!r} names fewer than 2 folds; cross-validation needs at least 2",
                        path=csv_path)
    return folds


def _csv_split(csv_path: Path, line: int, value: str | None) -> str:
    split = SPLIT_ALIASES.get((value or "").strip().lower())
    if split is None:
        raise DataError(f"line {line}: split {value!r} is not one of train, val, test", path=csv_path)
    return split


def _sorted_labels(labels: set[str]) -> list[str]:
    """Labels in numeric order when they are all integers ("2" before "10"), else in string order."""
    try:
        return sorted(labels, key=int)
    except ValueError:
        return sorted(labels)
