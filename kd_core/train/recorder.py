"""One experiment's way through the engine, the metrics and the store.

`train_teacher` and `distill` are what the CLI, the dashboard's worker and the
sweeps call: each run is created in the store, trained by the engine, then
`record`ed: measured on the test split and timed at the fixed thread count,
saved, and finished with its status and metrics. `record` is the only code that
finishes a run with a model; a Ray sweep's driver and an uploaded teacher use it too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from kd_core.config import RunConfig, timing_threads
from kd_core.errors import CheckpointError, KDError
from kd_core.events import Progress, ProgressSink, ignore
from kd_core.store import Store
from kd_core.train.bench import measure_latency, size_report, torch_threads
from kd_core.train.blackbox import is_teacher_file, load_stored
from kd_core.train.checkpoint import load_checkpoint, save_checkpoint
from kd_core.train.data import Dataset
from kd_core.train.engine import FitResult, baseline_config, check_run, fit
from kd_core.train.labels import TrainingSet, training_set
from kd_core.train.memory import PeakRSS
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


@dataclass
class Trained:
    """How a fit ended, as the recorder takes it, wherever the fit ran (this process or a Ray task)."""

    status: str  # finished | stopped | failed
    message: str = ""
    model: nn.Module | None = None  # None: failed or stopped before one epoch, nothing to keep
    numbers: dict = field(default_factory=dict)  # the fit's own figures (`fit_numbers`)
    warnings: list[str] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)  # one dict per finished epoch
    # `measure`'s figures when the fit's own process took them (a Ray task times the model where
    # it is, beside one other task, not on the driver beside all of them); else the recorder does.
    measured: dict | None = None
    # How the weights are kept, given the run id (default: a KD Studio checkpoint of `model`); an
    # imported black-box teacher file is copied as it is. Returns the path stored with the run.
    save: Callable[[str], Path] | None = None

    @staticmethod
    def of(result: FitResult) -> Trained:
        if not result.history:  # stopped or diverged before one epoch was done: nothing to keep
            return Trained(result.status, result.message, None, {"seconds": result.seconds}, result.warnings)
        return Trained(
            result.status, result.message, result.model.cpu(), fit_numbers(result), result.warnings, result.history
        )


def fit_numbers(result: FitResult) -> dict:
    """The figures only a fit has: accuracies on the way, its time, speed, threads and precision."""
    return {
        "best_val_acc": result.best_val_acc,
        "final_val_acc": result.final_val_acc,
        "best_epoch": result.best_epoch,
        "epochs_done": len(result.history),
        "seconds": result.seconds,
        "train_samples_per_s": result.samples_per_s,
        "train_threads": result.threads,
        "train_precision": result.precision,
        "channels_last": result.channels_last,
        **_loss_report(result),
        "labels": result.labels,
    }


def _loss_report(result: FitResult) -> dict:
    """The last epoch's mean loss and named terms; for distillation, the methods' extra
    trainable parameters and how the teacher's targets were served."""
    last = result.history[-1]
    out = {"final_loss": last["loss"], "loss_terms": dict(last["terms"])}
    if result.cache:
        out["extra_params"] = sum(p.numel() for p in result.extra.parameters()) if result.extra is not None else 0
        out["teacher_cache"] = result.cache
    return out


def measure(
    model: nn.Module,
    cfg: RunConfig,
    data: Dataset,
    teacher_test_logits: torch.Tensor | None = None,
    latency_repeats: int = 30,
) -> dict:
    """What every stored model is judged by, trained or uploaded: the test split, size, FLOPs, and
    latency at the fixed thread count (`timing_threads`), so that any two runs are timed alike."""
    model = model.cpu()
    blackbox = getattr(model, "blackbox", False)  # a teacher file (train/blackbox.py): its operations are not counted
    report = evaluate(model, data.test_x, data.test_y, data.num_classes, teacher_test_logits)
    with torch_threads(timing_threads(cfg.train.threads)):
        latency = measure_latency(model, data.input_shape, LATENCY_BATCHES, warmup=5, repeats=latency_repeats)
    return {
        "test_acc": report.pop("accuracy"),
        **report,
        **size_report(model),
        "flops": None if blackbox else describe(cfg.model, data.input_shape, data.num_classes)["flops"],
        "latency": latency,
        "normalisation": {"mean": data.mean, "std": data.std},  # of the inputs it was measured on
    }


def record(
    store: Store,
    run_id: str,
    cfg: RunConfig,
    data: Dataset,
    trained: Trained,
    teacher_test_logits: torch.Tensor | None = None,
) -> RunOutcome:
    """The one way a created run is finished in the store: measured (`measure`), its weights
    saved, its status, metrics and error written. The CLI, the dashboard, a sweep (in this
    process or on Ray) and an uploaded teacher all end here."""
    if trained.model is None:
        store.finish_run(run_id, trained.status, trained.numbers, error=trained.message)
        return RunOutcome(run_id, cfg.kind, trained.status, trained.message, warnings=trained.warnings)
    try:
        measured = (
            trained.measured if trained.measured is not None else measure(trained.model, cfg, data, teacher_test_logits)
        )
        metrics = {**measured, **trained.numbers}
        if trained.save is not None:
            weights = trained.save(run_id)
        else:
            weights = store.weights_path(run_id)
            save_checkpoint(weights, trained.model, cfg.model, data.input_shape, data.classes, data.name)
    except BaseException as err:  # the run must not stay "running" (not even on Ctrl-C): stored, then raised
        store.finish_run(run_id, "failed", trained.numbers, error=f"{type(err).__name__}: {err}")
        raise
    error = trained.message if trained.status == "failed" else ""
    store.finish_run(run_id, trained.status, metrics, error=error, weights=weights)
    return RunOutcome(run_id, cfg.kind, trained.status, trained.message, metrics, trained.warnings, trained.model)


def run_one(
    store: Store,
    cfg: RunConfig,
    data: Dataset,
    teacher: nn.Module | None = None,
    emit: ProgressSink = ignore,
    stop: threading.Event | None = None,
    teacher_test_logits: torch.Tensor | None = None,
    train_set: TrainingSet | None = None,
    extra_metrics: dict | None = None,
) -> RunOutcome:
    """Check the run, create it in the store, train it, and `record` it (with `extra_metrics` added). A bad config, or one
    the models cannot serve (AT on an MLP), is refused before anything is stored: a failed
    outcome with no run id."""
    try:
        check_run(cfg, data, teacher)
    except KDError as err:
        return RunOutcome("", cfg.kind, "failed", str(err))
    run_id = store.create_run(cfg)

    def sink(rec: Progress) -> None:
        rec = replace(rec, run_id=run_id, kind=cfg.kind)
        store.add_epoch(rec)
        emit(rec)

    try:
        with PeakRSS() as peak:
            result = fit(cfg, data, teacher, sink, stop, train_set)
        trained = Trained.of(result)
        trained.numbers.update(peak_rss_bytes=peak.bytes, peak_rss_scope=peak.scope)
    except KDError as err:
        trained = Trained("failed", str(err))
        emit(Progress("end", 0, 0, 0, status="failed", message=str(err), run_id=run_id, kind=cfg.kind))
    except Exception as err:  # a bug, not bad input: the run is stored as failed, the caller gets the error
        store.finish_run(run_id, "failed", {}, error=f"{type(err).__name__}: {err}")
        raise
    trained.numbers.update(extra_metrics or {})
    return record(store, run_id, cfg, data, trained, teacher_test_logits)


def train_teacher(
    store: Store, cfg: RunConfig, data: Dataset, emit: ProgressSink = ignore, stop: threading.Event | None = None
) -> RunOutcome:
    cfg = replace(cfg, kind="teacher", distill=None)
    try:  # a budget the data cannot give is refused like any bad config: before anything is stored
        train_set = training_set(data, cfg.labels, with_transfer=False)
    except KDError as err:
        return RunOutcome("", "teacher", "failed", str(err))
    return run_one(store, cfg, data, None, emit, stop, train_set=train_set)


def load_teacher(store: Store, ref: str | Path, data: Dataset) -> nn.Module:
    """A teacher from a stored run id or a checkpoint file, checked against the dataset."""
    path = Path(str(ref)).expanduser()
    if not path.is_file():
        run = store.get_run(str(ref))
        if run is None:
            raise CheckpointError(f"no teacher '{ref}': it is neither a checkpoint file nor a stored run id.")
        if not run.weights:
            raise CheckpointError(f"run '{ref}' has no saved weights (status {run.status}).")
        path = Path(run.weights)
    if is_teacher_file(path):  # an imported TorchScript / .pt2 / ONNX teacher: logits only
        return load_stored(path, data)
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
    """Distil `cfg` from `teacher`; then, if asked, the same student without the teacher,
    on the very same labelled subset (one TrainingSet built for both)."""
    try:  # a budget the data cannot give, a bad transfer image: refused before anything is stored
        train_set = training_set(data, cfg.labels)
    except KDError as err:
        return [RunOutcome("", "student", "failed", str(err))]
    teacher_test_logits = predict_logits(teacher.cpu(), data.test_x)
    extra = {"teacher_labels": teacher_labels(store, cfg.teacher_id)}
    student = run_one(
        store, replace(cfg, kind="student"), data, teacher, emit, stop, teacher_test_logits, train_set, extra
    )
    outcomes = [student]
    if with_baseline and not (stop and stop.is_set()) and student.status != "failed":
        base = run_one(store, baseline_config(cfg), data, None, emit, stop, teacher_test_logits, train_set, extra)
        outcomes.append(base)
    return outcomes


def teacher_labels(store: Store, teacher_id: str | None) -> dict:
    """How many labels the teacher was trained on, as its stored run says: all of them
    (a teacher from elsewhere, or the fully supervised one) or a budget (semi-supervised)."""
    run = store.get_run(teacher_id) if teacher_id else None
    if run is None:
        return {"budget": "unknown (a checkpoint file)", "labelled": None}
    budget = run.config.labels
    return {"budget": budget.describe(), "labelled": run.metrics.get("labels", {}).get("labelled")}
