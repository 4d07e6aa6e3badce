"""Where and how tensors run: device, autocast precision, memory format."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medclf.config import TrainingConfig
from medclf.errors import ConfigError

__all__ = ["CPU_BF16_FEATURES", "PREDICTION_PRECISIONS", "Runtime", "compiler_problem", "cpu_bf16_supported",
           "cpu_precision_problem", "has_depthwise_conv", "inference_runtime", "resolve_runtime", "torch_threads"]

# The CPU instructions (torch.cpu.get_capabilities() names: x86 AVX-512 BF16 and AMX, Arm's BF16 extension) that
# run bf16 matrix products natively; without one, CPU bf16 autocast is emulated by conversions, slower than fp32.
CPU_BF16_FEATURES = ("avx512_bf16", "amx_bf16", "bf16")
PREDICTION_PRECISIONS = ("fp32", "bf16")  # what inference_runtime runs: fp32, or bf16 autocast


@contextmanager
def torch_threads(n_threads: int | None) -> Iterator[None]:
    """Run the block on ``n_threads`` torch threads (``None`` or 0: leave them), then restore the previous count.

    ``torch.set_num_threads`` is process-wide: a fit that set it for good would leave every later fit, prediction
    or test in the process on that many threads (slower, and with different float sums).
    """
    before = torch.get_num_threads()
    if n_threads:
        torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@dataclass(frozen=True)
class Runtime:
    """The resolved execution settings of one training run (or of a prediction)."""

    device: torch.device
    amp_dtype: torch.dtype | None  # autocast dtype (bf16/fp16 on CUDA, bf16 on a CPU with bf16 units), None: fp32
    channels_last: bool

    def autocast(self) -> AbstractContextManager:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def place(self, model: nn.Module) -> nn.Module:
        """Move ``model`` to the device, in channels-last format when asked (a :class:`Classifier` keeps its
        input in that format too); in place, returned for chaining."""
        model.to(self.device)
        if self.channels_last and hasattr(model, "to_channels_last"):
            model.to_channels_last()
        return model

    def describe(self) -> dict[str, str | bool]:
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        return {
            "device": str(self.device),
            "device_name": name,
            "precision": str(self.amp_dtype).removeprefix("torch.") if self.amp_dtype else "fp32",
            "channels_last": self.channels_last,
        }


def has_depthwise_conv(model: nn.Module) -> bool:
    """True when the model has depthwise convolutions (EfficientNet, MobileNet...)."""
    return any(
        isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels for m in model.modules()
    )


def _cpu_capabilities() -> dict[str, Any]:
    get = getattr(torch.cpu, "get_capabilities", None)  # public in torch 2.14; older releases: the private checks
    if get is not None:
        return dict(get())
    # every CPU with AMX tiles has AMX-BF16 (Sapphire Rapids on)
    return {"avx512_bf16": torch.cpu._is_avx512_bf16_supported(), "amx_bf16": torch.cpu._is_amx_tile_supported()}


def cpu_bf16_supported() -> bool:
    """True when this CPU has native bf16 instructions (:data:`CPU_BF16_FEATURES`)."""
    capabilities = _cpu_capabilities()
    return any(capabilities.get(name, False) for name in CPU_BF16_FEATURES)


def cpu_precision_problem(precision: str) -> str | None:
    """Why ``precision`` cannot run on this CPU, as a sentence starting with the value; None when it can."""
    if precision == "fp16":
        return ("'fp16' needs a CUDA device (CPUs have no fast fp16 autocast); on the CPU use 'fp32', or 'bf16' on "
                "a CPU with AVX512-BF16 or AMX-BF16 instructions")
    if precision == "bf16" and not cpu_bf16_supported():
        name = _cpu_capabilities().get("cpu_name") or "this CPU"
        return (f"'bf16' on the CPU needs AVX512-BF16 or AMX-BF16 instructions (Arm: BF16), which {name} lacks "
                "(bf16 would be emulated, slower than fp32); use 'fp32' (or 'auto': fp32 on the CPU), or a CUDA "
                "device")
    return None


def compiler_problem() -> str | None:
    """Why ``torch.compile`` cannot build kernels here (no C++ compiler on PATH), as a sentence; None when it can.

    Inductor compiles C++ for CPU kernels (and Triton a C launcher for GPU ones) with ``$CXX``, else ``g++``
    (``clang++`` on macOS); without it a compiled fit fails at its first step, after the data is read. Windows
    looks for MSVC's ``cl`` its own way and is not checked here.
    """
    if sys.platform == "win32":
        return None
    wanted = os.environ.get("CXX", "clang++" if sys.platform == "darwin" else "g++")
    program = (shlex.split(wanted) or [""])[0]  # CXX may carry a wrapper or flags: "ccache g++"
    if shutil.which(program):
        return None
    source = "$CXX" if "CXX" in os.environ else "torch's default"
    return (f"true needs a C++ compiler to build torch.compile's kernels, and {program!r} ({source}) is not on "
            "PATH; install one (g++ or clang++, or point CXX at it), or set training.compile: false")


def _auto_channels_last(model: nn.Module, device: torch.device) -> bool:
    """channels_last pays off on CUDA (tensor cores want NHWC) and, on CPU, for depthwise-convolution models
    (measured: EfficientNet-Lite0 trains 1.58x faster at 128 px); plain ResNets gain nothing on CPU."""
    return device.type == "cuda" or has_depthwise_conv(model)


def resolve_runtime(cfg: TrainingConfig, model: nn.Module) -> Runtime:
    """Pick device, precision and memory format from the config's ``auto`` values.

    ``precision: auto`` is bf16 (or fp16) autocast on CUDA and fp32 on the CPU; ``bf16`` on the CPU runs only on
    a CPU with bf16 instructions (:func:`cpu_bf16_supported`).
    """
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("training.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'.")
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    precision = cfg.precision
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if use_cuda else "fp32"
    problem = None if use_cuda else cpu_precision_problem(precision)
    if problem:
        raise ConfigError(f"training.precision {problem}.")
    amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    channels_last = cfg.channels_last
    if channels_last == "auto":
        channels_last = _auto_channels_last(model, device)
    return Runtime(device=device, amp_dtype=amp, channels_last=bool(channels_last))


def inference_runtime(model: nn.Module, device: torch.device, *, precision: str = "fp32") -> Runtime:
    """How ``model`` predicts on ``device``: channels-last, on the CPU too, and fp32 unless ``precision="bf16"``
    asks for bf16 autocast.

    Prediction is faster channels-last for every model measured on this project's CPU, the plain ResNets included
    (docs/benchmarks.md "Inference speed": ResNet-18 at 224 px 1.2-1.4x, the small ResNet at 28 px 1.5-2.3x,
    EfficientNet-Lite0 1.2x), although training a plain ResNet gains nothing from it (``channels_last: auto``).

    Raises:
        ConfigError: ``precision`` is not fp32 or bf16, or ``device`` has no bf16 support.
    """
    if precision not in PREDICTION_PRECISIONS:
        raise ConfigError(f"the prediction precision must be 'fp32' or 'bf16', got {precision!r}.")
    if precision == "bf16":
        if device.type == "cpu" and (problem := cpu_precision_problem("bf16")):
            raise ConfigError(f"prediction precision {problem}.")
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError(f"prediction precision 'bf16' needs a CUDA device with bf16 support, which "
                              f"{torch.cuda.get_device_name(device)} lacks; use 'fp32'.")
    return Runtime(device=device, amp_dtype=torch.bfloat16 if precision == "bf16" else None, channels_last=True)
