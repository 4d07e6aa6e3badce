"""``medclf inspect``: what a dataset holds before anything is trained on it.

Counts per split x class (per fold for fold data; a predefined fold set's images counted once in its totals),
images carrying each label (multi-label data), patients per class or label, source image sizes, modes and bit
depths, unreadable files, the class imbalance ratio, and a grid of sample images per class.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medclf.config import DataConfig
from medclf.data.dataset import SPLITS, ImageSet
from medclf.data.formats import is_dicom, is_nifti
from medclf.data.layouts.detect import detect_layout
from medclf.data.sources import load_dataset
from medclf.errors import DataError

__all__ = ["guess_source", "inspect_dataset", "report_lines", "sample_grid", "unreadable_summary"]

_GRID = 4  # samples per side of a class's grid
_NAMED_UNREADABLE = 5  # unreadable files named in the text summary; inspect.json lists them all


def guess_source(path: Path) -> dict[str, Any]:
    """The ``data.source`` mapping a bare path most likely means (for ``medclf inspect/audit PATH``).

    The layout :func:`~medclf.data.layouts.detect.detect_layout` recognises (the one ``medclf validate`` holds a
    config's ``data.source.type`` to); when none is unmistakable: a folder with ``Fold<k>`` folders -> folds; a
    folder with a train folder four levels above its images -> patients; with a train folder -> splits; else
    -> folder.
    """
    path = Path(path).absolute()
    if not path.exists():
        raise DataError("does not exist; give a data folder, a .npz, a .csv or a YAML config", path=path)
    found = detect_layout(path)
    if found is not None:
        return {"type": found.type, "path": str(path)}
    if path.is_file():  # .npz and .csv files were recognised above
        raise DataError("is neither a folder, a .npz, a .csv nor a .yaml config", path=path)
    children = {p.name.lower(): p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if sum(name.startswith("fold") for name in children) >= 2:
        return {"type": "folds", "path": str(path)}
    if "train" in children:
        deep = next(children["train"].glob("*/*/*_*/*"), None)
        return {"type": "patients" if deep is not None and deep.is_file() else "splits", "path": str(path)}
    return {"type": "folder", "path": str(path)}


def _file_stats(root: str | None, ids: np.ndarray) -> dict[str, Any]:
    """Sizes, modes and bit depths of the source files (headers only)."""
    if root is None:
        return {}
    sizes, modes, bits = Counter(), Counter(), Counter()
    for id_ in ids:
        path = Path(root) / str(id_)
        try:
            if is_dicom(path):
                import pydicom

                ds = pydicom.dcmread(path, stop_before_pixels=True)
                sizes[f"{ds.Columns}x{ds.Rows}"] += 1
                modes[f"DICOM {ds.get('PhotometricInterpretation', '?')}"] += 1
                bits[int(ds.get("BitsStored", 0))] += 1
            elif is_nifti(path):
                import nibabel as nib

                header = nib.load(str(path)).header
                sizes["x".join(str(n) for n in header.get_data_shape())] += 1
                modes["NIfTI"] += 1
                bits[int(header.get_data_dtype().itemsize * 8)] += 1
            else:
                with Image.open(path) as img:
                    sizes[f"{img.width}x{img.height}"] += 1
                    modes[img.mode] += 1
                    bits[16 if img.mode.startswith("I;16") else 32 if img.mode in ("I", "F") else 8] += 1
        except Exception:  # noqa: BLE001 - unreadable files are counted by the loader, not here
            continue
    return {
        "sizes": dict(sizes.most_common(10)),
        "n_distinct_sizes": len(sizes),
        "modes": dict(modes),
        "bit_depths": {str(k): v for k, v in sorted(bits.items())},
    }


def _distinct(data: ImageSet) -> tuple[np.ndarray, np.ndarray]:
    """(N,) bool: the first entry of each distinct image, and (N,) int: in how many folds each entry's image is.

    Only predefined fold folders repeat an image (``Fold0/train/a/x.png`` and ``Fold1/test/a/x.png`` are one
    image seen through two folds): an entry's image is its id less the fold and split folders.
    """
    if data.fold_ids is None:
        return np.ones(len(data), dtype=bool), np.ones(len(data), dtype=np.int64)
    names = np.array([str(i).split("/", 2)[-1] for i in data.ids])
    _, first, inverse = np.unique(names, return_index=True, return_inverse=True)
    mask = np.zeros(len(data), dtype=bool)
    mask[first] = True
    image_folds = np.unique(np.stack([inverse.ravel(), data.fold_ids]), axis=1)  # (image, fold) pairs, once each
    return mask, np.bincount(image_folds[0], minlength=len(first))[inverse]


def _by_class(data: ImageSet, mask: np.ndarray) -> dict[str, int]:
    """{class: images} among ``mask``; for multi-label data {label: images carrying it}."""
    counts = data.labels[mask].sum(axis=0) if data.multilabel else np.bincount(
        data.labels[mask], minlength=len(data.class_names))
    return {str(c): int(n) for c, n in zip(data.class_names, counts)}


def _counts(data: ImageSet, distinct: np.ndarray) -> dict[str, Any]:
    """``by_split`` {split: {class: n}} and ``images_by_split`` {split: n}; per fold when the data has folds.

    A predefined fold set has no ``by_split``: every image sits in a split of every fold, so per-split totals
    would count it once per fold. Its ``by_fold`` counts each fold's entries; ``per_class`` counts distinct images.
    """
    out: dict[str, Any] = {}
    if data.fold_ids is None:
        present = [s for s in SPLITS if (data.splits == s).any()]
        out["by_split"] = {s: _by_class(data, data.splits == s) for s in present}
        out["images_by_split"] = {s: int((data.splits == s).sum()) for s in present}
    folds = data.fold_ids if data.fold_ids is not None else data.holdout_folds
    if folds is not None:
        out["by_fold"] = {}
        for k in np.unique(folds):
            member = folds == k
            out["by_fold"][str(int(k))] = {
                str(s): _by_class(data, member & (data.splits == s)) for s in SPLITS if (data.splits[member] == s).any()
            }
    return out


def _patients_per_class(data: ImageSet) -> dict[str, int] | None:
    """Patients with an image of each class (of each label, for multi-label data), or None without patient ids."""
    if data.groups is None:
        return None
    carries = [data.labels[:, k] == 1 if data.multilabel else data.labels == k for k in range(len(data.class_names))]
    return {str(c): int(len(np.unique(data.groups[m]))) for c, m in zip(data.class_names, carries)}


def sample_grid(images: np.ndarray, path: Path) -> Path:
    """Write up to 16 (C, H, W) uint8 images as one 4x4 PNG grid."""
    n, c, h, w = images.shape
    canvas = np.zeros((_GRID * h, _GRID * w, c), dtype=np.uint8)
    for k in range(min(n, _GRID * _GRID)):
        r, col = divmod(k, _GRID)
        canvas[r * h : (r + 1) * h, col * w : (col + 1) * w] = images[k].transpose(1, 2, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas[..., 0] if c == 1 else canvas).save(path)
    return path


def unreadable_summary(report: dict[str, Any], *, limit: int = _NAMED_UNREADABLE) -> str | None:
    """One line naming the first ``limit`` unreadable files of an inspect report (with why) and their count;
    None when every file was read."""
    bad = report["unreadable"]
    if not bad:
        return None
    named = "; ".join(f"{b['path']} ({b['reason']})" for b in bad[:limit])
    more = f"; and {len(bad) - limit} more, all listed in inspect.json" if len(bad) > limit else ""
    return f"{len(bad)} unreadable {'file' if len(bad) == 1 else 'files'} left out: {named}{more}"


def inspect_dataset(cfg: DataConfig, *, out: Path | None = None) -> dict[str, Any]:
    """Describe the dataset ``cfg`` points to; unreadable files are listed, not fatal.

    Every value is a plain JSON type (str, int, float, list, dict): the report is printed as text and JSON.
    Images a predefined fold set repeats across its folds are counted once (``n_images``, ``per_class``, file
    statistics, samples); ``fold_set`` says how many entries the folds hold.

    Args:
        cfg: the data section (``on_bad_image`` is forced to skip, to count unreadable files).
        out: a folder for ``inspect.json`` and ``samples_<class>.png``; None writes nothing.
    """
    data = load_dataset(cfg.model_copy(update={"on_bad_image": "skip"}))
    distinct, copies = _distinct(data)
    per_class = _by_class(data, distinct)
    counts = np.array(list(per_class.values()))
    report: dict[str, Any] = {
        "source": str(cfg.source.type),
        "n_images": int(distinct.sum()),
        "task": "multilabel" if data.multilabel else "multiclass",
        "classes": [str(c) for c in data.class_names],
        "counts": _counts(data, distinct),
        "per_class": per_class,
        "imbalance_ratio": float(counts.max() / counts.min()) if counts.min() > 0 else None,
        "fold_set": None if data.fold_ids is None else {
            "n_folds": int(len(np.unique(data.fold_ids))), "n_entries": len(data),
            "folds_per_image": {"min": int(copies.min()), "max": int(copies.max())},
        },
        "n_patients": None if data.groups is None else int(len(np.unique(data.groups))),
        "patients_per_class": _patients_per_class(data),
        "n_studies": None if data.studies is None else int(len(np.unique(data.studies))),
        "files": _file_stats(data.root, data.ids[distinct]),
        "decoded_shape": [int(n) for n in data.images.shape[1:]],
        "n_unreadable": len(data.skipped),
        "unreadable": [{"path": str(p), "reason": str(r)} for p, r in data.skipped],
        "samples": {},
    }
    if out is not None:
        rng = np.random.default_rng(0)
        for k, name in enumerate(report["classes"]):
            members = np.flatnonzero((data.labels[:, k] == 1 if data.multilabel else data.labels == k) & distinct)
            if len(members):
                pick = np.sort(rng.choice(members, size=min(len(members), _GRID * _GRID), replace=False))
                safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
                report["samples"][name] = str(sample_grid(data.images[pick], Path(out) / f"samples_{safe}.png"))
        from medclf.atomic import atomic_write_json

        atomic_write_json(Path(out) / "inspect.json", report)
    return report


def _listed(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.items())


def report_lines(report: dict[str, Any]) -> list[str]:
    """:func:`inspect_dataset`'s report as the lines ``medclf inspect`` prints (unreadable files aside: see
    :func:`unreadable_summary`)."""
    multilabel = report["task"] == "multilabel"
    ratio = "n/a" if report["imbalance_ratio"] is None else f"{report['imbalance_ratio']:.3f}"
    fold_set = report.get("fold_set")
    images = f"{report['n_images']} images"
    if fold_set is not None:
        low, high = fold_set["folds_per_image"]["min"], fold_set["folds_per_image"]["max"]
        each = f"{low}" if low == high else f"{low} to {high}"
        images = (f"{report['n_images']} distinct images, each in {each} folds; {fold_set['n_entries']} entries "
                  f"in {fold_set['n_folds']} folds")
    kind = "labels" if multilabel else "classes"
    lines = [f"{report['source']} source: {images}",
             f"  {report['task']}, {len(report['classes'])} {kind}: {', '.join(report['classes'])}; "
             f"imbalance ratio {ratio}",
             f"  {'images carrying each label' if multilabel else 'images per class'}: {_listed(report['per_class'])}"]
    carrying = "carrying " if multilabel else ""
    for split, counts in report["counts"].get("by_split", {}).items():
        lines.append(f"  {split}: {report['counts']['images_by_split'][split]} images, {carrying}{_listed(counts)}")
    for fold, splits in report["counts"].get("by_fold", {}).items():
        lines.append(f"  fold {fold}: " + "; ".join(f"{s} {_listed(c)}" for s, c in splits.items()))
    if report["n_patients"] is not None:
        lines.append(f"  patients: {report['n_patients']}, per {'label' if multilabel else 'class'} "
                     f"{_listed(report['patients_per_class'])}")
    files = report["files"]
    if files:
        def counted(counts: dict[str, int], unit: str = "") -> str:
            return ", ".join(f"{name}{unit} ({n})" for name, n in counts.items())

        lines.append(f"  image sizes {counted(files['sizes'])}, {files['n_distinct_sizes']} distinct; modes "
                     f"{counted(files['modes'])}; bit depths {counted(files['bit_depths'], '-bit')}")
    return lines
