"""What a compress study searches over, and how one Optuna trial becomes a candidate student.

The axes: student family, width and depth; temperature T and λ; float32 or int8; and, when the
space names methods, the distillation method (kd_core.methods) and its main hyperparameter
(`method_axes` builds that axis from the registry: each method's main weight, searched on a log
scale from a quarter to four times its paper's default).

Sampling is Optuna's: `suggest` only names the axes and their ranges. Widths are searched on a
log scale (8 → 16 matters as much as 256 → 512), T on a log scale, λ linearly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kd_core.config import DistillConfig, MethodSpec, ModelSpec
from kd_core.errors import ConfigError
from kd_core.methods import METHODS, param_info
from kd_core.train.models import FAMILIES, validate_spec

PRECISIONS = ("float32", "int8")
# Each method's main hyperparameter: the weight its paper tunes (logit_std and kd have none of their
# own beyond the global T and λ, which are axes already).
MAIN_PARAMS = {"dkd": "beta", "dist": "beta", "fitnets": "coef", "at": "beta", "sp": "gamma", "rkd": "distance"}


@dataclass(frozen=True)
class MethodAxis:
    """One distillation method the search may pick, and the range of its main hyperparameter
    ("" when none is searched)."""

    name: str
    param: str = ""
    low: float = 0.0
    high: float = 0.0
    log: bool = False


@dataclass(frozen=True)
class SearchSpace:
    """Ranges are inclusive (low, high) pairs; a pair with low == high fixes the axis."""

    families: tuple[str, ...] = ("mlp",)
    mlp_widths: tuple[int, int] = (8, 512)
    mlp_depths: tuple[int, int] = (1, 2)
    cnn_widths: tuple[int, int] = (4, 32)
    temperatures: tuple[float, float] = (1.0, 8.0)
    alphas: tuple[float, float] = (0.1, 0.95)
    precisions: tuple[str, ...] = PRECISIONS
    methods: tuple[MethodAxis, ...] = ()  # empty: no method axis (the engine's default, KD)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> SearchSpace:
        pairs = {k: tuple(v) for k, v in d.items() if k not in ("families", "precisions", "methods")}
        return SearchSpace(
            families=tuple(d.get("families", ("mlp",))),
            precisions=tuple(d.get("precisions", PRECISIONS)),
            methods=tuple(MethodAxis(**m) for m in d.get("methods", ())),
            **pairs,
        )


@dataclass(frozen=True)
class Candidate:
    """One trial's student design and distillation settings."""

    spec: ModelSpec
    temperature: float
    alpha: float
    precision: str = "float32"
    method: str = ""  # "" when the space has no method axis
    method_params: tuple[tuple[str, float], ...] = field(default=())

    @property
    def quantize(self) -> str | None:
        """What kd_core.deploy calls the precision: None (float32) or "int8"."""
        return None if self.precision == "float32" else self.precision

    @property
    def arch_key(self) -> tuple:
        """What the latency depends on: the same key, the same deployed model."""
        return (self.spec.family, self.spec.size, self.spec.depth, self.precision)

    def label(self) -> str:
        method = f"{self.method} · " if self.method else ""
        return f"{self.spec.label()} · {method}T={self.temperature:.2g} λ={self.alpha:.2f} · {self.precision}"

    def distill(self, cache_teacher_logits: bool = True) -> DistillConfig:
        base = DistillConfig(self.temperature, self.alpha, cache_teacher_logits)
        if not self.method:
            return base
        return DistillConfig(
            self.temperature, self.alpha, cache_teacher_logits, (MethodSpec(self.method, 1.0, self.method_params),)
        )


def method_axes(names: tuple[str, ...] | list[str]) -> tuple[MethodAxis, ...]:
    """The method axis for these registry names: each with its main hyperparameter (MAIN_PARAMS),
    from a quarter to four times its default, on a log scale; ConfigError for an unknown name."""
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ConfigError(f"unknown distillation method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}.")
    out = []
    for name in names:
        param = MAIN_PARAMS.get(name, "")
        default = next((p.default for p in param_info(METHODS[name]) if p.name == param), 0.0)
        out.append(MethodAxis(name, param, default / 4, default * 4, True) if param else MethodAxis(name))
    return tuple(out)


def _check_pair(name: str, pair: tuple, low_bound: float) -> None:
    if len(pair) != 2 or pair[0] > pair[1] or pair[0] < low_bound:
        raise ConfigError(f"search range {name} must be (low, high) with {low_bound:g} <= low <= high, got {pair}.")


def validate_space(space: SearchSpace) -> None:
    """Refuse a space before anything is stored: unknown names, empty or inverted ranges."""
    unknown = [f for f in space.families if f not in FAMILIES]
    if not space.families or unknown:
        raise ConfigError(f"student families: choose from {', '.join(FAMILIES)} (got {', '.join(space.families)}).")
    bad = [p for p in space.precisions if p not in PRECISIONS]
    if not space.precisions or bad:
        raise ConfigError(f"precisions: choose from {', '.join(PRECISIONS)} (got {', '.join(space.precisions)}).")
    _check_pair("mlp_widths", space.mlp_widths, 1)
    _check_pair("mlp_depths", space.mlp_depths, 0)
    _check_pair("cnn_widths", space.cnn_widths, 1)
    _check_pair("temperatures", space.temperatures, 1e-6)
    _check_pair("alphas", space.alphas, 0)
    if space.alphas[1] > 1:
        raise ConfigError(f"λ must stay within [0, 1], got the range {space.alphas}.")
    for spec in smallest_specs(space) + smallest_specs(space, end=1):
        validate_spec(spec)
    for axis in space.methods:
        _check_method(axis)


def _check_method(axis: MethodAxis) -> None:
    if axis.name not in METHODS:
        raise ConfigError(f"unknown distillation method '{axis.name}'; choose from {', '.join(METHODS)}.")
    if not axis.param:
        return
    kinds = {p.name: p.type for p in param_info(METHODS[axis.name])}
    if kinds.get(axis.param) != "float":
        raise ConfigError(f"method '{axis.name}' has no numeric parameter '{axis.param}' to search.")
    _check_pair(f"{axis.name}.{axis.param}", (axis.low, axis.high), 1e-12 if axis.log else 0)


def smallest_specs(space: SearchSpace, end: int = 0) -> list[ModelSpec]:
    """The cheapest model of each family in the space (end=1: the largest): no other candidate
    of the family undercuts (exceeds) it in latency and size."""
    out = []
    if "mlp" in space.families:
        out.append(ModelSpec("mlp", space.mlp_widths[end], space.mlp_depths[end]))
    if "cnn" in space.families:
        out.append(ModelSpec("cnn", space.cnn_widths[end]))
    return out


def suggest(trial, space: SearchSpace) -> Candidate:
    """Ask Optuna's trial for a candidate: every axis named here, sampled by Optuna's sampler."""
    family = trial.suggest_categorical("family", list(space.families))
    if family == "mlp":
        width = trial.suggest_int("mlp_width", *space.mlp_widths, log=True)
        spec = ModelSpec("mlp", width, trial.suggest_int("mlp_depth", *space.mlp_depths))
    else:
        spec = ModelSpec("cnn", trial.suggest_int("cnn_width", *space.cnn_widths, log=True))
    temperature = trial.suggest_float("temperature", *space.temperatures, log=True)
    alpha = trial.suggest_float("alpha", *space.alphas)
    precision = trial.suggest_categorical("precision", list(space.precisions))
    method, params = suggest_method(trial, space)
    return Candidate(spec, temperature, alpha, precision, method, params)


def suggest_method(trial, space: SearchSpace) -> tuple[str, tuple[tuple[str, float], ...]]:
    """The method axis: ("", ()) without one; else a method and its main hyperparameter."""
    if not space.methods:
        return "", ()
    by_name = {m.name: m for m in space.methods}
    axis = by_name[trial.suggest_categorical("method", list(by_name))]
    if not axis.param:
        return axis.name, ()
    value = trial.suggest_float(f"{axis.name}.{axis.param}", axis.low, axis.high, log=axis.log)
    return axis.name, ((axis.param, value),)
