"""What the dashboard asks of kd_core, in plain data.

Pages import no torch. They call these functions, which take and return
numbers, strings, dicts, numpy arrays and pandas DataFrames (plus opaque
handles such as a `Dataset` or a model that they only pass back in).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from kd_core.config import (
    DataConfig,
    DistillConfig,
    LabelConfig,
    ModelSpec,
    RunConfig,
    TrainConfig,
    experiment_key,
    format_methods,
)
from kd_core.errors import ConfigError, KDError
from kd_core.jobs import Job, JobManager, JobSnapshot
from kd_core.methods import parse_methods
from kd_core.records import LatencyRow
from kd_core.store import Store
from kd_core.store import StoreError as StoreError  # for the dashboard's damaged-store message
from kd_core.train import recorder as experiment
from kd_core.train.augment import FUNCTION_MATCHING_MIXUP, flips_allowed
from kd_core.train.blackbox import InputContract, kind_of
from kd_core.train.checkpoint import load_checkpoint
from kd_core.train.data import Dataset, load_dataset
from kd_core.train.engine import validate_config
from kd_core.train.imported import TeacherFile, import_teacher_file, parse_mapping
from kd_core.train.losses import soft_targets as _soft_targets
from kd_core.train.metrics import entropy, predict_logits
from kd_core.train.models import FAMILIES as MODEL_FAMILIES
from kd_core.train.models import describe, student_preset, teacher_preset
from kd_core.train.precision import AUTO_BF16_MIN_STEP_FLOPS, bf16_support
from kd_core.train.precision import PRECISIONS as PRECISIONS
from kd_core.train.zoo import ZOO

# ---------------------------------------------------------------- machine


def cpu_count() -> int:
    return os.cpu_count() or 1


# "auto" in the dashboard leaves a core to the server and the browser, which
# poll while a run is live (engine.auto_threads; benchmarks/RESULTS_engine.md).
DASHBOARD_SPARE_CORES = 1


def thread_choices() -> list[int]:
    """0 (auto: by model size, see engine.auto_threads), then 1 … 2 × cores."""
    return list(range(0, max(1, cpu_count() * 2) + 1))


def threads_label(n: int) -> str:
    return "auto (by model size)" if n == 0 else str(n)


def precision_help() -> str:
    """The sidebar's help for the precision choice, with what this machine can do."""
    native, why = bf16_support(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    return (
        "fp32: float32 throughout. bf16: matmuls and convolutions in bfloat16 (autocast); weights, "
        f"losses, softmax and KL stay float32. auto: bf16 where the device does it natively and a step "
        f"costs over {AUTO_BF16_MIN_STEP_FLOPS:.0e} FLOPs, else fp32. Here: {why}"
        + ("." if native else ", so bf16 is emulated and slower.")
    )


def devices() -> list[str]:
    return ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# The Distill page's λ: 0.5, not the CLI's 0.9. With a transfer set every λ from 0.5 to 1 gained the
# same on digits; without one, on a 600-image folder, λ = 0.9 lost 6.8 points to the baseline where
# λ = 0.5 lost nothing (benchmarks/RESULTS_transfer.md).
DEFAULT_LAMBDA = 0.5


# ---------------------------------------------------------------- data and models


def load_data(dataset: str, root: str = "data", image_size: int = 32) -> Dataset:
    return load_dataset(DataConfig(dataset=dataset, root=root, image_size=image_size))


def model_info(family: str, size: int, depth: int, data: Dataset, width: float = 1.0) -> dict:
    return describe(ModelSpec(family, int(size), int(depth), float(width)), data.input_shape, data.num_classes)


def presets(dataset: str) -> dict:
    return {"teacher": teacher_preset(dataset), "student": student_preset(dataset)}


# ---------------------------------------------------------------- families and their size knobs

FAMILIES = list(MODEL_FAMILIES)
WIDTHS = [0.1, 0.25, 0.35, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0]  # the width multipliers a slider offers
OWN_KNOBS = {
    "mlp": {"size": {"label": "Hidden width", "min": 4, "max": 2048, "step": 4}, "depth": True},
    "cnn": {"size": {"label": "Channel width", "min": 4, "max": 128, "step": 4}, "depth": False},
}


def family_knobs(family: str) -> dict:
    """The size controls a family has: {"size": slider range, "depth": bool} for MLP/CNN,
    {"width": choices} for the torchvision families (a ResNet's depth is in its name)."""
    if family in OWN_KNOBS:
        return OWN_KNOBS[family]
    return {"width": {"label": "Width multiplier", "choices": WIDTHS}, "depth": False}


def family_note(family: str) -> str:
    if family == "mlp":
        return "Multilayer perceptron: hidden width × hidden layers."
    if family == "cnn":
        return "Small CNN: conv blocks of width w, 2w, 4w."
    return f"torchvision {family}: {ZOO[family].note}; stem adapted to small and grey images."


def family_preset(family: str, role: str, dataset: str) -> ModelSpec:
    """The size a family starts at on the Teacher (role "teacher") or Distill page: the
    dataset's preset for its own family; otherwise width 1 for a teacher, 0.5 for a student."""
    preset = presets(dataset)[role]
    if preset.family == family:
        return preset
    if family in OWN_KNOBS:
        return ModelSpec(family, 32 if family == "mlp" else 16, 1) if role == "student" else ModelSpec(family, 256, 2)
    return ModelSpec(family, width=1.0 if role == "teacher" else 0.5)


def compression(student: dict, teacher: dict) -> dict:
    """Ratios teacher / student for params, FLOPs and bytes (>1 means the student is smaller)."""
    ratio = {k: teacher[k] / student[k] if student[k] else float("inf") for k in ("params", "bytes")}
    # a black-box teacher's FLOPs are not counted (None)
    ratio["flops"] = teacher["flops"] / student["flops"] if teacher.get("flops") and student["flops"] else float("nan")
    return ratio


def make_config(
    kind: str,
    dataset: str,
    root: str,
    image_size: int,
    family: str,
    size: int,
    depth: int,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int = 0,
    device: str = "auto",
    optimizer: str = "adam",
    cosine: bool = False,
    temperature: float = 4.0,
    alpha: float = 0.9,
    teacher_id: str | None = None,
    threads: int = 0,
    width: float = 1.0,
    method: str = "kd",
    method_params: tuple[str, ...] = (),
    labels: int = 0,
    label_seed: int = 0,
    transfer: str = "rest",
    transfer_ratio: float = 1.0,
    function_matching: bool = False,
    patience: int = 0,
    precision: str = "fp32",
) -> RunConfig:
    """A run's config from the pages' widgets; `method` and `method_params` as the CLI's
    --method and --method-param read them (a ConfigError names what is wrong). `labels`: the
    label budget in total (0: all); the other label arguments as in LabelConfig.
    `function_matching`: consistent augmentation (shifts, flips where the dataset allows, mixup),
    the teacher seeing the student's view; `patience`: early stopping on validation (0: off)."""
    data = DataConfig(dataset=dataset, root=root, image_size=image_size)
    train = TrainConfig(
        epochs=int(epochs),
        batch_size=int(batch_size),
        lr=float(lr),
        optimizer=optimizer,
        cosine=cosine,
        seed=int(seed),
        device=device,
        threads=int(threads),
        precision=precision,
        spare_cores=DASHBOARD_SPARE_CORES,
        augment=bool(function_matching),
        flip=bool(function_matching) and flips_allowed(dataset),
        mixup=FUNCTION_MATCHING_MIXUP if function_matching else 0.0,
        patience=int(patience),
    )
    distill = None
    if kind == "student":
        distill = DistillConfig(float(temperature), float(alpha), methods=parse_methods(method, list(method_params)))
    return RunConfig(
        kind=kind,
        data=data,
        model=ModelSpec(family, int(size), int(depth), float(width)),
        train=train,
        distill=distill,
        labels=LabelConfig(int(labels), 0, int(label_seed), transfer, float(transfer_ratio)),
        teacher_id=teacher_id,
    )


def config_problem(cfg: RunConfig) -> str | None:
    """Why this run cannot start (the page disables its button and shows this), or None. The
    same check the CLI and the recorder make, so nothing refused is ever stored."""
    try:
        validate_config(cfg)
    except KDError as err:
        return str(err)
    return None


# ---------------------------------------------------------------- stored runs


def open_store(root: str) -> Store:
    return Store(root)


def teachers(store: Store, data: Dataset) -> list[dict]:
    """Finished or stopped teacher runs with weights, usable with this dataset."""
    rows = []
    for r in store.list_runs(kind="teacher", dataset=data.name):
        if r.weights and r.status in ("finished", "stopped"):
            rows.append(
                {
                    "id": r.id,
                    "label": r.label,
                    "status": r.status,
                    "test_acc": r.metrics.get("test_acc"),
                    "params": r.metrics.get("params"),
                    "when": _when(r.created),
                }
            )
    return rows


def _when(created: float) -> str:
    """A run's start, short: the time today, else the day ('09:41', '3 Dec')."""
    t = time.localtime(created)
    same_day = time.strftime("%Y%m%d", t) == time.strftime("%Y%m%d")
    return time.strftime("%H:%M", t) if same_day else f"{t.tm_mday} {time.strftime('%b', t)}"


def load_model(store: Store, run_id: str, data: Dataset) -> nn.Module:
    return experiment.load_teacher(store, run_id, data)


def import_checkpoint(
    store: Store,
    payload: bytes,
    data: Dataset,
    name: str,
    expect: ModelSpec | None = None,
    threads: int = 0,
) -> str:
    """Check an uploaded checkpoint against the dataset (and family/size, if given), then keep it
    as a teacher run through the recorder, as any trained run: measured on the test split and
    timed at the thread count a run trained with `threads` is timed at. Raises CheckpointError."""
    model, meta = load_checkpoint(payload, expect=expect, input_shape=data.input_shape, num_classes=data.num_classes)
    train = TrainConfig(threads=int(threads), spare_cores=DASHBOARD_SPARE_CORES)
    cfg = RunConfig(kind="teacher", data=DataConfig(dataset=data.name), model=meta["spec"], train=train)
    run_id = store.create_run(cfg, label=f"{meta['spec'].label()} (uploaded {name})")
    experiment.record(store, run_id, cfg, data, experiment.Trained("finished", model=model, numbers={"uploaded": name}))
    return run_id


def _upload_json(payload: bytes | None, what: str) -> object:
    if not payload:
        return {}
    try:
        return json.loads(payload)
    except ValueError as err:
        raise ConfigError(f"the {what} is not valid JSON: {err}") from err


def import_teacher_upload(
    store: Store,
    payload: bytes,
    name: str,
    data: Dataset,
    contract_json: bytes | None = None,
    fields: dict | None = None,
    mapping_json: bytes | None = None,
    cross: bool = False,
    expect: ModelSpec | None = None,
    threads: int = 0,
) -> tuple[str, list[str]]:
    """An uploaded teacher kept as a teacher run: a KD Studio checkpoint as `import_checkpoint`;
    a TorchScript, .pt2 or ONNX file as a black box, checked against its input contract (JSON,
    each field overridden by a non-empty `fields` entry) and the class mapping. Returns
    (run id, notes on what was adapted). Raises KDError, before storing anything, on a misfit."""
    with tempfile.TemporaryDirectory(prefix="kd-upload-") as tmp:
        path = Path(tmp) / (Path(name).name or "teacher")
        path.write_bytes(payload)
        if kind_of(path) == "checkpoint":
            return import_checkpoint(store, payload, data, name, expect, threads), []
        base = _upload_json(contract_json, "input contract")
        if not isinstance(base, dict):
            raise ConfigError("the input contract must be a JSON object.")
        given = {k: v for k, v in (fields or {}).items() if v not in (None, "", [])}
        contract = InputContract.from_dict({**base, **given}, f"the input contract of '{name}'")
        mapping = parse_mapping(_upload_json(mapping_json, "class mapping"), "the class mapping")
        return import_teacher_file(store, TeacherFile(path, contract, mapping, cross, name), data, threads)


def run_card(store: Store, run_id: str) -> dict | None:
    """A stored run's headline numbers for metric cards."""
    r = store.get_run(run_id)
    if r is None:
        return None
    m = r.metrics
    b1, b256 = LatencyRow.stored(m, 1), LatencyRow.stored(m, 256)
    return {
        "id": r.id,
        "kind": r.kind,
        "label": r.label,
        "status": r.status,
        "error": r.error,
        "dataset": r.dataset,
        "config": r.config,
        "test_acc": m.get("test_acc"),
        "best_val_acc": m.get("best_val_acc"),
        "params": m.get("params"),
        "bytes": m.get("bytes"),
        "flops": m.get("flops"),
        "agreement": m.get("agreement"),
        "ece": m.get("ece"),
        "latency_b1_ms": b1.median_ms if b1 else None,
        "latency_b256_ms": b256.median_ms if b256 else None,
        "teacher_id": r.teacher_id,
        "labels": m.get("labels"),  # the labelled subset and transfer set (kd_core.train.labels)
        "peak_rss_bytes": m.get("peak_rss_bytes"),  # of the whole process during the run (train/memory.py)
    }


# ---------------------------------------------------------------- jobs


def start_teacher(manager: JobManager, store: Store, data: Dataset, cfg: RunConfig) -> Job:
    def work(emit, stop, job):
        outcome = experiment.train_teacher(store, cfg, data, emit, stop)
        job.add_outcome(outcome)
        return [outcome]

    return manager.start(f"teacher {cfg.model.label()} on {data.name}", "teacher", work)


def start_distill(
    manager: JobManager, store: Store, data: Dataset, teacher: nn.Module, cfg: RunConfig, with_baseline: bool
) -> Job:
    def work(emit, stop, job):
        outcomes = experiment.distill(store, cfg, data, teacher, with_baseline, emit, stop)
        for o in outcomes:
            job.add_outcome(o)
        return outcomes

    if cfg.distill is None:
        raise ConfigError("a student needs its distillation settings (methods, temperature, λ).")
    title = (
        f"distil {cfg.model.label()} ({format_methods(cfg.distill.methods)}, T={cfg.distill.temperature:g}, "
        f"λ={cfg.distill.alpha:g})"
    )
    job = manager.start(title, "distill", work)
    job.note(started_with={**job_settings(cfg), "baseline": with_baseline})
    return job


def job_settings(cfg: RunConfig) -> dict:
    """What a distillation job was started with, as the Distill page's sliders name it."""
    if cfg.distill is None:
        raise ConfigError("a student needs its distillation settings (methods, temperature, λ).")
    return {
        "model": cfg.model.label(),
        "method": format_methods(cfg.distill.methods),
        "T": cfg.distill.temperature,
        "λ": cfg.distill.alpha,
        "epochs": cfg.train.epochs,
        "seed": cfg.train.seed,
    }


def matching_teacher(store: Store, cfg: RunConfig) -> str | None:
    """The newest finished teacher run (with weights) trained exactly as `cfg` says, if any."""
    want = experiment_key(cfg.to_dict())
    for r in store.list_runs(kind="teacher", dataset=cfg.data.dataset, status="finished"):
        if r.weights and experiment_key(r.config.to_dict()) == want:
            return r.id
    return None


# ---------------------------------------------------------------- curves


def term_label(name: str) -> str:
    """A loss term as the curves name it: "ce" -> "CE", "rkd_angle" -> "RKD angle"."""
    head, _, rest = name.partition("_")
    return " ".join([head.upper(), *rest.split("_")]) if rest else head.upper()


def step_frame(snapshot: JobSnapshot, smooth: float = 0.9) -> pd.DataFrame:
    """Long table of per-step losses for every run of a job: step, component, loss, run; one
    component for the total and one per named term (CE and each method's).
    Smoothed by an exponential moving average (TensorBoard-style, weight `smooth`)."""
    frames = []
    for run in snapshot.runs:
        if not run.steps:
            continue
        df = pd.DataFrame(
            [
                {"step": step, "total": total, **{term_label(k): v for k, v in terms.items()}}
                for step, total, terms in run.steps
            ]
        )
        if list(df.columns) == ["step", "total", "CE"]:
            # No teacher (a teacher's own run, a baseline): the total is the CE; one curve says it.
            df = df[["step", "total"]]
        for col in df.columns.drop("step"):
            df[col] = df[col].ewm(alpha=1 - smooth, adjust=True).mean() if smooth > 0 else df[col]
        long = df.melt(id_vars="step", var_name="component", value_name="loss")
        long["run"] = run.label
        frames.append(long)
    return (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["step", "component", "loss", "run"])
    )


def epoch_frame(snapshot: JobSnapshot) -> pd.DataFrame:
    """One row per run and epoch: run, epoch, loss, train_acc, val_acc, then one column per
    loss term any run has (empty where a run has no such term)."""
    rows = [
        {
            "run": run.label,
            **{k: v for k, v in e.items() if k != "terms"},
            **{term_label(k): v for k, v in e.get("terms", {}).items()},
        }
        for run in snapshot.runs
        for e in run.epochs
    ]
    base = ["run", "epoch", "loss", "train_acc", "val_acc"]
    extra = list(dict.fromkeys(k for r in rows for k in r if k not in base))
    return pd.DataFrame(rows, columns=base + extra)


def progress_of(snapshot: JobSnapshot) -> dict:
    """The live run's fraction done, throughput and ETA."""
    last = next((r.last for r in reversed(snapshot.runs) if r.last), None)
    if last is None:
        return {"fraction": 0.0, "text": "starting…", "label": ""}
    frac = last["step"] / last["total_steps"] if last["total_steps"] else 0.0
    label = snapshot.runs[-1].label
    text = (
        f"{label}: epoch {last['epoch']}, step {last['step']}/{last['total_steps']} · "
        f"{last['samples_per_s']:,.0f} samples/s · ETA {last['eta_s']:.0f} s"
    )
    return {"fraction": min(1.0, frac), "text": text, "label": label}


# ---------------------------------------------------------------- soft targets


def image_for_display(data: Dataset, index: int) -> np.ndarray:
    """Test image `index` de-normalised to [0, 1], as (H, W) or (H, W, C)."""
    x = data.test_x[index] * data.std + data.mean  # (C, H, W)
    img = x.clamp(0, 1).permute(1, 2, 0).numpy()
    return img[:, :, 0] if img.shape[2] == 1 else img


def soft_target_view(
    teacher: nn.Module, student: nn.Module | None, data: Dataset, index: int, temperature: float
) -> dict:
    """softmax(z/T) of teacher (and student) on one test image, with entropies in nats."""
    x = data.test_x[index : index + 1]
    out = {"classes": data.classes, "label": data.classes[int(data.test_y[index])], "temperature": temperature}
    for name, model in (("teacher", teacher), ("student", student)):
        if model is None:
            continue
        logits = predict_logits(model.cpu(), x)
        probs = _soft_targets(logits, temperature)[0]
        out[name] = {
            "probs": probs.tolist(),
            "entropy": float(entropy(probs)),
            "prediction": data.classes[int(logits.argmax())],
        }
    return out
