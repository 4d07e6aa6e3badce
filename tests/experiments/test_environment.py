"""run_environment: the versions and device a study records in summary.json."""

from __future__ import annotations

import platform
from importlib import metadata

import torch

from medclf import __version__
from medclf.experiments.environment import run_environment


def test_run_environment_records_versions_and_the_device():
    env = run_environment({"device": "cuda:0", "device_name": "NVIDIA H200", "precision": "bf16"})
    assert list(env) == ["python", "platform", "torch", "torchvision", "timm", "numpy", "scikit-learn", "medclf",
                         "cuda", "device"]
    assert env["python"] == platform.python_version() and env["medclf"] == __version__
    assert env["torch"] == metadata.version("torch") and env["scikit-learn"] == metadata.version("scikit-learn")
    assert env["timm"] == metadata.version("timm") and env["cuda"] == torch.version.cuda
    assert env["device"] == "cuda:0 (NVIDIA H200)"
    assert run_environment({"device": "cpu", "device_name": "cpu"})["device"] == "cpu"
