"""What the multi-model pipelines share: the pipeline id, stage configs that carry their
`PipelineLink`, up-front checks of every stage, one distilled stage, and the result.

A pipeline is a sequence of ordinary stored runs: each stage goes through the recorder's
`distill` (or `train_teacher`), so it is measured, saved and finished like any other run,
and its config says which pipeline it belongs to and which runs it learned from.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from torch import nn

from kd_core.config import ModelSpec, PipelineLink, RunConfig
from kd_core.errors import ConfigError
from kd_core.events import ProgressSink, ignore
from kd_core.records import StoredRun
from kd_core.store import Store
from kd_core.train.data import Dataset
from kd_core.train.engine import check_run, validate_config
from kd_core.train.models import OWN_FAMILIES, build_model
from kd_core.train.recorder import RunOutcome, distill

SPEC_HELP = "FAMILY[:SIZE[xDEPTH]] for mlp / cnn (mlp:128, mlp:256x2, cnn:16), FAMILY[:WIDTH] otherwise (resnet18:0.5)"


def parse_spec(text: str) -> ModelSpec:
    """'mlp:256x2' -> ModelSpec("mlp", 256, 2); ConfigError for anything else."""
    family, _, rest = text.strip().lower().partition(":")
    try:
        if family in OWN_FAMILIES:
            size, _, depth = rest.partition("x")
            return ModelSpec(family, int(size) if size else 64, int(depth) if depth else 1)
        return ModelSpec(family, width=float(rest) if rest else 1.0)
    except ValueError:
        raise ConfigError(f"model '{text}' is not {SPEC_HELP}.") from None


def parse_specs(text: str) -> list[ModelSpec]:
    """'mlp:64, mlp:16' -> [ModelSpec, ModelSpec] (commas or spaces between models)."""
    return [parse_spec(t) for t in text.replace(",", " ").split()]


def new_pipeline_id(method: str) -> str:
    return f"{method}-{time.strftime('%m%d-%H%M%S')}-{secrets.token_hex(3)}"


@dataclass
class PipelineResult:
    """A pipeline's stored runs in stage order, and how it ended: finished, or the status of
    the first stage that did not finish (the stages after it are not run)."""

    method: str
    pipeline_id: str
    outcomes: list[RunOutcome] = field(default_factory=list)
    status: str = "finished"
    message: str = ""

    def summary(self) -> dict:
        return {
            "pipeline": self.method,
            "pipeline_id": self.pipeline_id,
            "status": self.status,
            "message": self.message,
            "run_ids": [o.run_id for o in self.outcomes],
            "runs": [o.summary() for o in self.outcomes],
        }

    def add(self, outcome: RunOutcome) -> bool:
        """Keep a stage's outcome; False (and the pipeline ends with its status) unless it finished."""
        if outcome.run_id:
            self.outcomes.append(outcome)
        if outcome.status != "finished":
            self.status, self.message = outcome.status, outcome.message or f"a stage ended {outcome.status}"
            return False
        return True


def stage_config(base: RunConfig, model: ModelSpec, link: PipelineLink, seed: int | None = None) -> RunConfig:
    """`base` as one stage: its model, its link, its teacher (the last parent) and seed."""
    train = base.train if seed is None else replace(base.train, seed=seed)
    teacher_id = link.parents[-1] if link.parents else None
    return replace(base, model=model, train=train, pipeline=link, teacher_id=teacher_id)


def check_chain(
    cfgs: Sequence[RunConfig],
    data: Dataset,
    teacher: nn.Module | None,
    stand_in: Callable[[int], nn.Module] | None = None,
) -> None:
    """Refuse the whole chain before anything is stored: every stage's config, and every
    stage's methods against the model that will teach it. For stages whose teacher is not
    trained yet, `stand_in(i)` (default: an untrained model of stage i − 1's architecture)
    stands in; only its shapes matter."""
    if not cfgs:
        raise ConfigError("a pipeline needs at least one stage to train.")
    for cfg in cfgs:
        validate_config(cfg)
    for i, cfg in enumerate(cfgs):
        if cfg.distill is None:
            continue
        if i == 0:
            prev = teacher
        elif stand_in is not None:
            prev = stand_in(i)
        else:
            prev = build_model(cfgs[i - 1].model, data.input_shape, data.num_classes)
        if prev is None:
            raise ConfigError("the first distilled stage of a pipeline needs a teacher.")
        check_run(cfg, data, prev)


def distill_stage(
    store: Store,
    cfg: RunConfig,
    data: Dataset,
    teacher: nn.Module,
    emit: ProgressSink = ignore,
    stop: threading.Event | None = None,
) -> RunOutcome:
    """One distilled stage through the recorder (no baseline: a pipeline's stages are its runs)."""
    return distill(store, replace(cfg, kind="student"), data, teacher, with_baseline=False, emit=emit, stop=stop)[0]


def pipeline_runs(store: Store, pipeline_id: str) -> list[StoredRun]:
    """The stored runs of one pipeline, in stage order."""
    runs = [r for r in store.list_runs() if r.config.pipeline is not None and r.config.pipeline.id == pipeline_id]
    return sorted(runs, key=lambda r: (r.config.pipeline.stage if r.config.pipeline else 0, r.created))
