"""The leakage audit: exact and near duplicate images, and patients, shared between the parts of a dataset.

Exact duplicates are images whose decoded pixels are identical (sha256 of the cached uint8 array). Near
duplicates are distinct images whose perceptual hashes (64-bit DCT hash: the signs of the 8x8 lowest
frequencies of the 32x32 grayscale image against their median) differ in at most ``near_distance`` bits;
pairwise Hamming distances are computed in blocks with numpy, so 6,000 images take well under a second.

Where an image sits, its *location*, is its split (``train``, ``val``, ``test``), or ``Fold<k>/<split>`` for
predefined fold folders, whose images are compared only within their own fold. A repeat (every member of a
duplicate group after the first) is ``within`` when it sits where the group's first member sits, ``across``
otherwise. With folds, :func:`fold_leaks` finds the evaluation images of each fold that duplicate one of its
training images, or belong to one of its training patients.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import fft, ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from medclf.data.dataset import ImageSet
from medclf.data.splitting import Fold
from medclf.errors import DataError

__all__ = ["AuditResult", "apply_leakage_policy", "audit_dataset", "fold_leaks", "perceptual_hashes"]

_MAX_PAIRS = 1000  # near-duplicate pairs listed in full; the count is always exact
_BLOCK = 1024  # rows of the pairwise Hamming matrix computed at once (1024 x 6000 x 8 bytes = 49 MB)


@dataclass
class AuditResult:
    """The audit's JSON report, plus per-image component ids for :func:`fold_leaks`.

    ``exact_id``: (N,) equal for images with identical pixels (in one location scope); ``near_id``: (N,)
    equal for images joined by exact or near duplication.
    """

    report: dict[str, Any]
    exact_id: np.ndarray
    near_id: np.ndarray


def _thumbnails(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32) float32 grayscale thumbnails of (N, C, H, W) uint8 images."""
    gray = images.astype(np.float32).mean(axis=1)
    h, w = gray.shape[1:]
    return ndimage.zoom(gray, (1, 32 / h, 32 / w), order=1, grid_mode=True, mode="nearest")[:, :32, :32]


def perceptual_hashes(images: np.ndarray, *, thumbnails: np.ndarray | None = None) -> np.ndarray:
    """64-bit DCT perceptual hashes of (N, C, H, W) uint8 images, as (N,) uint64."""
    small = _thumbnails(images) if thumbnails is None else thumbnails
    low = fft.dctn(small, axes=(1, 2), norm="ortho")[:, :8, :8].reshape(len(small), 64)
    bits = low > np.median(low[:, 1:], axis=1, keepdims=True)  # the DC term only measures brightness
    return np.packbits(bits, axis=1).view(">u8")[:, 0].astype(np.uint64)


def _correlations(thumbnails: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Pearson correlation of the thumbnails of each pair (i[k], j[k]); 1 for two flat images."""
    flat = thumbnails.reshape(len(thumbnails), -1).astype(np.float64)
    flat = flat - flat.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(flat, axis=1)
    both_flat = (norm[i] == 0) & (norm[j] == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.einsum("kd,kd->k", flat[i], flat[j]) / (norm[i] * norm[j])
    return np.where(both_flat, 1.0, np.nan_to_num(corr))


def _near_pairs(hashes: np.ndarray, scope: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, distance) with i < j, same scope, Hamming distance <= max_distance."""
    ii, jj, dd = [], [], []
    for start in range(0, len(hashes), _BLOCK):
        block = hashes[start : start + _BLOCK]
        dist = np.bitwise_count(block[:, None] ^ hashes[None, :])
        rows, cols = np.nonzero(dist <= max_distance)
        keep = (cols > rows + start) & (scope[rows + start] == scope[cols])
        ii.append(rows[keep] + start)
        jj.append(cols[keep])
        dd.append(dist[rows[keep], cols[keep]])
    cat = lambda parts: np.concatenate(parts) if parts else np.array([], dtype=np.int64)  # noqa: E731
    return cat(ii), cat(jj), cat(dd).astype(np.int64)


def _locations(data: ImageSet) -> tuple[np.ndarray, np.ndarray]:
    """(location, scope) of every image: scope is the fold folder for predefined folds, else one scope."""
    if data.fold_ids is None:
        return data.splits.astype(str), np.zeros(len(data), dtype=np.int64)
    return np.array([f"Fold{k}/{s}" for k, s in zip(data.fold_ids, data.splits)]), data.fold_ids.astype(np.int64)


def _summarize_groups(members: list[np.ndarray], data: ImageSet, location: np.ndarray) -> dict[str, Any]:
    """{count, within, across, groups} of groups of image indices (each in dataset order)."""
    within = across = 0
    for group in members:
        same = location[group[1:]] == location[group[0]]
        within += int(same.sum())
        across += int((~same).sum())
    return {
        "count": within + across,
        "within": within,
        "across": across,
        "groups": [data.ids[g].tolist() for g in members],
    }


def _patient_overlap(data: ImageSet, location: np.ndarray, scope: np.ndarray) -> dict[str, Any]:
    if data.groups is None:
        return {"count": 0, "pairs": {}, "patients": {}, "n_patients": None}
    places: dict[tuple[int, str], set[str]] = {}
    for s, patient, loc in zip(scope, data.groups, location):
        places.setdefault((int(s), str(patient)), set()).add(str(loc))
    shared = {key: sorted(locs) for key, locs in places.items() if len(locs) > 1}
    pairs: dict[str, int] = {}
    for locs in shared.values():
        for a in range(len(locs)):
            for b in range(a + 1, len(locs)):
                pairs[f"{locs[a]}|{locs[b]}"] = pairs.get(f"{locs[a]}|{locs[b]}", 0) + 1
    return {
        "count": len(shared),
        "pairs": dict(sorted(pairs.items())),
        "patients": {patient: locs for (_, patient), locs in sorted(shared.items())},
        "n_patients": len({p for _, p in places}),
    }


def audit_dataset(
    data: ImageSet,
    folds: list[Fold] | None = None,
    *,
    near_distance: int = 4,
    near_correlation: float = 0.97,
    near: bool = True,
) -> AuditResult:
    """Audit a dataset (and, when given, its folds) for duplicated images and shared patients.

    Args:
        data: the loaded dataset.
        folds: the study's folds; each gets a count of evaluation images leaking from its training part.
        near_distance: the largest Hamming distance (bits of 64) between near duplicates.
        near_correlation: the smallest Pearson correlation of the two 32x32 grayscale thumbnails that confirms
            a pair of close hashes (similar-looking but different scans, frequent in radiographs, stay apart).
        near: whether to look for near duplicates at all.

    Returns:
        The report (see ``docs/outputs.md``, ``audit.json``) and the component ids of every image.
    """
    start = time.perf_counter()
    location, scope = _locations(data)
    digests = [hashlib.sha256(row.tobytes()).hexdigest() for row in data.images]
    keys = {}
    exact_id = np.array([keys.setdefault((int(s), d), len(keys)) for s, d in zip(scope, digests)], dtype=np.int64)
    exact_groups = [g for g in _members(exact_id) if len(g) > 1]

    reps = np.array(sorted(g[0] for g in _members(exact_id)), dtype=np.int64)  # one image per distinct content
    near_id = exact_id.copy()
    near_report: dict[str, Any] = {"count": 0, "within": 0, "across": 0, "groups": [], "pairs": [], "n_pairs": 0,
                                   "max_distance": near_distance, "min_correlation": near_correlation,
                                   "enabled": near}
    if near and len(reps) > 1:
        thumbs = _thumbnails(data.images[reps])
        i, j, dist = _near_pairs(perceptual_hashes(data.images[reps], thumbnails=thumbs), scope[reps], near_distance)
        confirmed = _correlations(thumbs, i, j) >= near_correlation
        i, j, dist = i[confirmed], j[confirmed], dist[confirmed]
        graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(len(reps), len(reps)))
        _, component = connected_components(graph, directed=False)
        near_id = component[np.searchsorted(reps, _first_of(exact_id))]  # each image joins its content's component
        near_groups = [reps[g] for g in _members(component) if len(g) > 1]
        near_report |= _summarize_groups(near_groups, data, location)
        order = np.lexsort((j, i, dist))[:_MAX_PAIRS]
        near_report["pairs"] = [[str(data.ids[reps[a]]), str(data.ids[reps[b]]), int(d)]
                                for a, b, d in zip(i[order], j[order], dist[order])]
        near_report["n_pairs"] = int(len(i))
    report = {
        "n_images": len(data),
        "exact_duplicates": _summarize_groups(exact_groups, data, location),
        "near_duplicates": near_report,
        "patient_overlap": _patient_overlap(data, location, scope),
        "locations": {str(k): int(n) for k, n in zip(*np.unique(location, return_counts=True))},
    }
    result = AuditResult(report=report, exact_id=exact_id, near_id=near_id)
    if folds is not None:
        report["folds"] = [{"fold": f.index} | {k: int(len(v)) for k, v in fold_leaks(data, f, result).items()}
                           for f in folds]
    report["timing_s"] = time.perf_counter() - start
    return result


def _members(ids: np.ndarray) -> list[np.ndarray]:
    """Indices of each distinct value of ``ids``, each sorted, in order of first appearance."""
    order = np.argsort(ids, kind="stable")
    bounds = np.flatnonzero(np.diff(ids[order])) + 1
    groups = np.split(order, bounds)
    return sorted(groups, key=lambda g: g[0])


def _first_of(ids: np.ndarray) -> np.ndarray:
    """For each position, the first position holding the same id."""
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    return first[inverse]


def fold_leaks(data: ImageSet, fold: Fold, result: AuditResult) -> dict[str, np.ndarray]:
    """The evaluation images (val, holdout, test) of ``fold`` that leak from its training images.

    Returns:
        ``exact``: pixel-identical to a training image; ``near``: a near duplicate of one (not exact);
        ``patient``: of a patient who also has training images (empty without patient ids).
    """
    evaluation = np.concatenate([fold.val, fold.holdout, fold.test]).astype(np.int64)
    exact = evaluation[np.isin(result.exact_id[evaluation], result.exact_id[fold.train])]
    near = evaluation[np.isin(result.near_id[evaluation], result.near_id[fold.train])]
    near = np.setdiff1d(near, exact)
    patient = np.array([], dtype=np.int64)
    if data.groups is not None:
        patient = evaluation[np.isin(data.groups[evaluation], data.groups[fold.train])]
    return {"exact": np.unique(exact), "near": near, "patient": np.unique(patient)}


def apply_leakage_policy(
    data: ImageSet, folds: list[Fold], result: AuditResult, policy: str
) -> tuple[list[Fold], list[str]]:
    """Apply ``audit.leakage`` to the folds: (the folds to run, warning lines).

    ``warn`` keeps the folds and returns one line per leaking fold; ``fail`` raises when any fold leaks;
    ``drop_duplicates`` removes exact and near duplicates of training images from each fold's evaluation
    splits (a patient overlap is still only warned about: dropping whole patients would change the design).

    Raises:
        DataError: with ``fail``, when a fold's evaluation images duplicate or share patients with its training.
    """
    lines, kept = [], []
    for fold in folds:
        leaks = fold_leaks(data, fold, result)
        parts = [f"{len(v)} {k}" for k, v in leaks.items() if len(v)]
        if parts:
            lines.append(
                f"fold {fold.index}: evaluation images leaking from training: {', '.join(parts)} "
                "(exact/near duplicates of a training image, images of a training patient); see audit.json"
            )
        if policy == "drop_duplicates":
            drop = np.concatenate([leaks["exact"], leaks["near"]])
            fold = Fold(fold.index, fold.train, *(np.setdiff1d(p, drop) for p in (fold.val, fold.holdout, fold.test)))
        kept.append(fold)
    if policy == "fail" and lines:
        raise DataError(
            "the leakage audit found evaluation images that duplicate training images or share their patients "
            f"({'; '.join(lines)}). Remove the duplicates, fix the patient ids or splits, or set audit.leakage to "
            "warn or drop_duplicates"
        )
    return kept, lines
