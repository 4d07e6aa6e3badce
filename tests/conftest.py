"""Suite-wide settings (no test may reach a model hub: the suite runs offline) and the tiny data and finished runs
that end-to-end and inference tests share: each is made once per session, so no test trains a run only to read it.
"""

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MEDCLF_CACHE", os.path.join(os.path.dirname(__file__), "..", ".medclf-cache", "tests"))

sys.path.insert(0, os.path.dirname(__file__))  # shared helper modules of the tests (dicom_files)
sys.path.append(os.path.join(os.path.dirname(__file__), "reliability"))  # reliability_harness (the ``cli``)

from tiny_data import CLASSES, _draw, tiny_study  # noqa: E402  (after the sys.path line above)


@pytest.fixture(autouse=True)
def _torch_threads_unchanged():
    """Fail a test that leaves torch on another thread count (process-wide): every later test would run on it,
    slower and with other float sums (resume and reproducibility tests compare those to the bit)."""
    import torch

    before = torch.get_num_threads()
    yield
    after = torch.get_num_threads()
    if after != before:
        torch.set_num_threads(before)
        pytest.fail(f"the test left torch on {after} thread(s), not {before}", pytrace=False)


@pytest.fixture(scope="session")
def tiny_splits(tmp_path_factory) -> Path:
    """root/{train,test}/<class>/*.png: 10 train and 4 test images per class, 16x16 grayscale."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    for split, n in (("train", 10), ("test", 4)):
        for kind in CLASSES:
            folder = root / split / kind
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(_draw(kind, rng)).save(folder / f"{kind}_{i}.png")
    (root / "train" / ".DS_Store").write_bytes(b"junk")
    return root


@pytest.fixture(scope="session")
def cli(tmp_path_factory):
    """``cli("run", config, "--out", out)``: a real ``medclf`` command in its own process, forked from one warm
    server per session (tests/reliability/reliability_harness.py ``Cli``: its own argv, environment, exit code
    and output files, without paying the ~10 s of importing torch and timm each time)."""
    from reliability_harness import Cli

    runner = Cli(tmp_path_factory.mktemp("cli"))
    runner.env["COLUMNS"] = "400"  # rich does not fold a long path in a message
    yield runner
    runner.close()


def _train(config: dict, root: Path, cli, *, report: bool = True) -> Path:
    """Run the real ``medclf run`` on ``config`` into ``root/run`` (through ``cli``) and return the finished run
    folder; ``report=False`` leaves the report out (most of a tiny run's time) for tests that do not read it.

    What the command printed is kept beside the folder, in ``root/run.stdout`` (``run.parent / "run.stdout"``).
    """
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = root / "run"
    # on the test process's thread count: tests that resume or retrain the run in process compare to the bit
    threads = {"MEDCLF_TEST_TORCH_THREADS": str(__import__("torch").get_num_threads())}
    done = cli("run", path, "--out", out, "--quiet", no_report=not report, env=threads)
    assert done.returncode == 0, done
    (root / "run.stdout").write_text(done.stdout)
    return out


@pytest.fixture()
def train(cli):
    """``train(config, root, report=True)``: :func:`_train` through the session's ``cli``."""
    return lambda config, root, *, report=True: _train(config, root, cli, report=report)


@pytest.fixture(scope="session")
def trained_run(tiny_splits: Path, tmp_path_factory, cli) -> Path:
    """A finished three-class run (2 folds, test split) of ``tiny_config``'s study, trained once per session.

    Read it, never write into it: a test that changes a run folder works on a copy (``copy_run``).
    """
    root = tmp_path_factory.mktemp("trained")
    return _train(tiny_study(tiny_splits, root / "cache"), root, cli)


@pytest.fixture(scope="session")
def binary_splits(tiny_splits: Path, tmp_path_factory) -> Path:
    """The tiny tree with two classes, ``abnormal`` (circles) and ``normal`` (blanks), so the positive class
    (by default the second in sorted order) is *normal* unless a config says otherwise."""
    import shutil

    root = tmp_path_factory.mktemp("binary")
    for split in ("train", "test"):
        for source, name in (("circle", "abnormal"), ("blank", "normal")):
            shutil.copytree(tiny_splits / split / source, root / split / name)
    return root


@pytest.fixture(scope="session")
def binary_run(binary_splits: Path, tmp_path_factory, cli) -> Path:
    """A finished two-class run (abnormal/normal, 2 folds, test split), trained once per session; read only."""
    root = tmp_path_factory.mktemp("binary_run")
    return _train(tiny_study(binary_splits, root / "cache"), root, cli)


@pytest.fixture()
def figures_not_drawn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reports written in this test build each figure but do not draw it (see figure_stub.py): for tests of a
    report's tables, text and files, whose figures other tests draw for real."""
    from figure_stub import skip_drawing

    skip_drawing(monkeypatch)


@pytest.fixture()
def copy_run(tmp_path: Path):
    """``copy_run(run)``: a private copy of a session run folder that a test may change."""
    import shutil

    def copy(run: Path) -> Path:
        target = tmp_path / "run-copy"
        shutil.copytree(run, target, ignore=shutil.ignore_patterns(".medclf.lock"))
        return target

    return copy
