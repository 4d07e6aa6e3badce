"""What the decode cache's pixel checksums cost: checksumming N images, against reading the entry and an epoch.

Every cache read verifies each row's xxh3-64 checksum and every cache write computes them; the data
fingerprint reuses the same checksums. So the cost a run pays is one checksum pass over the decoded array per
``load_dataset``, against epochs that each push every image through the network. Run by hand:

    .venv/bin/python benchmarks/cache_integrity.py                       # 7,000 images of 128 px, 1 and 3 channels
    .venv/bin/python benchmarks/cache_integrity.py --epoch-images 256    # also time a ResNet-18 epoch (extrapolated)

The arrays are random uint8 (hashing speed does not depend on the content). The entry is written with
``np.save`` to a temporary folder and read back with ``np.load``, as the cache does, so the read column shows
what a cache hit costs without the checksums. sha256 is timed on the same rows for comparison.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from medclf.data.cache import pixel_checksums


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_checksums(n_images: int, size: int, channels: int, repeats: int) -> dict:
    """Median seconds to checksum (xxh3-64, and sha256 for comparison) and to np.load ``n_images`` rows."""
    images = np.random.default_rng(0).integers(0, 256, (n_images, channels, size, size), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "entry.npy"
        np.save(path, images)
        read_s = _median_s(lambda: np.load(path, allow_pickle=False), repeats)
    xxh3_s = _median_s(lambda: pixel_checksums(images), repeats)
    sha256_s = _median_s(lambda: [hashlib.sha256(row).hexdigest() for row in images], repeats)
    return {
        "n_images": n_images, "size": size, "channels": channels, "mib": images.nbytes / 2**20,
        "xxh3_s": xxh3_s, "sha256_s": sha256_s, "np_load_s": read_s,
        "xxh3_gib_per_s": images.nbytes / 2**30 / xxh3_s,
    }


def measure_epoch(n_images: int, size: int, n_measured: int) -> float:
    """Seconds of one ResNet-18 training epoch over ``n_images`` 3-channel images, extrapolated from
    ``n_measured`` (medclf's Trainer, default recipe, CPU, batch 32, after a warm-up epoch)."""
    import torch

    from medclf.config import ModelConfig, TrainingConfig
    from medclf.models import build_model
    from medclf.training import Trainer

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 256, (n_measured, 3, size, size), dtype=np.uint8))
    y = torch.from_numpy(rng.integers(0, 2, n_measured))
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="resnet18"), in_chans=3, n_classes=2)
    config = TrainingConfig(epochs=2, batch_size=32, device="cpu")
    history = Trainer(model, config, class_names=["a", "b"], seed=0).fit(x, y, x[:0], y[:0]).history
    return history[-1]["time_s"] * n_images / n_measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=7000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epoch-images", type=int, default=0, help="time an epoch on this many images (0: skip)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()

    rows = [measure_checksums(args.images, args.size, c, args.repeats) for c in (1, 3)]
    print(f"{args.images} images of {args.size} px, median of {args.repeats}:")
    print("| channels | MiB | xxh3-64 checksums (s) | GiB/s | sha256 (s) | np.load of the entry (s) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['channels']} | {r['mib']:.0f} | {r['xxh3_s']:.3f} | {r['xxh3_gib_per_s']:.1f} | "
              f"{r['sha256_s']:.3f} | {r['np_load_s']:.3f} |")
    result = {"checksums": rows}
    if args.epoch_images:
        epoch_s = measure_epoch(args.images, args.size, args.epoch_images)
        result["resnet18_epoch_s"] = epoch_s
        print(f"ResNet-18 epoch over {args.images} RGB images (from {args.epoch_images}): {epoch_s:.1f} s; "
              f"3-channel checksums are {100 * rows[1]['xxh3_s'] / epoch_s:.3f} % of it")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
