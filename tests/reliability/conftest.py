"""Fixtures of the fault-injection suite: tiny data, one trained reference run per session, the CLI runner.

Every case starts from a copy of the same finished run (``run_copy``), damages or interrupts it through the
real ``medclf`` command line (``launch.py``), and compares what medclf then does with the reference.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))  # reliability_harness, for the test modules of this folder

from reliability_harness import Cli, file_hashes, read_csv, report_files, results  # noqa: E402

# ``cli`` (the fork server that starts every command) is tests/conftest.py's: one per session for the whole suite


def _e2e_conftest():
    """tests/e2e/conftest.py, for its image generator (one definition of the tiny data)."""
    spec = importlib.util.spec_from_file_location("_e2e_conftest", Path(__file__).parents[1] / "e2e" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_tree(tmp_path_factory) -> Path:
    """root/{train,test}/<class>/*.png: 10 train and 4 test images per class, 16x16, as tests/e2e uses."""
    import numpy as np
    from PIL import Image

    e2e = _e2e_conftest()
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    for split, n in (("train", 10), ("test", 4)):
        for kind in e2e.CLASSES:
            folder = root / split / kind
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(e2e._draw(kind, rng)).save(folder / f"{kind}_{i}.png")
    return root


def study_config(tiny_tree: Path, cache_dir: Path) -> dict[str, Any]:
    """The tiny study: test_resnet, 2 folds, 1 epoch, CPU."""
    return {
        "name": "tiny",
        "seed": 0,
        "data": {"source": {"type": "splits", "path": str(tiny_tree)}, "image_size": 16, "cache_dir": str(cache_dir)},
        "model": {"name": "test_resnet"},
        "training": {"epochs": 1, "batch_size": 8, "device": "cpu"},
        "cv": {"n_folds": 2, "val_fraction": 0.25},
    }


@dataclass
class Reference:
    """An uninterrupted run of the tiny study, and what each consumer made of it."""

    config: Path  # the study's YAML
    run_dir: Path  # the finished run folder (report included)
    predictions: list[dict[str, str]]  # `medclf predict run_dir <test images>` of the clean folder
    images: Path  # the images predicted
    results: dict[str, Any]  # reliability_harness.results(run_dir)
    hashes: dict[str, str]  # file_hashes(run_dir)
    report: dict[str, str]  # report_files(run_dir): the report, its figures and tables


@pytest.fixture(scope="session")
def reference(cli: Cli, tiny_tree: Path, tmp_path_factory) -> Reference:
    root = tmp_path_factory.mktemp("reference")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(study_config(tiny_tree, root / "cache")))
    run_dir = root / "run"
    done = cli("run", config, "--out", run_dir, "--quiet")
    assert done.returncode == 0, done
    predictions = root / "predictions.csv"
    done = cli("predict", run_dir, tiny_tree / "test", "--out", predictions, "--quiet")
    assert done.returncode == 0, done
    return Reference(config=config, run_dir=run_dir, predictions=read_csv(predictions), images=tiny_tree / "test",
                     results=results(run_dir), hashes=file_hashes(run_dir), report=report_files(run_dir))


@pytest.fixture()
def run_copy(reference: Reference, tmp_path: Path) -> Path:
    """A private copy of the reference run folder (its lock file left behind)."""
    target = tmp_path / "run"
    shutil.copytree(reference.run_dir, target, ignore=shutil.ignore_patterns(".medclf.lock"))
    return target
