"""A damaged decode-cache entry: detected, decoded again, and never trained on.

The cache entries of the reference run are copied, their pixel arrays overwritten (zeros of the same shape, or
truncated), and the study run again from them: it warns, and its results are the clean run's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from reliability_harness import assert_clean_refusal, damage, file_hashes, results


def _zero_pixels(npy: Path) -> None:
    """Overwrite an .npy's data with zeros, header kept: same shape, same dtype, same size."""
    array = np.load(npy, allow_pickle=False)
    assert array.any(), "the entry is already blank"
    raw = npy.read_bytes()
    header = len(raw) - array.nbytes
    npy.write_bytes(raw[:header] + b"\0" * array.nbytes)
    assert npy.stat().st_size == len(raw)


def _copy_cache(reference, tmp_path: Path) -> tuple[Path, Path]:
    cache = tmp_path / "cache"
    shutil.copytree(reference.config.parent / "cache", cache)
    cfg = yaml.safe_load(reference.config.read_text())
    cfg["data"]["cache_dir"] = str(cache)  # not part of the config fingerprint
    config = tmp_path / "cache.yaml"
    config.write_text(yaml.safe_dump(cfg))
    assert list(cache.glob("*.npy")), "the reference run left no cache entry"
    return cache, config


@pytest.mark.parametrize("mode", ["zeros", "truncate"])
def test_a_damaged_cache_entry_is_decoded_again_and_results_are_unchanged(mode, cli, reference, tmp_path):
    cache, config = _copy_cache(reference, tmp_path)
    for npy in cache.glob("*.npy"):
        _zero_pixels(npy) if mode == "zeros" else damage(npy, "truncate")
    done = cli("run", config, "--out", tmp_path / "run", "--quiet", no_report=True)
    assert done.returncode == 0, done
    text = " ".join(done.output.split())
    assert "checksum" in text or any(npy.name in text for npy in cache.glob("*.npy")), done
    assert results(tmp_path / "run") == reference.results


def test_a_resumed_run_never_mixes_folds_trained_on_damaged_pixels(cli, reference, run_copy, tmp_path):
    cache, config = _copy_cache(reference, tmp_path)
    for npy in cache.glob("*.npy"):
        _zero_pixels(npy)
    shutil.rmtree(run_copy / "fold-1")  # as if the run had been killed while fold 1 trained
    kept = file_hashes(run_copy / "fold-0")
    resumed = cli("run", config, "--out", run_copy, "--quiet", no_report=True)
    assert resumed.returncode == 0, resumed
    assert "checksum" in " ".join(resumed.output.split()), resumed
    assert "fold 0: already complete" in resumed.stdout
    assert file_hashes(run_copy / "fold-0") == kept
    assert results(run_copy) == reference.results  # fold 1 was trained on the true pixels


def test_resuming_a_run_folder_made_from_other_pixels_is_refused(cli, reference, run_copy):
    """A folder whose folds were trained on other decoded pixels (another decoder, a damaged cache elsewhere):
    its data fingerprint, in data.json and every fold's record, differs from this data's."""
    for path in [run_copy / "data.json", *run_copy.glob("fold-*/complete.json")]:
        record = json.loads(path.read_text())
        record["fingerprint" if path.name == "data.json" else "data_fingerprint"] = "0" * 16
        path.write_text(json.dumps(record, indent=2))
    rerecorded = file_hashes(run_copy, derived=False)
    done = cli("run", reference.config, "--out", run_copy, "--quiet", no_report=True)
    assert_clean_refusal(done, "data")
    assert file_hashes(run_copy, derived=False) == rerecorded  # nothing deleted, nothing mixed
