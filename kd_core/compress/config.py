"""A compress study's frozen description: teacher, data, per-trial training budget, target runtime
and batch, the goal, the search space, Optuna's sampler and pruner, and the study's budget.

Saved with the study (the run store's `studies` table), so that a study resumes as it began.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from kd_core.compress.space import SearchSpace, validate_space
from kd_core.config import DataConfig, DistillConfig, RunConfig, TrainConfig
from kd_core.deploy.runtimes import RUNTIMES
from kd_core.errors import ConfigError
from kd_core.train.engine import validate_config

MODES = ("constrained", "pareto")
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "none")


@dataclass(frozen=True)
class Goal:
    """What a student must meet; None leaves a bound out.

    max_drop: validation accuracy at most this many percentage points below the teacher's.
    max_latency_ms / min_speedup: latency under the target runtime and batch at most this, or
    at least this many times below the teacher's (both: the tighter one).
    max_size_mb: the deployed file (ONNX, TorchScript or state dict, int8 where chosen)."""

    max_drop: float | None = 1.0
    max_latency_ms: float | None = None
    min_speedup: float | None = None
    max_size_mb: float | None = None

    def latency_budget(self, teacher_ms: float) -> float | None:
        """The latency bound in ms, given the teacher's latency under the same runtime and batch."""
        bounds = [b for b in (self.max_latency_ms, teacher_ms / self.min_speedup if self.min_speedup else None) if b]
        return min(bounds) if bounds else None

    def text(self) -> str:
        parts = []
        if self.max_drop is not None:
            parts.append(f"accuracy drop ≤ {self.max_drop:g} points")
        if self.max_latency_ms is not None:
            parts.append(f"latency ≤ {self.max_latency_ms:g} ms")
        if self.min_speedup is not None:
            parts.append(f"≥ {self.min_speedup:g}× faster than the teacher")
        if self.max_size_mb is not None:
            parts.append(f"size ≤ {self.max_size_mb:g} MB")
        return ", ".join(parts) or "no bound (Pareto front only)"


@dataclass(frozen=True)
class CompressConfig:
    teacher_id: str  # run id or checkpoint path
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=5, lr=3e-3))  # each trial's budget
    runtime: str = "onnxruntime"
    batch_size: int = 1
    threads: int = 1  # latency is timed at this many threads (torch's and ONNX Runtime's intra-op)
    goal: Goal = field(default_factory=Goal)
    mode: str = "constrained"  # constrained: best accuracy within the goal; pareto: accuracy, latency, size
    space: SearchSpace = field(default_factory=SearchSpace)
    sampler: str = "tpe"
    pruner: str = "median"
    trials: int = 20  # trials in the study, pruned ones included (Optuna's n_trials)
    minutes: float | None = None  # wall-clock budget of one start (a resume gets its own)
    seed: int = 0
    cache_teacher_logits: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> CompressConfig:
        simple = {k: v for k, v in d.items() if k not in ("data", "train", "goal", "space")}
        return CompressConfig(
            data=DataConfig(**d.get("data", {})),
            train=TrainConfig(**d.get("train", {})),
            goal=Goal(**d.get("goal", {})),
            space=SearchSpace.from_dict(d.get("space", {})),
            **simple,
        )


def _positive(value: float | None, what: str) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{what} must be a positive number, got {value}.")


def validate_compress(cfg: CompressConfig) -> None:
    """Refuse a study before anything is stored or measured."""
    if not cfg.teacher_id:
        raise ConfigError("a compress study needs a teacher (a run id or a checkpoint path).")
    if cfg.runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime '{cfg.runtime}'; choose from {', '.join(RUNTIMES)}.")
    checks = [
        (cfg.mode in MODES, f"unknown mode '{cfg.mode}'; choose from {', '.join(MODES)}"),
        (cfg.sampler in SAMPLERS, f"unknown sampler '{cfg.sampler}'; choose from {', '.join(SAMPLERS)}"),
        (cfg.pruner in PRUNERS, f"unknown pruner '{cfg.pruner}'; choose from {', '.join(PRUNERS)}"),
        (cfg.batch_size >= 1, f"the latency batch size must be at least 1, got {cfg.batch_size}"),
        (cfg.threads >= 1, f"latency threads must be at least 1, got {cfg.threads}"),
        (cfg.trials >= 1, f"the study needs at least 1 trial, got {cfg.trials}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message + ".")
    g = cfg.goal
    _positive(g.max_latency_ms, "the latency budget (ms)")
    _positive(g.max_size_mb, "the size budget (MB)")
    _positive(cfg.minutes, "the budget in minutes")
    if g.min_speedup is not None and not (math.isfinite(g.min_speedup) and g.min_speedup > 0):
        raise ConfigError(f"the speed-up over the teacher must be a positive number, got {g.min_speedup}.")
    if g.max_drop is not None and not (math.isfinite(g.max_drop) and g.max_drop >= 0):
        raise ConfigError(f"the accuracy drop must be 0 or more points, got {g.max_drop}.")
    if cfg.mode == "constrained" and g == Goal(max_drop=None):
        raise ConfigError(
            "a constrained search needs a goal (accuracy drop, latency, speed-up or size); or use pareto."
        )
    validate_space(cfg.space)
    lo, hi = cfg.space.temperatures[0], cfg.space.alphas[1]
    validate_config(RunConfig(kind="student", train=cfg.train, distill=DistillConfig(lo, hi)))
