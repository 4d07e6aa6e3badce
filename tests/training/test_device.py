import pytest
import timm
import torch

from medclf.config import ModelConfig, TrainingConfig
from medclf.errors import ConfigError
from medclf.models import build_model
from medclf.training import device
from medclf.training.device import cpu_bf16_supported, has_depthwise_conv, inference_runtime, resolve_runtime


@pytest.fixture
def bf16_cpu(monkeypatch):
    """A CPU with bf16 instructions (torch emulates bf16 autocast on any CPU, so the numbers are real)."""
    monkeypatch.setattr(device, "_cpu_capabilities", lambda: {"cpu_name": "Test CPU", "avx512_bf16": True})


@pytest.fixture
def plain_cpu(monkeypatch):
    monkeypatch.setattr(device, "_cpu_capabilities", lambda: {"cpu_name": "Test CPU", "avx2": True})


def test_channels_last_auto_follows_depthwise_convs_on_cpu():
    assert has_depthwise_conv(timm.create_model("test_efficientnet"))
    assert not has_depthwise_conv(timm.create_model("test_resnet"))
    cfg = TrainingConfig(device="cpu")
    assert resolve_runtime(cfg, timm.create_model("test_efficientnet")).channels_last
    assert not resolve_runtime(cfg, timm.create_model("test_resnet")).channels_last
    forced = TrainingConfig(device="cpu", channels_last=True)
    assert resolve_runtime(forced, timm.create_model("test_resnet")).channels_last


def test_cpu_runs_fp32_on_auto_and_fp16_needs_cuda(bf16_cpu):
    runtime = resolve_runtime(TrainingConfig(device="cpu"), timm.create_model("test_resnet"))
    assert runtime.amp_dtype is None and runtime.describe()["precision"] == "fp32"  # auto stays fp32 on CPU
    with pytest.raises(ConfigError, match=r"^training.precision 'fp16' needs a CUDA device .* on the CPU use 'fp32', "
                                          r"or 'bf16' on a CPU with AVX512-BF16 or AMX-BF16 instructions\.$"):
        resolve_runtime(TrainingConfig(device="cpu", precision="fp16"), timm.create_model("test_resnet"))


def test_bf16_on_a_cpu_with_bf16_instructions_is_autocast(bf16_cpu):
    runtime = resolve_runtime(TrainingConfig(device="cpu", precision="bf16"), timm.create_model("test_resnet"))
    assert runtime.amp_dtype == torch.bfloat16 and runtime.describe()["precision"] == "bfloat16"
    with runtime.autocast():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_bf16_on_a_cpu_without_bf16_instructions_is_one_paragraph_naming_them(plain_cpu):
    with pytest.raises(ConfigError) as error:
        resolve_runtime(TrainingConfig(device="cpu", precision="bf16"), timm.create_model("test_resnet"))
    text = str(error.value)
    assert text.startswith("training.precision 'bf16' on the CPU needs AVX512-BF16 or AMX-BF16 instructions (Arm: "
                           "BF16), which Test CPU lacks (bf16 would be emulated, slower than fp32); use 'fp32'")
    assert "\n" not in text


@pytest.mark.parametrize(("capabilities", "supported"), [
    ({"avx512_bf16": True}, True), ({"amx_bf16": True}, True), ({"bf16": True}, True),
    ({"avx512_f": True, "avx2": True}, False), ({}, False),
])
def test_cpu_bf16_support_reads_the_cpus_instructions(monkeypatch, capabilities, supported):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    assert cpu_bf16_supported() is supported


def test_inference_runtime_is_channels_last_for_every_model_and_fp32_by_default(bf16_cpu):
    cpu = torch.device("cpu")
    assert inference_runtime(timm.create_model("test_efficientnet"), cpu).channels_last
    plain = inference_runtime(timm.create_model("test_resnet"), cpu)  # training keeps a plain ResNet contiguous
    assert plain.channels_last and plain.amp_dtype is None
    assert not resolve_runtime(TrainingConfig(device="cpu"), timm.create_model("test_resnet")).channels_last
    assert inference_runtime(timm.create_model("test_resnet"), torch.device("cuda")).channels_last
    bf16 = inference_runtime(timm.create_model("test_resnet"), cpu, precision="bf16")
    assert bf16.amp_dtype == torch.bfloat16
    with pytest.raises(ConfigError, match=r"the prediction precision must be 'fp32' or 'bf16', got 'fp16'"):
        inference_runtime(timm.create_model("test_resnet"), cpu, precision="fp16")


def test_inference_runtime_refuses_bf16_on_a_cpu_without_it(plain_cpu):
    with pytest.raises(ConfigError, match=r"^prediction precision 'bf16' on the CPU needs AVX512-BF16 or AMX-BF16 "):
        inference_runtime(timm.create_model("test_resnet"), torch.device("cpu"), precision="bf16")


def test_place_moves_a_classifier_into_channels_last():
    model = build_model(ModelConfig(name="test_efficientnet"), in_chans=1, n_classes=2)
    runtime = inference_runtime(model, torch.device("cpu"))
    assert runtime.place(model) is model and model.memory_format == torch.channels_last
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_compile_needs_the_cxx_that_torch_would_use(monkeypatch):
    import sys

    from medclf.training.device import compiler_problem

    monkeypatch.setenv("CXX", f"{sys.executable} -O2")  # an executable on PATH, with a flag as CXX may carry
    assert compiler_problem() is None
    monkeypatch.setenv("CXX", "medclf-no-such-c++ -O2")
    assert compiler_problem() == (
        "true needs a C++ compiler to build torch.compile's kernels, and 'medclf-no-such-c++' ($CXX) is not on PATH; "
        "install one (g++ or clang++, or point CXX at it), or set training.compile: false")
