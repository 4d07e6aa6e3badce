"""medclf.experiments.preview: the first augmented training batch, as the model would see it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from medclf.config import parse_config
from medclf.experiments.preview import augmented_batch


def test_a_multilabel_batch_is_labelled_with_its_positive_labels(tmp_path: Path):
    rng = np.random.default_rng(0)
    lines = ["path,labels"]
    for i in range(24):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        lines.append(f"{i}.png,{'|'.join(n for n, on in (('edema', i % 2), ('mass', (i // 2) % 2)) if on)}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    cfg = parse_config({"data": {"source": {"type": "csv", "path": str(tmp_path / "m.csv"), "label_column": "labels",
                                            "multilabel": True},
                                 "image_size": 16, "cache_dir": str(tmp_path / "cache")},
                        "training": {"batch_size": 8}, "cv": {"n_folds": 2}})
    images, names, copies = augmented_batch(cfg)
    assert images.shape == (8, 1, 16, 16) and not any(copies)
    assert set(names) <= {"none", "edema", "mass", "edema+mass"} and len(set(names)) > 1
