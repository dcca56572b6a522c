"""Measurements a study makes on this machine, all through kd_core.deploy (no timing code here).

A candidate's latency needs no training: its untrained model, exported and run under the
target runtime exactly as the trained one will be (`runtimes.latency_rows`: the same writers,
loaders, warm-up and median), takes the same time, since the time depends on the shapes, not
the weights. So a candidate over budget is dropped before it costs any training.

After training, the accuracy a trial is judged by is that of what would ship: the float model's
validation accuracy, or for int8 the quantized export's, run under the target runtime.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

from kd_core.compress.space import Candidate
from kd_core.config import ModelSpec
from kd_core.deploy import export, runtimes
from kd_core.train.bench import torch_threads
from kd_core.train.data import Dataset
from kd_core.train.metrics import accuracy, predict_logits
from kd_core.train.models import build_model, param_count

WARMUP, REPEATS = 10, 50


def as_stored(model: nn.Module, data: Dataset, kind: str, run_id: str, label: str) -> export.LoadedRun:
    """A model in the shape kd_core.deploy measures and exports (a stored run's)."""
    return export.LoadedRun(run_id, kind, label, model.cpu().eval(), tuple(data.input_shape), list(data.classes))


def latency(run: export.LoadedRun, quantize: str | None, runtime: str, batch_size: int, threads: int) -> dict:
    """{median_ms, p90_ms, bytes, runs, threads, machine} of `run` deployed under `runtime` at
    `batch_size`: one row of runtimes.latency_rows, with the machine it was measured on."""
    variant = runtimes.Variant(run.kind, run, quantize)
    row = runtimes.latency_rows([variant], [runtime], (batch_size,), threads, WARMUP, REPEATS)[0]
    return {
        "median_ms": row["median_ms"],
        "p90_ms": row["p90_ms"],
        "bytes": row["bytes"],
        "runs": row["runs"],
        "threads": threads,
        "machine": runtimes.machine_info(threads),
    }


def candidate_model(spec: ModelSpec, data: Dataset, seed: int = 0) -> nn.Module:
    """The untrained student: the shapes that decide its latency, before any training."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(spec, tuple(data.input_shape), data.num_classes)


def candidate_latency(cand: Candidate, data: Dataset, runtime: str, batch_size: int, threads: int) -> dict:
    run = as_stored(candidate_model(cand.spec, data), data, "student", "candidate", cand.spec.label())
    return latency(run, cand.quantize, runtime, batch_size, threads)


def teacher_reference(teacher: nn.Module, teacher_id: str, data: Dataset, runtime: str, batch: int, threads: int):
    """The teacher's validation and test accuracy (float, as trained) and its latency and file size
    under the target runtime and batch: what every trial is compared with."""
    teacher = teacher.cpu().eval()
    run = as_stored(teacher, data, "teacher", str(teacher_id), "teacher")
    lat = latency(run, None, runtime, batch, threads)
    return {
        "teacher_id": str(teacher_id),
        "val_acc": accuracy(predict_logits(teacher, data.val_x), data.val_y),
        "test_acc": accuracy(predict_logits(teacher, data.test_x), data.test_y),
        "params": param_count(teacher),
        "latency_ms": lat["median_ms"],
        "p90_ms": lat["p90_ms"],
        "size_mb": lat["bytes"] / 1e6,
        "machine": lat["machine"],
    }


def deployed_accuracy(run: export.LoadedRun, quantize: str | None, runtime: str, data: Dataset, threads: int) -> dict:
    """{val_acc, test_acc} of the model as it ships: under the target runtime in int8, or the
    float model itself (every float export is checked to agree with it within 1e-3 of the logits)."""
    if quantize is None:
        return {
            "val_acc": accuracy(predict_logits(run.model, data.val_x), data.val_y),
            "test_acc": accuracy(predict_logits(run.model, data.test_x), data.test_y),
        }
    with tempfile.TemporaryDirectory(prefix="kd-compress-") as tmp, torch_threads(threads), torch.inference_mode():
        fn, _ = runtimes.runner(runtimes.Variant(run.kind, run, quantize), runtime, Path(tmp), threads)
        return {
            "val_acc": accuracy(export.batched(fn, data.val_x), data.val_y),
            "test_acc": accuracy(export.batched(fn, data.test_x), data.test_y),
        }
