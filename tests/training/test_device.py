import pytest
import timm

from medclf.config import TrainingConfig
from medclf.errors import ConfigError
from medclf.training.device import has_depthwise_conv, resolve_runtime


def test_channels_last_auto_follows_depthwise_convs_on_cpu():
    assert has_depthwise_conv(timm.create_model("test_efficientnet"))
    assert not has_depthwise_conv(timm.create_model("test_resnet"))
    cfg = TrainingConfig(device="cpu")
    assert resolve_runtime(cfg, timm.create_model("test_efficientnet")).channels_last
    assert not resolve_runtime(cfg, timm.create_model("test_resnet")).channels_last
    forced = TrainingConfig(device="cpu", channels_last=True)
    assert resolve_runtime(forced, timm.create_model("test_resnet")).channels_last


def test_cpu_runs_fp32_and_half_precision_needs_cuda():
    runtime = resolve_runtime(TrainingConfig(device="cpu"), timm.create_model("test_resnet"))
    assert runtime.amp_dtype is None and runtime.describe()["precision"] == "fp32"
    with pytest.raises(ConfigError, match="training.precision 'bf16' needs a CUDA device"):
        resolve_runtime(TrainingConfig(device="cpu", precision="bf16"), timm.create_model("test_resnet"))
