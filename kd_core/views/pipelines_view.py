"""The Distill page's multi-model section: TAKD, BAN or DML started as one dashboard job, its
stages shown as they are stored. Plain data and job starts; no Streamlit here."""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from kd_core.config import DistillConfig, RunConfig
from kd_core.errors import ConfigError, KDError
from kd_core.jobs import Job, JobManager, JobSnapshot
from kd_core.pipelines import ban, dml, takd
from kd_core.pipelines.ban import ban_configs
from kd_core.pipelines.common import SPEC_HELP, PipelineResult, parse_specs
from kd_core.pipelines.dml import dml_configs
from kd_core.pipelines.takd import takd_configs
from kd_core.store import Store
from kd_core.train.data import Dataset
from kd_core.train.pretrained import check_model

PIPELINES = {
    "takd": "TAKD: teacher → assistant(s) → student",
    "ban": "BAN: born-again generations",
    "dml": "DML: peers learn together",
}
PIPELINE_HELP = {
    "takd": "Mirzadeh et al., AAAI 2020. Each model below, in order, is distilled from the one before it "
    "(the first from the sidebar's teacher) with the method, T and λ above; the last is the student.",
    "ban": "Furlanello et al., ICML 2018. Generation 0 of the one model below is trained on labels; each later "
    "generation is distilled from the one before (or from the mean logits of all earlier ones).",
    "dml": "Zhang et al., CVPR 2018. The models below train together, each on (1 − λ)·CE + λ·mean KL to the "
    "others' predictions at temperature T (the paper: T = 1, λ = 0.5); no teacher.",
}
DEFAULT_MODELS = {"takd": "mlp:64, mlp:16", "ban": "mlp:32", "dml": "mlp:16, mlp:16"}
MODELS_HELP = f"Comma-separated models, {SPEC_HELP}."


def _plan(method: str, base: RunConfig, teacher_id: str, models: str, generations: int, ensemble: bool):
    """(the pipeline's function of (store, data, teacher, emit, stop)); ConfigError before anything starts."""
    specs = parse_specs(models)
    if method == "takd":
        takd_configs(base, teacher_id, specs, "check")
        return specs, lambda s, d, t, emit, stop: takd(s, base, d, t, teacher_id, specs, emit, stop)
    if method == "ban":
        if len(specs) != 1:
            raise ConfigError("BAN trains generations of one architecture: give exactly one model.")
        one = replace(base, model=specs[0], teacher_id=None)
        ban_configs(one, generations, "check", None, ensemble)
        return specs, lambda s, d, t, emit, stop: ban(s, one, d, generations, None, None, ensemble, emit, stop)
    if method == "dml":
        dml_configs(base, specs, "check")
        return specs, lambda s, d, t, emit, stop: dml(s, base, d, specs, emit, stop)
    raise ConfigError(f"unknown multi-model method '{method}'; choose from {', '.join(PIPELINES)}.")


def start_pipeline(
    manager: JobManager,
    store: Store,
    data: Dataset,
    teacher: nn.Module,
    teacher_id: str,
    base: RunConfig,
    method: str,
    models: str,
    generations: int = 2,
    ensemble: bool = False,
) -> Job:
    """Start `method` as the process's job, with `base`'s training and distillation settings
    (the Distill page's sliders). Every stage is checked before the job starts."""
    if base.distill is None:
        base = replace(base, distill=DistillConfig())
    specs, run = _plan(method, base, teacher_id, models, generations, ensemble)
    for spec in specs:
        check_model(replace(base, model=spec), data)

    def work(emit, stop, job: Job):
        result: PipelineResult = run(store, data, teacher, emit, stop)
        for outcome in result.outcomes:
            job.add_outcome(outcome)
        job.note(pipeline_id=result.pipeline_id, roles=_roles(store, result))
        if result.status == "failed" and all(o.status != "failed" for o in result.outcomes):
            raise KDError(result.message)  # refused at a stage that stored no run: the job says why
        return result.outcomes

    job = manager.start(f"{method.upper()} {models}", "pipeline", work)
    return job


def _roles(store: Store, result: PipelineResult) -> dict[str, str]:
    roles = {}
    for o in result.outcomes:
        run = store.get_run(o.run_id)
        link = run.config.pipeline if run is not None else None
        roles[o.run_id] = link.role if link is not None else ""
    return roles


def outcome_rows(snapshot: JobSnapshot) -> list[dict]:
    """The job's stored stages, in order: role, run id, status, test accuracy."""
    roles = snapshot.notes.get("roles", {})
    return [
        {"stage": roles.get(o["run_id"], ""), "run": o["run_id"], "status": o["status"], "test acc": o.get("test_acc")}
        for o in snapshot.outcomes
    ]
