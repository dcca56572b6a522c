"""Model families, teacher presets, and size/FLOP estimates.

The project's own MLP and CNN are sized by one number; the torchvision families
(train/zoo.py) by a width multiplier. Everything here can be asked before training:
the dashboard calls `describe(spec, input_shape, num_classes)` while a slider moves.
Params, bytes and FLOPs are measured on the built module (FLOPs by torch's
FlopCounterMode), so they hold for any nn.Module, not only for families with a formula.
"""

from __future__ import annotations

import copy
import io
import math
from functools import lru_cache

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from kd_core.config import ModelSpec
from kd_core.errors import ConfigError
from kd_core.train.zoo import WIDTH_RANGE, ZOO, build_zoo

OWN_FAMILIES = ("mlp", "cnn")
FAMILIES = (*OWN_FAMILIES, *ZOO)
MAX_SIDE = 512


class MLP(nn.Module):
    """Flatten, `depth` × (Linear → ReLU) of width `width`, then a Linear classifier."""

    def __init__(self, in_features: int, num_classes: int, width: int, depth: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        prev = in_features
        for _ in range(depth):
            layers += [nn.Linear(prev, width), nn.ReLU(inplace=True)]
            prev = width
        layers.append(nn.Linear(prev, num_classes))
        self.net = nn.Sequential(*layers)
        # Stage name -> the FX node (= module path) whose output it is: each hidden layer after
        # its ReLU; "embedding" is the classifier's input (the flattened image when depth is 0).
        self.stage_nodes = {f"hidden{i + 1}": f"net.{2 * i + 2}" for i in range(depth)}
        self.stage_nodes["embedding"] = f"net.{2 * depth}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, classes)
        return self.net(x)


class SmallCNN(nn.Module):
    """Conv blocks (3×3 conv → BN → ReLU → 2×2 max-pool), widths w, 2w, 4w…,
    then global average pooling and a Linear classifier. Any channel count and size."""

    def __init__(self, in_channels: int, side: int, num_classes: int, width: int):
        super().__init__()
        blocks = max(1, min(3, int(math.log2(max(side, 2))) - 1))  # 8px → 2 blocks, 28/32px → 3
        layers: list[nn.Module] = []
        prev = in_channels
        for i in range(blocks):
            ch = width * 2**i
            layers += [
                nn.Conv2d(prev, ch, 3, padding=1, bias=False),
                nn.BatchNorm2d(ch),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            prev = ch
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(prev, num_classes))
        # Stage name -> FX node: each block's pooled (C, H, W) output; "embedding" the globally
        # pooled, flattened features the classifier reads.
        self.stage_nodes = {f"stage{i + 1}": f"features.{4 * i + 3}" for i in range(blocks)}
        self.stage_nodes["embedding"] = "head.1"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def validate_spec(spec: ModelSpec) -> None:
    if spec.family not in FAMILIES:
        raise ConfigError(f"unknown model family '{spec.family}'; choose one of {', '.join(FAMILIES)}.")
    if not 1 <= spec.size <= 8192:
        raise ConfigError(f"model size {spec.size} is out of range (1 to 8192).")
    if spec.family == "mlp" and not 0 <= spec.depth <= 8:
        raise ConfigError(f"MLP depth {spec.depth} is out of range (0 to 8).")
    lo, hi = WIDTH_RANGE
    if spec.family in OWN_FAMILIES and spec.width != 1.0:
        raise ConfigError(
            f"width {spec.width:g} sizes the torchvision families only; size the {spec.family} with its size."
        )
    if spec.family in ZOO and not (math.isfinite(spec.width) and lo <= spec.width <= hi):
        raise ConfigError(f"width multiplier {spec.width:g} is out of range ({lo:g} to {hi:g}).")


def build_model(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    validate_spec(spec)
    c, h, w = input_shape
    if spec.family in ZOO:
        if min(h, w) < 8 or max(h, w) > MAX_SIDE:
            raise ConfigError(f"{spec.family} needs images of 8 to {MAX_SIDE} px; these are {h}×{w}.")
        return build_zoo(spec.family, spec.width, tuple(input_shape), num_classes)
    if spec.family == "mlp":
        return MLP(c * h * w, num_classes, spec.size, spec.depth)
    return SmallCNN(c, min(h, w), num_classes, spec.size)


def param_count(model: nn.Module) -> int:
    """Trainable and frozen parameters; a black-box teacher (train/blackbox.py) has none of
    its own as a module and reports the count read from its file."""
    reported = getattr(model, "reported_params", None)
    return int(reported) if reported is not None else sum(p.numel() for p in model.parameters())


def serialized_bytes(model: nn.Module) -> int:
    """Size of the state_dict as `torch.save` writes it (a black-box teacher: its file's size)."""
    reported = getattr(model, "reported_bytes", None)
    if reported is not None:
        return int(reported)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def flops_per_sample(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Forward FLOPs for one sample (a multiply-add counts 2), by torch's FlopCounterMode.

    Counted on a copy on the meta device: shapes propagate, nothing is computed, so a
    ResNet-50 is counted in a fraction of a second even on a busy machine."""
    meta = copy.deepcopy(model).to("meta").eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(torch.zeros(1, *input_shape, device="meta"))
    return int(counter.get_total_flops())


@lru_cache(maxsize=256)
def describe(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> dict:
    """Params, forward FLOPs per sample and serialized bytes, before any training."""
    model = build_model(spec, tuple(input_shape), num_classes)
    return {
        "family": spec.family,
        "size": spec.size,
        "depth": spec.depth,
        "width": spec.width,
        "label": spec.label(),
        "params": param_count(model),
        "flops": flops_per_sample(model, tuple(input_shape)),
        "bytes": serialized_bytes(model),
    }


# A strong default teacher for each dataset, and a student that is much smaller.
TEACHER_PRESETS: dict[str, ModelSpec] = {
    "digits": ModelSpec("mlp", 512, 2),
    "mnist": ModelSpec("mlp", 1200, 2),  # Hinton et al. 2015
    "fashion-mnist": ModelSpec("mlp", 1024, 2),
    "cifar10": ModelSpec("cnn", 64),
    "folder": ModelSpec("cnn", 32),
}
STUDENT_PRESETS: dict[str, ModelSpec] = {
    "digits": ModelSpec("mlp", 32, 1),
    "mnist": ModelSpec("mlp", 64, 1),
    "fashion-mnist": ModelSpec("mlp", 64, 1),
    "cifar10": ModelSpec("cnn", 8),
    "folder": ModelSpec("cnn", 8),
}


def preset_key(dataset: str) -> str:
    return "folder" if dataset.startswith("folder:") else dataset


def teacher_preset(dataset: str) -> ModelSpec:
    return TEACHER_PRESETS.get(preset_key(dataset), ModelSpec("mlp", 512, 2))


def student_preset(dataset: str) -> ModelSpec:
    return STUDENT_PRESETS.get(preset_key(dataset), ModelSpec("mlp", 32, 1))
