"""The sweep's run store: one ordinary medclf run folder per distinct (resolved config, data) pair.

A variant's folder is ``DIR/runs/<key>/``, where the key hashes the config fingerprint
(:func:`medclf.config.config_fingerprint`, which leaves out runtime-only keys) and the data's content
fingerprint. Two variants that resolve to the same config share a folder, a re-run finds every complete fold
(its ``complete.json`` verified, :mod:`medclf.runfolder`) and skips it, and ``DIR/sweep.json`` maps the variant
names to their folders.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from medclf import runfolder
from medclf.config import Config, config_fingerprint

__all__ = ["completed_folds", "run_key", "variant_dir", "write_sweep_index"]


def run_key(config: Config, data_fingerprint: str, *, score_test: bool = True) -> str:
    """A short content hash naming a variant's run folder.

    ``score_test=False`` (search trials, which never look at the test split) gets its own key, so a trial
    folder is never mistaken for a run that scored test.
    """
    text = f"{config_fingerprint(config)}:{data_fingerprint}" + ("" if score_test else ":no-test")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def variant_dir(sweep_dir: Path, key: str) -> Path:
    return Path(sweep_dir) / "runs" / key


def completed_folds(
    run_dir: Path, folds: int | Iterable[int], *, expect: dict[str, Any] | None = None,
    log: Callable[[str], None] = lambda msg: None,
) -> list[int]:
    """Indices of the complete folds among ``folds`` (indices, or a count: 0 to n - 1); a damaged one is logged.

    Completeness is :func:`medclf.runfolder.check_fold`'s.
    """
    indices = range(folds) if isinstance(folds, int) else folds
    return runfolder.complete_folds(run_dir, indices, expect=expect, log=log)


def write_sweep_index(sweep_dir: Path, index: dict[str, Any]) -> None:
    """Write ``DIR/sweep.json``: the sweep's settings and each variant's name, overrides and run folder."""
    runfolder.write_json(Path(sweep_dir) / "sweep.json", index)
