"""A run's distillation methods resolved against its two models, and the teacher's targets.

`plan_methods` turns DistillConfig.methods into `Plan`s: each method with its typed
parameters, the concrete stages it reads on the student and on the teacher, and its extra
trainable modules. Every refusal (unknown method, bad parameter, AT on an MLP, maps of
different sizes) is a ConfigError raised here, before any run is stored or trained.

`TeacherTargets` serves each method's teacher targets for a batch: from a cache keyed by
training-sample index where the method allows it, augmentation is off and the cache fits
in CACHE_BUDGET_BYTES; otherwise from a teacher forward pass per batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from kd_core.config import DistillConfig, MethodSpec
from kd_core.methods import Method, Outputs, get_method, resolve_stages, validate_methods
from kd_core.train.features import FeatureForward, stage_shapes
from kd_core.train.precision import as_float

CACHE_BUDGET_BYTES = 512 * 2**20  # teacher targets kept in memory per run; above it, per batch
CACHE_CHUNK = 1024  # samples per teacher forward pass while filling the cache


@dataclass
class Plan:
    spec: MethodSpec
    method: Method
    params: Any
    student_stages: tuple[str, ...]
    teacher_stages: tuple[str, ...]
    extra: nn.ModuleDict
    needs_teacher_logits: bool = True

    def student_view(self, s: Outputs) -> Outputs:
        return Outputs(s.logits, {k: s.features[k] for k in self.student_stages})


def plan_methods(
    distill: DistillConfig, student: nn.Module, teacher: nn.Module, input_shape: tuple[int, ...], seed: int = 0
) -> list[Plan]:
    """Resolve every method of the mix; ConfigError for anything the models cannot serve.
    Extra modules are initialised from `seed`, without touching the global RNG."""
    all_params = validate_methods(distill.methods)
    needs = [get_method(s.name).needs(p) for s, p in zip(distill.methods, all_params)]
    wants_features = any(n.student_features or n.teacher_features for n in needs)
    s_shapes = stage_shapes(student, input_shape) if wants_features else {}
    t_shapes = stage_shapes(teacher, input_shape) if wants_features else {}
    plans = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for spec, params, need in zip(distill.methods, all_params, needs):
            method = get_method(spec.name)
            s_st = resolve_stages(need.student_features, s_shapes, method.name, "student")
            t_st = resolve_stages(need.teacher_features, t_shapes, method.name, "teacher")
            s_sub, t_sub = {k: s_shapes[k] for k in s_st}, {k: t_shapes[k] for k in t_st}
            method.check_shapes(params, s_sub, t_sub)
            extra = method.modules(params, s_sub, t_sub)
            plans.append(Plan(spec, method, params, s_st, t_st, extra, need.teacher_logits))
    return plans


def student_stages(plans: list[Plan]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(s for p in plans for s in p.student_stages))


def extra_param_count(plans: list[Plan]) -> int:
    return sum(p.numel() for plan in plans for p in plan.extra.parameters())


def weighted_terms(
    plans: list[Plan], s: Outputs, targets: list[Outputs], temperature: float, labels: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Σ_m w_m·Σ terms_m and every term by name (a name two methods share gets the
    method's name in front: "dist.beta" style keys stay unique)."""
    total = s.logits.new_zeros(())
    terms: dict[str, torch.Tensor] = {}
    for plan, t in zip(plans, targets):
        parts = plan.method.loss(plan.student_view(s), t, plan.params, plan.extra, temperature, labels)
        total = total + plan.spec.weight * sum(parts.values())
        for name, value in parts.items():
            terms[f"{plan.method.name}.{name}" if name in terms or name == "ce" else name] = value
    return total, terms


@dataclass
class CacheChoice:
    """Which methods' teacher targets are cached, and why the others are not."""

    cached: tuple[str, ...]
    per_batch: tuple[str, ...]
    bytes: int
    reason: str  # why anything is computed per batch; "" when everything is cached

    def describe(self) -> str:
        size = f"{self.bytes / 2**20:.1f} MiB" if self.bytes >= 2**20 else f"{self.bytes / 2**10:.0f} KiB"
        if not self.per_batch:
            return f"cached by sample index ({size})"
        if not self.cached:
            return f"computed per batch: {self.reason}"
        return f"cached for {', '.join(self.cached)} ({size}); per batch for {', '.join(self.per_batch)}: {self.reason}"


def bytes_per_sample(t: Outputs) -> int:
    """Memory one sample's targets take: (logits + features) bytes / batch size."""
    total = sum(v.numel() * v.element_size() for v in (t.logits, *t.features.values()))
    return total // max(1, len(t.logits))


def choose_cache(
    plans: list[Plan], per_sample: list[int], n: int, use_cache: bool, augment: bool, budget: int = CACHE_BUDGET_BYTES
) -> CacheChoice:
    """Cache, method by method in mix order, the targets that still fit in `budget`.
    `per_sample`: each plan's target bytes per sample; `n` training samples."""
    names = tuple(p.method.name for p in plans)
    if augment or not use_cache:
        return CacheChoice(
            (), names, 0, "augmentation changes every view of an image" if augment else "the cache is turned off"
        )
    used, cached = 0, []
    for plan, one in zip(plans, per_sample):
        size = n * one
        if plan.method.cacheable and used + size <= budget:
            cached.append(plan.method.name)
            used += size
    rest = tuple(x for x in names if x not in cached)
    uncacheable = [p.method.name for p in plans if not p.method.cacheable]
    reason = (
        (
            f"{', '.join(uncacheable)} cannot be cached"
            if uncacheable
            else f"the targets exceed the {budget / 2**20:.0f} MiB cache budget"
        )
        if rest
        else ""
    )
    return CacheChoice(tuple(cached), rest, used, reason)


def targets_of(out: Outputs, plan: Plan) -> Outputs:
    """One plan's teacher targets from a teacher forward pass over all stages. A method that
    reads no teacher logits gets (B, 0) ones, so none are cached for it."""
    logits = out.logits if plan.needs_teacher_logits else out.logits[:, :0]
    return plan.method.teacher_targets(Outputs(logits, {k: out.features[k] for k in plan.teacher_stages}), plan.params)


def _target(plan: Plan, cache: Outputs | None, idx: torch.Tensor, live: Outputs | None) -> Outputs:
    """A plan's targets for batch `idx`: from its cache, else from this batch's teacher pass."""
    if cache is not None:
        return Outputs(
            cache.logits.index_select(0, idx), {k: v.index_select(0, idx) for k, v in cache.features.items()}
        )
    assert live is not None, "the teacher runs on every batch where a plan has no cache"
    return targets_of(live, plan)


def teacher_stages(plans: list[Plan]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(s for p in plans for s in p.teacher_stages))


@torch.no_grad()
def cache_preview(
    teacher: nn.Module, plans: list[Plan], train_x: torch.Tensor, use_cache: bool, augment: bool
) -> CacheChoice:
    """The choice TeacherTargets will make, from one sample's targets (for previews)."""
    forward = FeatureForward(teacher.eval(), teacher_stages(plans))
    try:
        out = forward(train_x[:1])
    finally:
        forward.close()
    sizes = [bytes_per_sample(targets_of(out, p)) for p in plans]
    return choose_cache(plans, sizes, len(train_x), use_cache, augment)


class TeacherTargets:
    """The targets of every planned method for a batch: cached by sample index where the
    method, `use_cache`, `augment` and the budget allow (sized from the first chunk, so the
    teacher sees each training sample once), else from a teacher pass per batch."""

    def __init__(
        self,
        teacher: nn.Module,
        plans: list[Plan],
        train_x: torch.Tensor,
        use_cache: bool,
        augment: bool,
        budget: int = CACHE_BUDGET_BYTES,
        autocast: Callable[[], AbstractContextManager] = contextlib.nullcontext,
    ):
        self.teacher, self.plans, self.autocast = teacher.eval(), plans, autocast
        self.cache: list[Outputs | None] = [None] * len(plans)
        if use_cache and not augment:
            self.choice = self._fill(train_x, budget)
        else:
            self.choice = choose_cache(plans, [0] * len(plans), len(train_x), use_cache, augment, budget)
        live = [p for p, c in zip(plans, self.cache) if c is None]
        self.forward = FeatureForward(teacher, teacher_stages(live))

    @torch.no_grad()
    def _fill(self, train_x: torch.Tensor, budget: int) -> CacheChoice:
        forward = FeatureForward(self.teacher, teacher_stages(self.plans))
        try:
            first = self._run(forward, train_x[:CACHE_CHUNK])
            parts = [[targets_of(first, p)] for p in self.plans]
            choice = choose_cache(
                self.plans, [bytes_per_sample(p[0]) for p in parts], len(train_x), True, False, budget
            )
            keep = [i for i, p in enumerate(self.plans) if p.method.name in choice.cached]
            for start in range(CACHE_CHUNK, len(train_x) if keep else 0, CACHE_CHUNK):
                out = self._run(forward, train_x[start : start + CACHE_CHUNK])
                for i in keep:
                    parts[i].append(targets_of(out, self.plans[i]))
        finally:
            forward.close()
        for i in keep:
            self.cache[i] = Outputs(
                torch.cat([p.logits for p in parts[i]]),
                {k: torch.cat([p.features[k] for p in parts[i]]) for k in parts[i][0].features},
            )
        return choice

    def _run(self, forward: FeatureForward, x: torch.Tensor) -> Outputs:
        with self.autocast():
            out = forward(x)
        return as_float(out)

    @torch.no_grad()
    def __call__(self, idx: torch.Tensor, xb: torch.Tensor) -> list[Outputs]:
        live = self._run(self.forward, xb) if any(c is None for c in self.cache) else None
        return [_target(plan, cache, idx, live) for plan, cache in zip(self.plans, self.cache)]

    def close(self) -> None:
        self.forward.close()
