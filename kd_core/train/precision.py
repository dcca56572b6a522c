"""Numeric precision and memory format of a training run, decided at run time.

`TrainConfig.precision` is fp32, bf16 or auto. bf16 means autocast: the weights, the
optimizer state and every loss stay float32; matmuls and convolutions run in bfloat16.
`auto` takes bf16 only where the device does bf16 natively (a CUDA GPU that reports it, or
a CPU with AVX512-BF16 / AMX) and the step is large enough for it to pay; everything else
is fp32, so a CPU without bf16 units is never slowed.

Convolutional families also train in channels-last memory format, which oneDNN (CPU) and
cuDNN prefer for convolutions.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from kd_core.methods import Outputs

PRECISIONS = ("fp32", "bf16", "auto")
# CPU flags (/proc/cpuinfo) of native bfloat16 arithmetic: AVX512-BF16 dot products, AMX tiles.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# Below this many training FLOPs per step (3 × forward × batch), bf16 autocast did not pay on
# an AMD EPYC with AVX512-BF16 (2 cores, batch 64, one step each, under load): MLP 784-512-512
# (2.6e8) 1.01×, CNN w8 on 28 px (2.0e8) 0.89×; above it, MLP 784-1024-1024 (7.2e8) 1.23×,
# CNN w16 (7.4e8) 1.6× and CNN w32 (2.9e9) 1.5× over fp32 channels-last (benchmarks/bench_precision.py).
AUTO_BF16_MIN_STEP_FLOPS = 5e8
# Families whose cost is convolutions on (B, C, H, W) tensors: channels-last paid 1.1–1.7× per
# step for the CNN here (w8 to w32 on 28 px).
CHANNELS_LAST_FAMILIES_EXCLUDED = ("mlp",)


@dataclass(frozen=True)
class PrecisionChoice:
    """What a run trains in, and why (stored with the run's figures)."""

    dtype: str  # fp32 | bf16
    reason: str

    @property
    def bf16(self) -> bool:
        return self.dtype == "bf16"

    def describe(self) -> str:
        return f"{self.dtype} ({self.reason})"


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is no such file)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def bf16_support(device: torch.device) -> tuple[bool, str]:
    """(native bf16 on `device`, in words). CPU: the flags; where /proc/cpuinfo is missing,
    torch's own capability string (it names AMX when oneDNN found it)."""
    if device.type == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return ok, f"{torch.cuda.get_device_name(device) if ok else 'this GPU'} {'does' if ok else 'lacks'} bf16"
    flags = cpu_flags()
    found = [f for f in BF16_CPU_FLAGS if f in flags]
    if not flags and "AMX" in torch.backends.cpu.get_cpu_capability():
        found = ["amx (torch)"]
    return bool(found), f"CPU has {', '.join(found)}" if found else "CPU has no AVX512-BF16 or AMX"


def resolve_precision(precision: str, device: torch.device, step_flops: float) -> PrecisionChoice:
    """fp32 or bf16 for a run asking for `precision` (validated beforehand) on `device`,
    whose training step costs `step_flops`."""
    if precision == "fp32":
        return PrecisionChoice("fp32", "asked for")
    if precision == "bf16":
        return PrecisionChoice("bf16", "asked for")
    native, why = bf16_support(device)
    if not native:
        return PrecisionChoice("fp32", f"auto: {why}")
    if step_flops < AUTO_BF16_MIN_STEP_FLOPS:
        return PrecisionChoice(
            "fp32", f"auto: {step_flops:.2g} FLOPs per step, below the {AUTO_BF16_MIN_STEP_FLOPS:.0e} where bf16 pays"
        )
    return PrecisionChoice("bf16", f"auto: {why}, {step_flops:.2g} FLOPs per step")


def autocast(device: torch.device, choice: PrecisionChoice) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` when chosen, else nothing (not even autocast's own
    enter and exit, which a small MLP's step would pay every time)."""
    if choice.bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def as_float(out: Outputs) -> Outputs:
    """Logits and features as float32 (a no-op for float32 ones): what every loss reads,
    and what the teacher-target cache keeps, whatever precision produced them."""
    return Outputs(out.logits.float(), {k: v.float() for k, v in out.features.items()})


def wants_channels_last(family: str, input_ndim: int = 3) -> bool:
    """Whether a model of this family trains in channels-last: conv families on image input."""
    return family not in CHANNELS_LAST_FAMILIES_EXCLUDED and input_ndim == 3


def to_channels_last(model: nn.Module) -> nn.Module:
    """The model's 4-D weights in channels-last (in place; 1-D and 2-D ones are unaffected)."""
    return model.to(memory_format=torch.channels_last)
