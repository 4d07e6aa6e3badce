"""How good is the near-duplicate audit? Precision and recall on a labelled benchmark built from real images.

Each benchmark set is a pool of distinct source images plus one altered copy of a sample of them. The audit's
test (:func:`medclf.data.audit.near_duplicate_candidates`) runs on the whole pool, at the size the audit sees
it, as it would on a dataset; every pair it flags is then labelled:

* positive: a source and its own copy. The copies are made at the source's resolution, as a copy travels
  before medclf reads it: ``jpeg`` (re-encoded, Pillow quality 70-95), ``rescale`` (shrunk to 50-80 % or
  enlarged to 125-200 %, then back), ``crop`` (2-6 % cut from each border, resized back), ``brightness``
  (shifted by 10-20 % of the range, up or down, clipped);
* negative: any two images of different sources (other patients, other images, copies of other images);
  ``hard``: two different slices of one phantom volume (neighbouring slices look alike but are not copies);
* left out: pairs whose sources are pixel-identical (PneumoniaMNIST holds true exact duplicates).

Sets: ``pneumoniamnist`` (../shared/data/pneumoniamnist.npz, 5,856 chest X-rays at 28 px, audited at 28 px;
skipped when the file is absent) and ``phantoms`` (the synthetic MRI head phantoms of medclf.data.synthetic,
drawn at 128 px as contiguous stacks of thin slices, audited at 64 px).

Run by hand, never by the tests::

    .venv/bin/python benchmarks/near_duplicates.py              # both sets, the full grid (~2 min on 2 cores)
    .venv/bin/python benchmarks/near_duplicates.py --quick      # small sets: a smoke check
    .venv/bin/python benchmarks/near_duplicates.py --out nd.json

Prints, per set and per (hash distance, correlation) threshold: precision, recall per kind of copy, false
positives (and those among hard negatives) and the false-positive rate over all negative pairs; then the chosen
defaults: the threshold with the best mean recall whose precision reaches ``--min-precision`` on every set when
only 5 % of the images have a copy (the pool itself copies a fifth to a quarter of its sources, which flatters
precision: the false pairs do not shrink with fewer copies).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from medclf.data.audit import near_duplicate_candidates

KINDS = ("jpeg", "rescale", "crop", "brightness")
DISTANCES = (4, 6, 8, 10, 12)
CORRELATIONS = (0.95, 0.97, 0.98, 0.985, 0.99, 0.9925, 0.995)
PREVALENCE = 0.05  # share of a dataset's images that are copies, for the precision the defaults must reach
PNEUMONIA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "pneumoniamnist.npz"


# ------------------------------------------------------------------------------------------- the copies
def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear, as medclf's decoder resizes (PIL)."""
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def _jpeg(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=int(rng.integers(70, 96)))
    return np.asarray(Image.open(buffer).convert("L"))


def _rescale(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape
    factor = rng.uniform(0.5, 0.8) if rng.random() < 0.5 else rng.uniform(1.25, 2.0)
    return _resize(_resize(image, max(4, round(h * factor)), max(4, round(w * factor))), h, w)


def _crop(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape
    top, bottom = (max(1, round(h * rng.uniform(0.02, 0.06))) for _ in range(2))
    left, right = (max(1, round(w * rng.uniform(0.02, 0.06))) for _ in range(2))
    return _resize(image[top : h - bottom, left : w - right], h, w)


def _brightness(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    shift = rng.uniform(0.10, 0.20) * 255 * (1 if rng.random() < 0.5 else -1)
    return np.clip(image.astype(np.float64) + shift, 0, 255).astype(np.uint8)


TRANSFORMS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "jpeg": _jpeg, "rescale": _rescale, "crop": _crop, "brightness": _brightness,
}


@dataclass
class Pool:
    """A benchmark set at the audit's working size: sources first, then one copy of some of them.

    ``origin``: (M,) the source index of every image (a source is its own origin); ``kind``: (M,) "" for a
    source, else the copy's kind; ``volume``/``level``: (M,) a source's volume and slice (-1 without volumes);
    ``digest``: (M,) the sha256 of each image's source pixels, to leave out pairs of identical sources.
    """

    images: np.ndarray
    origin: np.ndarray
    kind: np.ndarray
    volume: np.ndarray
    digest: np.ndarray


def make_pool(
    sources: np.ndarray, *, n_per_kind: int, working_size: int, seed: int, volume: np.ndarray | None = None
) -> Pool:
    """Sources (N, H, W) uint8 plus ``n_per_kind`` copies of each kind of distinct sources, at working size."""
    rng = np.random.default_rng(seed)
    n = len(sources)
    picked = rng.choice(n, size=min(n, n_per_kind * len(KINDS)), replace=False)  # one copy per source at most
    kinds = [KINDS[k % len(KINDS)] for k in range(len(picked))]
    copies = [TRANSFORMS[k](sources[s], rng) for s, k in zip(picked, kinds)]
    images = [*sources, *copies]
    if sources.shape[1:] != (working_size, working_size):
        images = [_resize(im, working_size, working_size) for im in images]
    digests = np.array([hashlib.sha256(s.tobytes()).hexdigest() for s in sources])
    origin = np.concatenate([np.arange(n), picked]).astype(np.int64)
    volume = np.full(n, -1) if volume is None else np.asarray(volume)
    return Pool(images=np.stack(images)[:, None], origin=origin, kind=np.array([""] * n + kinds),
                volume=volume[origin], digest=digests[origin])


# ---------------------------------------------------------------------------------------------- scoring
def label_pairs(pool: Pool, i: np.ndarray, j: np.ndarray) -> dict[str, np.ndarray]:
    """Per flagged pair: ``positive`` (a source and its copy), ``negative``, ``hard`` (negative, one volume),
    ``kind`` (the copy's kind for a positive, else "")."""
    same_source = pool.origin[i] == pool.origin[j]
    identical = (pool.digest[i] == pool.digest[j]) & ~same_source
    positive = same_source  # one copy per source: a same-source pair is always (source, its copy)
    negative = ~same_source & ~identical
    hard = negative & (pool.volume[i] >= 0) & (pool.volume[i] == pool.volume[j])
    kind = np.where(positive, np.char.add(pool.kind[i], pool.kind[j]), "")
    return {"positive": positive, "negative": negative, "hard": hard, "kind": kind}


def n_negative_pairs(pool: Pool) -> int:
    """All pairs of the pool that are negatives: every pair, less the positives and the identical sources."""
    m = len(pool.origin)
    _, per_digest = np.unique(pool.digest, return_counts=True)
    same_digest = int((per_digest * (per_digest - 1) // 2).sum())  # includes every (source, copy) pair
    return m * (m - 1) // 2 - same_digest


def score_grid(
    pool: Pool, i: np.ndarray, j: np.ndarray, dist: np.ndarray, corr: np.ndarray, *,
    distances: tuple[int, ...] = DISTANCES, correlations: tuple[float, ...] = CORRELATIONS,
    prevalence: float = PREVALENCE,
) -> list[dict]:
    """One row per threshold: precision, recall per kind, false positives (all, hard) and the FP rate.

    ``precision`` is at the pool's own share of copies (a quarter or a fifth: generous); ``precision_rare``
    is the precision expected when only ``prevalence`` of the sources have a copy: the false pairs, mostly
    between sources (neighbouring slices), stay, and the true ones shrink to mean recall x prevalence x sources.
    """
    n_sources = int((pool.kind == "").sum())
    labels = label_pairs(pool, i, j)
    n_copies = {k: int((pool.kind == k).sum()) for k in KINDS}
    n_neg = n_negative_pairs(pool)
    rows = []
    for d in distances:
        for c in correlations:
            flagged = (dist <= d) & (corr >= c)
            tp = int((flagged & labels["positive"]).sum())
            fp = int((flagged & labels["negative"]).sum())
            recall = {k: int((flagged & (labels["kind"] == k)).sum()) / n for k, n in n_copies.items() if n}
            rows.append({
                "max_distance": d, "min_correlation": c, "flagged": tp + fp, "true_positives": tp,
                "false_positives": fp, "hard_false_positives": int((flagged & labels["hard"]).sum()),
                "precision": tp / (tp + fp) if tp + fp else float("nan"),
                "recall": recall, "mean_recall": float(np.mean(list(recall.values()))),
                "fp_rate": fp / n_neg if n_neg else float("nan"),
            })
            expected = rows[-1]["mean_recall"] * prevalence * n_sources
            rows[-1]["precision_rare"] = expected / (expected + fp) if expected + fp else float("nan")
    return rows


def choose_defaults(results: dict[str, list[dict]], *, min_precision: float) -> dict | None:
    """The threshold whose ``precision_rare`` reaches ``min_precision`` on every set, with the best mean recall
    over the sets (ties: the smaller distance, then the larger correlation); None when none qualifies."""
    by_threshold: dict[tuple[int, float], list[dict]] = {}
    for rows in results.values():
        for row in rows:
            by_threshold.setdefault((row["max_distance"], row["min_correlation"]), []).append(row)
    qualified = [(key, rows) for key, rows in by_threshold.items()
                 if all(r["precision_rare"] >= min_precision for r in rows)]  # a NaN precision never qualifies
    if not qualified:
        return None
    key, rows = max(qualified, key=lambda kr: (np.mean([r["mean_recall"] for r in kr[1]]), -kr[0][0], kr[0][1]))
    return {"max_distance": key[0], "min_correlation": key[1],
            "precision": {name: r["precision"] for name, r in zip(results, rows)},
            "precision_rare": {name: r["precision_rare"] for name, r in zip(results, rows)},
            "mean_recall": {name: r["mean_recall"] for name, r in zip(results, rows)}}


def evaluate(pool: Pool, **grid) -> tuple[list[dict], float]:
    """The grid's rows for a pool, and the seconds the loosest test took on it."""
    distances = grid.get("distances", DISTANCES)
    correlations = grid.get("correlations", CORRELATIONS)
    start = time.perf_counter()
    i, j, dist, corr = near_duplicate_candidates(pool.images, max_distance=max(distances),
                                                 min_correlation=min(correlations))
    seconds = time.perf_counter() - start
    return score_grid(pool, i, j, dist, corr, distances=distances, correlations=correlations), seconds


# ---------------------------------------------------------------------------------------------- the sets
def pneumonia_pool(*, n_per_kind: int, seed: int, limit: int | None = None) -> Pool | None:
    if not PNEUMONIA.exists():
        return None
    with np.load(PNEUMONIA) as z:
        sources = np.concatenate([z[f"{s}_images"] for s in ("train", "val", "test")])
    return make_pool(sources[:limit], n_per_kind=n_per_kind, working_size=28, seed=seed)


def phantom_pool(*, n_patients: int, slices: int, n_per_kind: int, seed: int) -> Pool:
    from medclf.data.synthetic import make_phantoms

    phantoms = make_phantoms(n_patients=n_patients, slices_per_patient=slices, image_size=128, seed=seed)
    volume = np.repeat(np.arange(n_patients), slices)
    return make_pool(phantoms.images[:, 0], n_per_kind=n_per_kind, working_size=64, seed=seed, volume=volume)


def _table(rows: list[dict]) -> str:
    recalls = " | ".join(f"recall {k}" for k in KINDS)
    head = (f"| distance | correlation | precision | precision at {PREVALENCE:.0%} copies | {recalls} "
            "| false pos. (hard) | FP rate |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        rec = " | ".join(f"{r['recall'].get(k, float('nan')):.2f}" for k in KINDS)
        lines.append(f"| {r['max_distance']} | {r['min_correlation']} | {r['precision']:.3f} | "
                     f"{r['precision_rare']:.3f} | {rec} | "
                     f"{r['false_positives']} ({r['hard_false_positives']}) | {r['fp_rate']:.1e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sets, a smoke check")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-precision", type=float, default=0.95)
    parser.add_argument("--out", type=Path, help="write every row and the choice as JSON")
    args = parser.parse_args(argv)
    per_kind, patients, limit = (25, 12, 1000) if args.quick else (300, 100, None)
    pools = {"phantoms": phantom_pool(n_patients=patients, slices=24, n_per_kind=per_kind // 2, seed=args.seed)}
    pneumonia = pneumonia_pool(n_per_kind=per_kind, seed=args.seed, limit=limit)
    if pneumonia is None:
        print(f"pneumoniamnist skipped: {PNEUMONIA} is absent", file=sys.stderr)
    else:
        pools = {"pneumoniamnist": pneumonia} | pools
    results, timing = {}, {}
    for name, pool in pools.items():
        results[name], timing[name] = evaluate(pool)
        n_neg = n_negative_pairs(pool)
        print(f"\n### {name}: {int((pool.kind == '').sum())} sources + {int((pool.kind != '').sum())} copies at "
              f"{pool.images.shape[-1]} px; {n_neg:,} negative pairs; loosest test {timing[name]:.1f} s\n")
        print(_table(results[name]))
    chosen = choose_defaults(results, min_precision=args.min_precision)
    print(f"\nchosen (precision at {PREVALENCE:.0%} copies >= {args.min_precision} on every set, best mean "
          f"recall): {chosen}")
    if args.out:
        args.out.write_text(json.dumps({"results": results, "timing_s": timing, "chosen": chosen}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
