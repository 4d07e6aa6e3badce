"""Hostile configs and run folders: nothing in them runs code, reads a file it should not, or is unpickled.

Every payload here would create a marker file if it were executed (a pickle whose ``__reduce__`` calls
``os.system``, a YAML ``!!python/object/apply`` tag); each case asserts the refusal and that the marker never
appears. A hostile sender controls every file of a run folder, so the folder cases also rewrite
``complete.json`` to match the planted file (the record is a check against accidents, not a signature).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from reliability_harness import assert_clean_refusal, file_hashes, rerecord, results


class _Payload:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _pickle(marker: Path) -> bytes:
    return pickle.dumps({"weight": _Payload(marker)})


def _torch_zip(marker: Path) -> bytes:
    """A file in torch.save's zip layout whose data.pkl is the payload (what torch.load would unpickle)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", _pickle(marker))
        archive.writestr("archive/version", "3\n")
    return buffer.getvalue()




@pytest.fixture()
def marker(tmp_path) -> Path:
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "a payload was executed"


# ---------------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("command", ["run", "validate"])
def test_a_yaml_tag_in_a_config_is_refused_not_executed(command, cli, reference, marker, tmp_path):
    text = reference.config.read_text().replace("name: tiny", f"name: !!python/object/apply:os.system ['touch {marker}']")
    assert "!!python" in text
    config = tmp_path / "hostile.yaml"
    config.write_text(text)
    args = ("run", config, "--out", tmp_path / "run", "--quiet") if command == "run" else ("validate", config)
    assert_clean_refusal(cli(*args), "hostile.yaml")
    assert not (tmp_path / "run").exists()


def test_an_npz_with_an_object_array_is_refused_not_unpickled(cli, reference, marker, tmp_path):
    npz = tmp_path / "hostile.npz"
    images = np.empty(2, dtype=object)
    images[0], images[1] = _Payload(marker), _Payload(marker)
    np.savez(npz, train_images=images, train_labels=np.array([0, 1]))
    cfg = yaml.safe_load(reference.config.read_text())
    cfg["data"]["source"] = {"type": "npz", "path": str(npz)}
    config = tmp_path / "npz.yaml"
    config.write_text(yaml.safe_dump(cfg))
    assert_clean_refusal(cli("run", config, "--out", tmp_path / "run", "--quiet"), "hostile.npz")


@pytest.mark.parametrize("key", ["checkpoint_path", "pretrained_cfg_overlay", "pretrained_cfg", "pretrained",
                                 "cache_dir"])
def test_a_loader_key_in_model_kwargs_is_refused(key, cli, reference, marker, tmp_path):
    weights = tmp_path / "weights.pth"
    weights.write_bytes(_torch_zip(marker))
    value = {"checkpoint_path": str(weights), "pretrained_cfg_overlay": {"file": str(weights)},
             "pretrained_cfg": {"file": str(weights)}, "pretrained": True, "cache_dir": str(tmp_path)}[key]
    cfg = yaml.safe_load(reference.config.read_text())
    cfg["model"]["kwargs"] = {key: value}
    config = tmp_path / "kwargs.yaml"
    config.write_text(yaml.safe_dump(cfg))
    assert_clean_refusal(cli("run", config, "--out", tmp_path / "run", "--quiet"), key)
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------------------- run folders
@pytest.mark.parametrize("payload", ["pickle", "torch-zip"])
def test_pickled_weights_in_a_received_run_folder_are_refused(payload, cli, reference, run_copy, marker, tmp_path):
    weights = run_copy / "fold-0" / "model.safetensors"
    weights.write_bytes(_pickle(marker) if payload == "pickle" else _torch_zip(marker))
    rerecord(run_copy / "fold-0")  # the record matches: only loading can tell
    done = cli("predict", run_copy, reference.images, "--out", tmp_path / "p.csv", "--quiet")
    assert_clean_refusal(done, "fold-0/model.safetensors")
    assert not (tmp_path / "p.csv").exists()


def test_pickled_weights_are_retrained_by_a_resumed_run(cli, reference, run_copy, marker):
    (run_copy / "fold-0" / "model.safetensors").write_bytes(_torch_zip(marker))  # the record now disagrees
    other = file_hashes(run_copy / "fold-1")
    resumed = cli("run", reference.config, "--out", run_copy, "--quiet", no_report=True)
    assert resumed.returncode == 0, resumed
    assert "fold-0/model.safetensors" in " ".join(resumed.output.split())
    assert results(run_copy) == reference.results and file_hashes(run_copy / "fold-1") == other


@pytest.mark.parametrize("change", ["checkpoint_path", "pretrained_cfg_overlay", "hf-hub-architecture"])
def test_a_loader_key_in_a_received_model_json_is_refused(change, cli, reference, run_copy, marker, tmp_path):
    weights = tmp_path / "weights.pth"
    weights.write_bytes(_torch_zip(marker))
    spec_path = run_copy / "fold-0" / "model.json"
    spec = json.loads(spec_path.read_text())
    if change == "hf-hub-architecture":
        spec["architecture"] = "hf-hub:someone/model"
    else:
        spec["kwargs"] = {change: str(weights) if change == "checkpoint_path" else {"file": str(weights)}}
    spec_path.write_text(json.dumps(spec))
    rerecord(run_copy / "fold-0")
    done = cli("predict", run_copy, reference.images, "--out", tmp_path / "p.csv", "--quiet")
    assert_clean_refusal(done, "fold-0/model.json", "hf-hub" if change == "hf-hub-architecture" else change)


def test_a_yaml_tag_in_a_received_config_yaml_is_never_executed(cli, reference, run_copy, marker):
    config = run_copy / "config.yaml"
    config.write_text(config.read_text().replace("name: tiny", f"name: !!python/object/apply:os.system ['touch {marker}']"))
    kept = file_hashes(run_copy, derived=False)
    done = cli("report", run_copy)
    if done.returncode != 0:
        assert_clean_refusal(done, "config.yaml")
    assert file_hashes(run_copy, derived=False) == kept


def test_a_pickled_cache_entry_is_never_unpickled(cli, reference, marker, tmp_path):
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(reference.config.parent / "cache", cache)
    for entry in cache.glob("*.npy"):
        payload = np.empty(1, dtype=object)
        payload[0] = _Payload(marker)
        np.save(entry, payload, allow_pickle=True)
    cfg = yaml.safe_load(reference.config.read_text())
    cfg["data"]["cache_dir"] = str(cache)
    config = tmp_path / "cache.yaml"
    config.write_text(yaml.safe_dump(cfg))
    done = cli("run", config, "--out", tmp_path / "run", "--quiet", no_report=True)
    assert done.returncode == 0, done  # the entry is unusable: decoded again
    assert results(tmp_path / "run") == reference.results


# ------------------------------------------------------------------------------------- pretrained weights
@pytest.mark.parametrize("weights", ["hub-offline", "truncated-file", "pickle-file"])
def test_pretrained_weights_that_cannot_load_are_one_paragraph(weights, cli, reference, marker, tmp_path):
    """timm's loaders fail in their own ways (no network, a damaged file, a pickle): each is one paragraph."""
    cfg = yaml.safe_load(reference.config.read_text())
    if weights == "hub-offline":
        cfg["model"]["pretrained"] = True
        named = "pretrained"
    else:
        path = tmp_path / "weights.safetensors"
        if weights == "truncated-file":
            source = (reference.run_dir / "fold-0" / "model.safetensors").read_bytes()
            path.write_bytes(source[: len(source) // 2])
        else:
            path = tmp_path / "weights.pth"
            path.write_bytes(_torch_zip(marker))
        cfg["model"]["pretrained"] = str(path)
        named = path.name
    config = tmp_path / "pretrained.yaml"
    config.write_text(yaml.safe_dump(cfg))
    empty_hub = {"HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch"), "HF_HUB_OFFLINE": "1"}
    done = cli("run", config, "--out", tmp_path / "fresh", "--quiet", no_report=True, env=empty_hub)
    assert_clean_refusal(done, named)
