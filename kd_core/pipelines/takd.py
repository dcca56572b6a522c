"""TAKD: Mirzadeh, Farajtabar, Li, Levine, Matsukawa & Ghasemzadeh, "Improved Knowledge
Distillation via Teacher Assistant", AAAI 2020.

A large gap between teacher and student hurts distillation; TAKD closes it in steps:

    teacher → assistant₁ → … → assistantₙ → student

Stage k is distilled from the trained model of stage k − 1 with the usual loss
(the paper uses KD at every step):

    L_k = (1 − λ)·CE(y, z_k) + λ·T²·KL( softmax(z_{k−1}/T) ‖ softmax(z_k/T) )

Each stage is a stored run (kind "student") whose `teacher_id` is the previous stage's run
and whose config carries PipelineLink("takd", id, k, parents=(previous run id,)).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from torch import nn

from kd_core.config import ModelSpec, PipelineLink, RunConfig
from kd_core.errors import ConfigError
from kd_core.events import ProgressSink, ignore
from kd_core.pipelines.common import PipelineResult, check_chain, distill_stage, new_pipeline_id, stage_config
from kd_core.store import Store
from kd_core.train.data import Dataset
from kd_core.train.engine import validate_config


def takd_configs(base: RunConfig, teacher_id: str, chain: Sequence[ModelSpec], pipeline_id: str) -> list[RunConfig]:
    """The chain's stage configs (assistants, then the student); each stage's parent is the
    previous stage's run, filled in by `takd` as the runs are created (here: the teacher)."""
    if base.distill is None:
        raise ConfigError("TAKD distils every stage: give its distillation settings.")
    if len(chain) < 2:
        raise ConfigError(
            "TAKD needs at least one assistant and a student (e.g. --assistant mlp:128 --student mlp:16)."
        )
    n = len(chain)
    cfgs = [
        stage_config(
            base,
            spec,
            PipelineLink("takd", pipeline_id, k, "student" if k == n else f"assistant {k}", (teacher_id,)),
        )
        for k, spec in enumerate(chain, start=1)
    ]
    for cfg in cfgs:  # the flags' values, before any data loads
        validate_config(cfg)
    return cfgs


def takd(
    store: Store,
    base: RunConfig,
    data: Dataset,
    teacher: nn.Module,
    teacher_id: str,
    chain: Sequence[ModelSpec],
    emit: ProgressSink = ignore,
    stop: threading.Event | None = None,
) -> PipelineResult:
    """Distil `chain` (assistants, then the student) in order from `teacher` (stored run or
    checkpoint `teacher_id`). The whole chain is checked before its first run is stored; a
    stage that does not finish ends the pipeline there."""
    pid = new_pipeline_id("takd")
    cfgs = takd_configs(base, teacher_id, chain, pid)
    check_chain(cfgs, data, teacher)
    result = PipelineResult("takd", pid)
    parent_id, parent = teacher_id, teacher
    for cfg in cfgs:
        assert cfg.pipeline is not None
        link = PipelineLink("takd", pid, cfg.pipeline.stage, cfg.pipeline.role, (parent_id,))
        outcome = distill_stage(store, stage_config(cfg, cfg.model, link), data, parent, emit, stop)
        if not result.add(outcome):
            break
        assert outcome.model is not None
        parent_id, parent = outcome.run_id, outcome.model
    return result
