"""One experiment's way through the engine, the metrics and the store.

`train_teacher` and `distill` are what the CLI, the dashboard's worker and the
sweeps call: each run is created in the store, trained by the engine, measured
on the test split, saved, and finished with its status and metrics.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from kd_core.config import RunConfig, timing_threads
from kd_core.errors import CheckpointError, KDError
from kd_core.events import Progress, ProgressSink, ignore
from kd_core.store import Store
from kd_core.train.bench import measure_latency, size_report, torch_threads
from kd_core.train.checkpoint import load_checkpoint, save_checkpoint
from kd_core.train.data import Dataset
from kd_core.train.engine import FitResult, baseline_config, fit
from kd_core.train.metrics import evaluate, predict_logits
from kd_core.train.models import describe

LATENCY_BATCHES = (1, 256)


@dataclass
class RunOutcome:
    run_id: str
    kind: str
    status: str
    message: str
    metrics: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    model: nn.Module | None = None

    def summary(self) -> dict:
        return {
            "run_id": self.run_id,
            "kind": self.kind,
            "status": self.status,
            "message": self.message,
            "warnings": self.warnings,
            **self.metrics,
        }


def final_metrics(
    result: FitResult,
    cfg: RunConfig,
    data: Dataset,
    teacher_test_logits: torch.Tensor | None,
    latency_repeats: int = 30,
) -> dict:
    """Everything a finished (or stopped) run is judged by."""
    model = result.model.cpu()
    report = evaluate(model, data.test_x, data.test_y, data.num_classes, teacher_test_logits)
    with torch_threads(timing_threads(cfg.train.threads)):
        latency = measure_latency(model, data.input_shape, LATENCY_BATCHES, warmup=5, repeats=latency_repeats)
    info = describe(cfg.model, data.input_shape, data.num_classes)
    return {
        "test_acc": report.pop("accuracy"),
        **report,
        "best_val_acc": result.best_val_acc,
        "final_val_acc": result.final_val_acc,
        "best_epoch": result.best_epoch,
        "epochs_done": len(result.history),
        "seconds": result.seconds,
        "train_samples_per_s": result.samples_per_s,
        "train_threads": result.threads,
        **size_report(model),
        "flops": info["flops"],
        "latency": latency,
    }


def run_one(
    store: Store,
    cfg: RunConfig,
    data: Dataset,
    teacher: nn.Module | None = None,
    emit: ProgressSink = ignore,
    stop: threading.Event | None = None,
    teacher_test_logits: torch.Tensor | None = None,
) -> RunOutcome:
    """Create the run in the store, train it, measure it, save it, finish it."""
    run_id = store.create_run(cfg)

    def sink(rec: Progress) -> None:
        rec = replace(rec, run_id=run_id, kind=cfg.kind)
        store.add_epoch(rec)
        emit(rec)

    try:
        result = fit(cfg, data, teacher, sink, stop)
    except KDError as err:
        store.finish_run(run_id, "failed", {}, error=str(err))
        emit(Progress("end", 0, 0, 0, status="failed", message=str(err), run_id=run_id, kind=cfg.kind))
        return RunOutcome(run_id, cfg.kind, "failed", str(err))
    if not result.history:  # stopped or diverged before one epoch was done: nothing to keep
        store.finish_run(run_id, result.status, {"seconds": result.seconds}, error=result.message)
        return RunOutcome(run_id, cfg.kind, result.status, result.message, warnings=result.warnings)
    metrics = final_metrics(result, cfg, data, teacher_test_logits)
    weights = store.weights_path(run_id)
    save_checkpoint(weights, result.model, cfg.model, data.input_shape, data.classes, data.name)
    error = result.message if result.status == "failed" else ""
    store.finish_run(run_id, result.status, metrics, error=error, weights=weights)
    return RunOutcome(run_id, cfg.kind, result.status, result.message, metrics, result.warnings, result.model)


def train_teacher(
    store: Store, cfg: RunConfig, data: Dataset, emit: ProgressSink = ignore, stop: threading.Event | None = None
) -> RunOutcome:
    return run_one(store, replace(cfg, kind="teacher", distill=None), data, None, emit, stop)


def load_teacher(store: Store, ref: str | Path, data: Dataset) -> nn.Module:
    """A teacher from a stored run id or a checkpoint file, checked against the dataset."""
    path = Path(str(ref)).expanduser()
    if not path.is_file():
        run = store.get_run(str(ref))
        if run is None:
            raise CheckpointError(f"no teacher '{ref}': it is neither a checkpoint file nor a stored run id.")
        if not run.get("weights"):
            raise CheckpointError(f"run '{ref}' has no saved weights (status {run['status']}).")
        path = Path(run["weights"])
    model, _ = load_checkpoint(path, input_shape=data.input_shape, num_classes=data.num_classes)
    return model


def distill(
    store: Store,
    cfg: RunConfig,
    data: Dataset,
    teacher: nn.Module,
    with_baseline: bool = True,
    emit: ProgressSink = ignore,
    stop: threading.Event | None = None,
) -> list[RunOutcome]:
    """Distil `cfg` from `teacher`; then, if asked, the same student without the teacher."""
    teacher_test_logits = predict_logits(teacher.cpu(), data.test_x)
    outcomes = [run_one(store, replace(cfg, kind="student"), data, teacher, emit, stop, teacher_test_logits)]
    if with_baseline and not (stop and stop.is_set()) and outcomes[0].status != "failed":
        outcomes.append(run_one(store, baseline_config(cfg), data, None, emit, stop, teacher_test_logits))
    return outcomes
