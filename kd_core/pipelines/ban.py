"""BAN: Furlanello, Lipton, Tschannen, Itti & Anandkumar, "Born-Again Neural Networks", ICML 2018.

Generations of the *same* architecture, each distilled from the one before:

    gen 0: trained on labels (or a given teacher);   gen k (k ≥ 1) learns from gen k − 1:
    L_k = (1 − λ)·CE(y, z_k) + λ·T²·KL( softmax(z_{k−1}/T) ‖ softmax(z_k/T) )

With `ensemble`, gen k learns instead from the mean of every earlier generation's logits,

    z̄_{<k} = (1/k)·Σ_{i<k} z_i

(the paper's "sequence of teaching selves" ensembles the generations' outputs; averaging
logits, not probabilities, keeps the teacher one logit vector that T softens as usual).
Every generation is a stored run whose PipelineLink names the generations it learned from;
generation k is seeded seed + k, so the generations start from different weights.
"""

from __future__ import annotations

import threading

import torch
from torch import nn

from kd_core.config import PipelineLink, RunConfig
from kd_core.errors import ConfigError
from kd_core.events import ProgressSink, ignore
from kd_core.methods import get_method, validate_methods
from kd_core.pipelines.common import PipelineResult, check_chain, distill_stage, new_pipeline_id, stage_config
from kd_core.store import Store
from kd_core.train.data import Dataset
from kd_core.train.engine import validate_config
from kd_core.train.models import build_model
from kd_core.train.recorder import train_teacher

MAX_GENERATIONS = 20


class Ensemble(nn.Module):
    """A teacher that is the mean of its members' logits: x (B, ...) -> (1/k)·Σ_i z_i(x), (B, K)."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)


def ban_configs(
    base: RunConfig, generations: int, pipeline_id: str, teacher_id: str | None, ensemble: bool
) -> list[RunConfig]:
    """Stage configs: gen 0 (on labels) unless a teacher is given, then gens 1..generations.
    Parents here are placeholders ("gen i") until `ban` fills in the stored run ids."""
    if base.distill is None:
        raise ConfigError("BAN distils every generation after the first: give its distillation settings.")
    if not 1 <= generations <= MAX_GENERATIONS:
        raise ConfigError(f"BAN needs 1 to {MAX_GENERATIONS} distilled generations, got {generations}.")
    if ensemble:
        params = validate_methods(base.distill.methods)
        needs = [get_method(s.name).needs(p) for s, p in zip(base.distill.methods, params)]
        if any(n.student_features or n.teacher_features for n in needs):
            raise ConfigError("BAN's ensemble teacher gives logits only: use logit methods (kd, dkd, dist, ...).")
    seed = base.train.seed
    cfgs = []
    if teacher_id is None:
        label_cfg = RunConfig(kind="teacher", data=base.data, train=base.train, labels=base.labels)
        cfgs.append(stage_config(label_cfg, base.model, PipelineLink("ban", pipeline_id, 0, "generation 0"), seed))
    for k in range(1, generations + 1):
        link = PipelineLink("ban", pipeline_id, k, f"generation {k}", (teacher_id or "gen 0",))
        cfgs.append(stage_config(base, base.model, link, seed + k))
    for cfg in cfgs:  # the flags' values, before any data loads
        validate_config(cfg)
    return cfgs


def ban(
    store: Store,
    base: RunConfig,
    data: Dataset,
    generations: int,
    teacher: nn.Module | None = None,
    teacher_id: str | None = None,
    ensemble: bool = False,
    emit: ProgressSink = ignore,
    stop: threading.Event | None = None,
) -> PipelineResult:
    """Train gen 0 on labels (or take `teacher`, stored as `teacher_id`, as gen 0), then
    `generations` generations of `base.model`, each distilled from the previous one, or with
    `ensemble` from the mean of all earlier ones. Checked in full before anything is stored."""
    if (teacher is None) != (teacher_id is None):
        raise ConfigError("BAN's gen 0 is either trained here or given as a teacher with its run id, not half of both.")
    pid = new_pipeline_id("ban")
    cfgs = ban_configs(base, generations, pid, teacher_id, ensemble)

    def stand_in(i: int) -> nn.Module:
        one = build_model(base.model, data.input_shape, data.num_classes)
        return Ensemble([one] * (i + (teacher is not None))) if ensemble else one

    check_chain(cfgs, data, teacher, stand_in)
    result = PipelineResult("ban", pid)
    gens: list[tuple[str, nn.Module]] = [] if teacher is None else [(str(teacher_id), teacher)]
    for cfg in cfgs:
        assert cfg.pipeline is not None
        if cfg.distill is None:  # gen 0 on labels
            outcome = train_teacher(store, cfg, data, emit, stop)
        else:
            taught_by = gens if ensemble else gens[-1:]
            link = PipelineLink("ban", pid, cfg.pipeline.stage, cfg.pipeline.role, tuple(i for i, _ in taught_by))
            parent = Ensemble([m for _, m in taught_by]) if ensemble else taught_by[0][1]
            outcome = distill_stage(store, stage_config(cfg, cfg.model, link), data, parent, emit, stop)
        if not result.add(outcome):
            break
        assert outcome.model is not None
        gens.append((outcome.run_id, outcome.model))
    return result
