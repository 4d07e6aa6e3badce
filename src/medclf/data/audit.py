"""The leakage audit: exact and near duplicate images, and patients, shared between the parts of a dataset.

Exact duplicates are images whose decoded pixels are identical (sha256 of the cached uint8 array). Near
duplicates are distinct images whose perceptual hashes (64-bit DCT hash: the signs of the 8x8 lowest
frequencies of the 32x32 grayscale image against their median) differ in at most ``near_distance`` bits;
pairwise Hamming distances are computed in blocks with numpy, so 6,000 images take well under a second.

Near duplicates are reported as *pairs*, each of which passes both tests itself. They are never grouped:
closeness is not transitive, and connected components chained neighbouring MRI slices into groups of up to 24
images whose members need not resemble each other. Exact duplicates are grouped (identity is transitive).
How often a flagged pair is a real copy, and how many copies are found, is measured by
``benchmarks/near_duplicates.py`` (docs/benchmarks.md).

Where an image sits, its *location*, is its split (``train``, ``val``, ``test``), or ``Fold<k>/<split>`` for
predefined fold folders, whose images are compared only within their own fold. An exact repeat (every member
of a group after the first) is ``within`` when it sits where the group's first member sits, ``across``
otherwise; a near pair is ``within`` when both images sit in one location. With folds, :func:`fold_leaks` finds
the evaluation images of each fold that duplicate one of its training images, or belong to one of its training
patients.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import fft, ndimage

from medclf.data.dataset import ImageSet
from medclf.data.splitting import Fold
from medclf.errors import DataError

__all__ = [
    "AuditResult",
    "apply_leakage_policy",
    "audit_dataset",
    "fold_leaks",
    "leak_remedies",
    "near_duplicate_candidates",
    "perceptual_hashes",
]

_MAX_PAIRS = 1000  # near-duplicate pairs listed in full; the counts are always exact
_BLOCK = 1024  # rows of the pairwise Hamming matrix computed at once (1024 x 6000 x 8 bytes = 49 MB)
_CORR_CHUNK = 16384  # pairs correlated at once (16384 x 1024 x 8 bytes = 134 MB per side)
# images turned into thumbnails (or thumbnails into hashes) at once: a memory-mapped set is read a slice at a
# time and only the (N, 32, 32) float32 thumbnails (4 KB an image) are kept for the whole set
_CHUNK_BYTES = 64 << 20


@dataclass
class AuditResult:
    """The audit's JSON report, plus what :func:`fold_leaks` needs.

    ``exact_id``: (N,) a content id, equal for images with identical pixels (in one location scope);
    ``near_pairs``: (P, 2) int64 content ids ``a < b`` of every near-duplicate pair (each passes the test).
    """

    report: dict[str, Any]
    exact_id: np.ndarray
    near_pairs: np.ndarray


def _thumbnails(images: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """(N, 32, 32) float32 grayscale thumbnails of (N, C, H, W) uint8 images (of ``images[rows]`` if given).

    A slice of rows at a time: each thumbnail depends on its own image only (the zoom keeps the image axis).
    """
    rows = np.arange(len(images)) if rows is None else np.asarray(rows, dtype=np.int64)
    c, h, w = images.shape[1:]
    # a slice holds C+2 float32 copies of its images at once (the float image, its gray mean, the zoom's work)
    step = max(1, _CHUNK_BYTES // (4 * (c + 2) * max(1, h * w)))
    out = np.empty((len(rows), 32, 32), dtype=np.float32)
    for start in range(0, len(rows), step):
        gray = np.asarray(images[rows[start : start + step]]).astype(np.float32).mean(axis=1)
        small = ndimage.zoom(gray, (1, 32 / h, 32 / w), order=1, grid_mode=True, mode="nearest")
        out[start : start + len(gray)] = small[:, :32, :32]
    return out


def perceptual_hashes(images: np.ndarray, *, thumbnails: np.ndarray | None = None) -> np.ndarray:
    """64-bit DCT perceptual hashes of (N, C, H, W) uint8 images, as (N,) uint64."""
    small = _thumbnails(images) if thumbnails is None else thumbnails
    step = max(1, _CHUNK_BYTES // small[0].nbytes) if len(small) else 1
    hashes = [_dct_hashes(small[s : s + step]) for s in range(0, len(small), step)]
    return np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.uint64)


def _dct_hashes(small: np.ndarray) -> np.ndarray:
    """The perceptual hashes of (n, 32, 32) thumbnails, as (n,) uint64."""
    low = fft.dctn(small, axes=(1, 2), norm="ortho")[:, :8, :8].reshape(len(small), 64)
    bits = low > np.median(low[:, 1:], axis=1, keepdims=True)  # the DC term only measures brightness
    return np.packbits(bits, axis=1).view(">u8")[:, 0].astype(np.uint64)


def _correlations(thumbnails: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Pearson correlation of the thumbnails of each pair (i[k], j[k]); 1 for two flat images."""
    flat = thumbnails.reshape(len(thumbnails), -1)
    # Row means and norms a slice at a time: no float64 copy of every thumbnail (8 KB an image).
    step = max(1, _CHUNK_BYTES // (8 * max(1, flat.shape[1])))
    mean = np.zeros(len(flat))
    norm = np.zeros(len(flat))
    for s in range(0, len(flat), step):
        part = flat[s : s + step].astype(np.float64)
        mean[s : s + step] = part.mean(axis=1)
        norm[s : s + step] = np.linalg.norm(part - mean[s : s + step, None], axis=1)

    def centered(rows: np.ndarray) -> np.ndarray:
        return flat[rows].astype(np.float64) - mean[rows, None]

    # In chunks: a loose hash distance can pass hundreds of thousands of candidate pairs.
    dots = [np.einsum("kd,kd->k", centered(i[s : s + _CORR_CHUNK]), centered(j[s : s + _CORR_CHUNK]))
            for s in range(0, len(i), _CORR_CHUNK)]
    dot = np.concatenate(dots) if dots else np.zeros(0)
    both_flat = (norm[i] == 0) & (norm[j] == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = dot / (norm[i] * norm[j])
    return np.where(both_flat, 1.0, np.nan_to_num(corr))


def _near_pairs(hashes: np.ndarray, scope: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, distance) with i < j, same scope, Hamming distance <= max_distance."""
    ii, jj, dd = [], [], []
    # rows of the (rows x N) distance matrix at once: fewer than _BLOCK for a large set, so its memory stays
    # about _CHUNK_BYTES whatever N is
    rows_at_once = max(1, min(_BLOCK, _CHUNK_BYTES // (8 * max(1, len(hashes)))))
    for start in range(0, len(hashes), rows_at_once):
        block = hashes[start : start + rows_at_once]
        dist = np.bitwise_count(block[:, None] ^ hashes[None, :])
        rows, cols = np.nonzero(dist <= max_distance)
        keep = (cols > rows + start) & (scope[rows + start] == scope[cols])
        ii.append(rows[keep] + start)
        jj.append(cols[keep])
        dd.append(dist[rows[keep], cols[keep]])
    cat = lambda parts: np.concatenate(parts) if parts else np.array([], dtype=np.int64)  # noqa: E731
    return cat(ii), cat(jj), cat(dd).astype(np.int64)


def near_duplicate_candidates(
    images: np.ndarray, scope: np.ndarray | None = None, *, max_distance: int, min_correlation: float,
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of (N, C, H, W) uint8 images that passes the near-duplicate test, each on its own.

    Args:
        images: the images, at the size the audit sees them (the dataset's working size).
        scope: (N,) only images of equal scope are compared; None compares all.
        rows: compare only these rows of ``images``, as if ``images[rows]`` were given (without that copy);
            ``scope`` and the returned positions then refer to ``rows``.
        max_distance: the largest Hamming distance between the two perceptual hashes (bits of 64).
        min_correlation: the smallest Pearson correlation of the two 32x32 grayscale thumbnails.

    Returns:
        (i, j, distance, correlation), one entry per passing pair, i < j.
    """
    thumbs = _thumbnails(images, rows)
    scope = np.zeros(len(thumbs), dtype=np.int64) if scope is None else scope
    i, j, dist = _near_pairs(perceptual_hashes(images, thumbnails=thumbs), scope, max_distance)
    corr = _correlations(thumbs, i, j)
    keep = corr >= min_correlation
    return i[keep], j[keep], dist[keep], corr[keep]


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
    near_distance: int = 10,
    near_correlation: float = 0.9925,
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
        The report (see ``docs/outputs.md``, ``audit.json``), the content id of every image and the near pairs.
    """
    start = time.perf_counter()
    location, scope = _locations(data)
    digests = [hashlib.sha256(row.tobytes()).hexdigest() for row in data.images]  # row by row: a map streams
    keys = {}
    exact_id = np.array([keys.setdefault((int(s), d), len(keys)) for s, d in zip(scope, digests)], dtype=np.int64)
    exact_groups = [g for g in _members(exact_id) if len(g) > 1]

    # One image per distinct content: an exact copy of a near duplicate is one too, and is counted as such.
    reps = np.array(sorted(g[0] for g in _members(exact_id)), dtype=np.int64)
    near_pairs = np.zeros((0, 2), dtype=np.int64)
    near_report: dict[str, Any] = {"count": 0, "within": 0, "across": 0, "n_images": 0, "pairs": [],
                                   "max_distance": near_distance, "min_correlation": near_correlation,
                                   "enabled": near}
    if near and len(reps) > 1:
        i, j, dist, corr = near_duplicate_candidates(
            data.images, scope[reps], max_distance=near_distance, min_correlation=near_correlation, rows=reps
        )
        near_pairs = np.stack([exact_id[reps[i]], exact_id[reps[j]]], axis=1)
        near_report |= _summarize_pairs(near_pairs, dist, corr, exact_id, data, location)
    report = {
        "n_images": len(data),
        "exact_duplicates": _summarize_groups(exact_groups, data, location),
        "near_duplicates": near_report,
        "patient_overlap": _patient_overlap(data, location, scope),
        "locations": {str(k): int(n) for k, n in zip(*np.unique(location, return_counts=True))},
    }
    result = AuditResult(report=report, exact_id=exact_id, near_pairs=near_pairs)
    if folds is not None:
        report["folds"] = [{"fold": f.index} | {k: int(len(v)) for k, v in fold_leaks(data, f, result).items()}
                           for f in folds]
    report["timing_s"] = time.perf_counter() - start
    return result


def _summarize_pairs(
    pairs: np.ndarray, dist: np.ndarray, corr: np.ndarray, exact_id: np.ndarray, data: ImageSet,
    location: np.ndarray,
) -> dict[str, Any]:
    """{count, within, across, n_images, pairs} of near pairs of contents, counted as pairs of images.

    A content held by several images (exact copies) makes a pair with each of them, so the counts are over
    image pairs; they are computed from per-location counts, never by listing every image pair.
    """
    places, place = np.unique(location, return_inverse=True)
    per_place = np.zeros((int(exact_id.max()) + 1, len(places)), dtype=np.int64)
    np.add.at(per_place, (exact_id, place), 1)
    a, b = pairs[:, 0], pairs[:, 1]
    total = per_place[a].sum(axis=1) * per_place[b].sum(axis=1)
    within = (per_place[a] * per_place[b]).sum(axis=1)
    order = np.argsort(exact_id, kind="stable")  # the images of content c: order[bounds[c]:bounds[c + 1]]
    bounds = np.searchsorted(exact_id[order], np.arange(len(per_place) + 1))
    listed: list[dict[str, Any]] = []
    # Pairs spanning two locations first (the ones that leak), then the closest.
    for k in np.lexsort((-corr, dist, total == within)):
        for x in order[bounds[a[k]] : bounds[a[k] + 1]]:
            if len(listed) >= _MAX_PAIRS:  # thousands of copies of one blank image must not list millions
                break
            listed += [{"ids": [str(data.ids[x]), str(data.ids[y])],
                        "splits": [str(location[x]), str(location[y])],
                        "distance": int(dist[k]), "correlation": round(float(corr[k]), 4)}
                       for y in order[bounds[b[k]] : bounds[b[k] + 1]][:_MAX_PAIRS]]
        if len(listed) >= _MAX_PAIRS:
            break
    listed.sort(key=lambda p: (p["splits"][0] == p["splits"][1], p["distance"], -p["correlation"]))
    return {
        "count": int(total.sum()),
        "within": int(within.sum()),
        "across": int((total - within).sum()),
        "n_images": int(np.isin(exact_id, pairs).sum()),
        "pairs": listed[:_MAX_PAIRS],
    }


def _members(ids: np.ndarray) -> list[np.ndarray]:
    """Indices of each distinct value of ``ids``, each sorted, in order of first appearance."""
    order = np.argsort(ids, kind="stable")
    bounds = np.flatnonzero(np.diff(ids[order])) + 1
    groups = np.split(order, bounds)
    return sorted(groups, key=lambda g: g[0])


def fold_leaks(data: ImageSet, fold: Fold, result: AuditResult) -> dict[str, np.ndarray]:
    """The evaluation images (val, holdout, test) of ``fold`` that leak from its training images.

    Returns:
        ``exact``: pixel-identical to a training image; ``near``: forms a near-duplicate pair with a training
        image itself (not through a chain of pairs), and is not exact; ``patient``: of a patient who also has
        training images (empty without patient ids).
    """
    evaluation = np.concatenate([fold.val, fold.holdout, fold.test]).astype(np.int64)
    trained = result.exact_id[fold.train]
    exact = evaluation[np.isin(result.exact_id[evaluation], trained)]
    a, b = result.near_pairs[:, 0], result.near_pairs[:, 1]
    partners = np.concatenate([b[np.isin(a, trained)], a[np.isin(b, trained)]])  # contents paired with training
    near = np.setdiff1d(evaluation[np.isin(result.exact_id[evaluation], partners)], exact)
    patient = np.array([], dtype=np.int64)
    if data.groups is not None:
        patient = evaluation[np.isin(data.groups[evaluation], data.groups[fold.train])]
    return {"exact": np.unique(exact), "near": near, "patient": np.unique(patient)}


def apply_leakage_policy(
    data: ImageSet, folds: list[Fold], result: AuditResult, policy: str
) -> tuple[list[Fold], list[str]]:
    """Apply ``audit.leakage`` to the folds: (the folds to run, warning lines).

    ``warn`` keeps the folds and returns one line per leaking fold, then one line saying what would fix the
    leaks (:func:`leak_remedies`); ``fail`` raises when any fold leaks; ``drop_duplicates`` removes exact and near
    duplicates of training images from each fold's evaluation splits (a patient overlap is still only warned
    about: dropping whole patients would change the design).

    Raises:
        DataError: with ``fail``, when a fold's evaluation images duplicate or share patients with its training.
    """
    lines, kept, kinds = [], [], set()
    dropping = policy == "drop_duplicates"
    for fold in folds:
        leaks = fold_leaks(data, fold, result)
        parts = [f"{len(v)} {k}" for k, v in leaks.items() if len(v)]
        kinds |= {k for k, v in leaks.items() if len(v)}
        if parts:
            dropped = "; the exact and near ones dropped (audit.leakage: drop_duplicates)" if dropping and (
                len(leaks["exact"]) or len(leaks["near"])) else ""
            lines.append(
                f"fold {fold.index}: evaluation images leaking from training: {', '.join(parts)} "
                f"(exact/near duplicates of a training image, images of a training patient){dropped}; see audit.json"
            )
        if dropping:
            drop = np.concatenate([leaks["exact"], leaks["near"]])
            fold = Fold(fold.index, fold.train, *(np.setdiff1d(p, drop) for p in (fold.val, fold.holdout, fold.test)))
        kept.append(fold)
    remedies = leak_remedies(data, result.report, kinds - ({"exact", "near"} if dropping else set()))
    if policy == "fail" and lines:
        raise DataError(
            "the leakage audit found evaluation images that duplicate training images or share their patients "
            f"({'; '.join(lines)}). To fix it: {'; '.join(remedies)}; or set audit.leakage: warn to score them as "
            "they are"
        )
    if remedies:
        refuse = "; audit.leakage: fail refuses a run that leaks" if policy == "warn" else ""
        lines.append(f"to fix the leaks: {'; '.join(remedies)}{refuse}")
    return kept, lines


def leak_remedies(data: ImageSet, report: dict[str, Any], kinds: set[str]) -> list[str]:
    """What would fix each kind of fold leak found (``kinds``, of "exact", "near", "patient"), one clause each.

    Duplicates: ``audit.leakage: drop_duplicates`` or removing the files. Shared patients: where they come
    from decides the fix: the data's own splits (``cv.resplit_by_patient``), predefined fold folders (only
    moving the files), a manifest's fold column (editing it), or folds made without patient groups (``cv.grouped``).
    """
    out = []
    if kinds & {"exact", "near"}:
        out.append("set audit.leakage: drop_duplicates (drops the duplicates from the evaluation splits), or remove "
                   "the files audit.json names")
    if "patient" in kinds:
        shared = report["patient_overlap"]["count"]
        patients = f"{shared} patient{'s' if shared != 1 else ''}"
        if data.fold_ids is not None:
            out.append("the fold folders put patients in two splits of one fold: move each one's images into one "
                       "split of that fold (audit.json lists them); cv.resplit_by_patient cannot change fold folders")
        elif shared:
            out.append(f"the data's own splits share {patients}: set cv.resplit_by_patient: true (re-splits them "
                       "grouped by patient)")
        elif data.holdout_folds is not None:
            out.append("give every image of a patient the same fold in the manifest's fold column")
        else:
            out.append("set cv.grouped: true (keeps each patient's images on one side of every split)")
    return out
