"""``medclf inspect``: what a dataset holds before anything is trained on it.

Counts per split x class (x fold), patients per class, source image sizes, modes and bit depths, unreadable
files, the class imbalance ratio, and a grid of sample images per class.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medclf.config import DataConfig
from medclf.data.dataset import ImageSet
from medclf.data.formats import is_dicom, is_nifti
from medclf.data.sources import load_dataset
from medclf.errors import DataError

__all__ = ["guess_source", "inspect_dataset", "sample_grid", "unreadable_summary"]

_GRID = 4  # samples per side of a class's grid
_NAMED_UNREADABLE = 5  # unreadable files named in the text summary; inspect.json lists them all


def guess_source(path: Path) -> dict[str, Any]:
    """The ``data.source`` mapping a bare path most likely means (for ``medclf inspect/audit PATH``).

    ``.npz`` -> npz; ``.csv`` -> csv; a folder with ``Fold<k>`` folders -> folds; a folder with a train
    folder four levels above its images -> patients; with a train folder -> splits; else -> folder.
    """
    path = Path(path).absolute()
    if not path.exists():
        raise DataError("does not exist; give a data folder, a .npz, a .csv or a YAML config", path=path)
    if path.is_file():
        kind = {".npz": "npz", ".csv": "csv"}.get(path.suffix.lower())
        if kind is None:
            raise DataError("is neither a folder, a .npz, a .csv nor a .yaml config", path=path)
        return {"type": kind, "path": str(path)}
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


def _counts(data: ImageSet) -> dict[str, Any]:
    """{split: {class: n}}, and per fold when the data has predefined folds."""
    out: dict[str, Any] = {"by_split": data.counts()}
    folds = data.fold_ids if data.fold_ids is not None else data.holdout_folds
    if folds is not None:
        out["by_fold"] = {}
        for k in np.unique(folds):
            member = folds == k
            out["by_fold"][str(int(k))] = {
                s: {c: int(n) for c, n in zip(data.class_names, _class_counts(data, member & (data.splits == s)))}
                for s in np.unique(data.splits[member])
            }
    return out


def _class_counts(data: ImageSet, mask: np.ndarray) -> np.ndarray:
    if data.multilabel:
        return data.labels[mask].sum(axis=0)
    return np.bincount(data.labels[mask], minlength=len(data.class_names))


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

    Args:
        cfg: the data section (``on_bad_image`` is forced to skip, to count unreadable files).
        out: a folder for ``inspect.json`` and ``samples_<class>.png``; None writes nothing.
    """
    data = load_dataset(cfg.model_copy(update={"on_bad_image": "skip"}))
    per_class = _class_counts(data, np.ones(len(data), dtype=bool))
    report: dict[str, Any] = {
        "source": cfg.source.type,
        "n_images": len(data),
        "task": "multilabel" if data.multilabel else "multiclass",
        "classes": data.class_names,
        "counts": _counts(data),
        "per_class": {c: int(n) for c, n in zip(data.class_names, per_class)},
        "imbalance_ratio": float(per_class.max() / per_class.min()) if per_class.min() > 0 else None,
        "n_patients": None if data.groups is None else int(len(np.unique(data.groups))),
        "patients_per_class": None,
        "n_studies": None if data.studies is None else int(len(np.unique(data.studies))),
        "files": _file_stats(data.root, data.ids),
        "decoded_shape": list(data.images.shape[1:]),
        "n_unreadable": len(data.skipped),
        "unreadable": [{"path": p, "reason": r} for p, r in data.skipped],
        "samples": {},
    }
    if data.groups is not None and not data.multilabel:
        report["patients_per_class"] = {
            c: int(len(np.unique(data.groups[data.labels == k]))) for k, c in enumerate(data.class_names)
        }
    if out is not None:
        rng = np.random.default_rng(0)
        for k, name in enumerate(data.class_names):
            members = np.flatnonzero(data.labels[:, k] if data.multilabel else data.labels == k)
            if len(members):
                pick = np.sort(rng.choice(members, size=min(len(members), _GRID * _GRID), replace=False))
                safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
                report["samples"][name] = str(sample_grid(data.images[pick], Path(out) / f"samples_{safe}.png"))
        from medclf.atomic import atomic_write_json

        atomic_write_json(Path(out) / "inspect.json", report)
    return report
