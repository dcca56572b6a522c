"""Latency of a run's models across runtimes, and its int8 student beside the float one.

Why a table across runtimes: the student's speed-up over the teacher depends on
where it runs, and a small model can be bound by per-call overhead (Python,
dispatch) rather than FLOPs, which eager PyTorch, TorchScript and ONNX Runtime
pay differently. Every cell is measured the same way as `bench.measure_latency`:
warm-up, many timed calls, median and p90, one fixed thread count (torch's
intra-op threads and ONNX Runtime's intra-op threads alike), reported with the
machine. The exported runtimes time the very files `export` writes, loaded back.

Importing this module does not import torch (the dashboard's pages list rows,
tables and machine facts without it); measuring does. torch's thread count is
process-wide: a measurement sets it for its duration and restores it after, so
measure while no training runs in the same process.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch

from kd_core.deploy import export
from kd_core.errors import CheckpointError, ConfigError
from kd_core.fmt import signed
from kd_core.store import as_store
from kd_core.train.bench import summarize_latency, time_call, torch_threads
from kd_core.train.checkpoint import load_checkpoint
from kd_core.train.metrics import accuracy, predict_logits
from kd_core.train.models import serialized_bytes
from kd_core.train.precision import bf16_support

if TYPE_CHECKING:
    from kd_core.deploy.export import LoadedRun
    from kd_core.store import Store

RUNTIMES = ("eager", "torchscript", "onnxruntime", "onnxruntime-cuda")
# The eager model under bfloat16 autocast: a latency-table row (`bench RUN --runtimes eager,eager-bf16`)
# where the CPU does bf16 natively (train/precision.py); not a deployment target, so not in RUNTIMES.
BF16_RUNTIME = "eager-bf16"
DEFAULT_RUNTIMES = ("eager", "torchscript", "onnxruntime")
ROW_COLUMNS = [
    "model",
    "runtime",
    "precision",
    "batch_size",
    "median_ms",
    "p90_ms",
    "ms_per_sample",
    "samples_per_s",
    "speedup_vs_teacher_eager",
    "threads",
    "runs",
    "bytes",
    "run_id",
]
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16", "amx_bf16")


# ---------------------------------------------------------------- facts (no torch)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpuinfo() -> dict:
    """CPU model name and the SIMD flags that decide float and int8 matmul speed."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"cpu": platform.processor() or platform.machine(), "cpu_flags": []}
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    name = fields.get("model name", platform.processor() or platform.machine())
    if fields.get("cpu family") and fields.get("model"):
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    flags = set(fields.get("flags", "").split())
    return {"cpu": name, "cpu_flags": [f for f in CPU_FLAGS if f in flags]}


def machine_info(threads: int | None = None) -> dict:
    """What a latency figure means nothing without: CPU, cores, threads, library versions."""
    torch = sys.modules.get("torch")
    gpu = None
    if torch is not None and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(0)
    return {
        **_cpuinfo(),
        "cores": os.cpu_count(),
        "threads": threads,
        "torch": _version("torch"),
        "onnxruntime": _version("onnxruntime"),
        "onnx": _version("onnx"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpu": gpu,
    }


def machine_line(m: dict | None) -> str:
    """machine_info as one line, printed above every latency table."""
    if not m:
        return "machine: not recorded"
    return (
        f"machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('threads')} threads, "
        f"flags {', '.join(m.get('cpu_flags') or []) or 'n/a'}, torch {m.get('torch')}, "
        f"onnxruntime {m.get('onnxruntime')}, python {m.get('python')}" + (f", GPU {m['gpu']}" if m.get("gpu") else "")
    )


def available_runtimes() -> list[str]:
    """The runtimes this machine can measure: ONNX Runtime's CUDA provider only with a GPU build."""
    names = ["eager", "torchscript", "onnxruntime"]
    try:
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            names.append("onnxruntime-cuda")
    except ImportError:
        names.remove("onnxruntime")
    return names


def bf16_inference() -> tuple[bool, str]:
    """(eager bf16 is offered here, in words): only where the CPU does bf16 natively."""
    return bf16_support(torch.device("cpu"))


def measurable_runtimes() -> list[str]:
    """available_runtimes, and eager bf16 where the CPU does bf16 natively."""
    return available_runtimes() + ([BF16_RUNTIME] if bf16_inference()[0] else [])


def parse_runtimes(text: str | list | tuple) -> list[str]:
    """'eager,onnxruntime' → checked list; unknown or unavailable names are a KDError."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    known = (*RUNTIMES, BF16_RUNTIME)
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ConfigError(f"unknown runtime(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(known)}.")
    available = measurable_runtimes()
    missing = [n for n in names if n not in available]
    if missing:
        raise ConfigError(
            f"runtime(s) {', '.join(missing)} are not available on this machine (available: {', '.join(available)})."
        )
    return names


def rows_frame(rows: list[dict]):
    """Rows as a pandas DataFrame, known columns first."""

    frame = pd.DataFrame(rows)
    return frame[[c for c in ROW_COLUMNS if c in frame] + [c for c in frame if c not in ROW_COLUMNS]]


def latency_markdown(rows: list[dict]) -> str:
    """The latency table as Markdown: one line per model × runtime × batch size."""
    lines = [
        "| model | runtime | batch | median ms | p90 ms | samples/s | speed-up vs teacher eager |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        speedup = r.get("speedup_vs_teacher_eager")
        lines.append(
            f"| {r['model']} | {r['runtime']} | {r['batch_size']} | {r['median_ms']:.3f} | "
            f"{r['p90_ms']:.3f} | {r['samples_per_s']:,.0f} | "
            f"{'' if speedup is None else f'{speedup:.2f}×'} |"
        )
    return "\n".join(lines)


def quantization_markdown(q: dict) -> list[str]:
    """A `quantization_report` as Markdown table lines."""
    big = max(q["batch_sizes"])
    lines = [
        f"| model | runtime | method | test acc | Δ acc | agreement | bytes | size | median ms (b{big}) | speed-up |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in q["rows"]:
        lines.append(
            f"| {r['model']} | {r['runtime']} | {r['method']} | {r['test_acc']:.4f} | "
            f"{signed(r['acc_delta'])} | {r['agreement']:.4f} | {r['bytes']:,} | {r['size_ratio']:.2f}× | "
            f"{r[f'median_ms_b{big}']:.3f} | {r['speedup_vs_float']:.2f}× |"
        )
    return lines


def add_speedups(rows: list[dict]) -> list[dict]:
    """Speed-up of each row over the teacher under eager PyTorch at the same batch size."""
    base = {r["batch_size"]: r["median_ms"] for r in rows if r["model"] == "teacher" and r["runtime"] == "eager"}
    for r in rows:
        b = base.get(r["batch_size"])
        r["speedup_vs_teacher_eager"] = b / r["median_ms"] if b and r["median_ms"] > 0 else None
    return rows


# ---------------------------------------------------------------- measuring


@dataclass
class Variant:
    """One model to measure: a stored run's float model, as is or quantized to int8."""

    name: str  # teacher | student | student-int8 | ...
    run: LoadedRun
    quantize: str | None = None


def runner(variant: Variant, runtime: str, workdir: Path, threads: int):
    """(logits fn, bytes of what it runs) for a variant under a runtime. The exported
    runtimes go through `export`'s writers and loaders: the files users download."""
    run = variant.run
    if runtime in ("eager", BF16_RUNTIME):
        model = export.quantize_model(run.model) if variant.quantize else run.model
        fn = export.module_logits(model.eval())
        return (bf16_logits(fn) if runtime == BF16_RUNTIME else fn), serialized_bytes(model)
    fmt = "torchscript" if runtime == "torchscript" else "onnx"
    path = workdir / f"{variant.name}{export.SUFFIXES[(fmt, variant.quantize)]}"
    export.write_artifact(run.model, run.input_shape, fmt, variant.quantize, path, run.marker(fmt, variant.quantize))
    fn, _ = export.load_artifact(path, threads, "cuda" if runtime == "onnxruntime-cuda" else "cpu")
    return fn, path.stat().st_size


def bf16_logits(fn):
    """fn under CPU bfloat16 autocast, its logits returned as float32 like every other runtime's."""

    def run(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fn(x).float()

    return run


def row_precision(variant: Variant, runtime: str) -> str:
    return "bfloat16" if runtime == BF16_RUNTIME else variant.quantize or "float32"


def time_fn(fn, input_shape: tuple[int, ...], batch_size: int, warmup: int, repeats: int) -> dict:
    """bench.time_call over one fixed random batch: median/p90 etc. for this batch size."""

    x = torch.randn(batch_size, *input_shape, generator=torch.Generator().manual_seed(batch_size))
    return summarize_latency(time_call(lambda: fn(x), warmup, repeats, min_seconds=0.2), batch_size)


def latency_rows(
    variants: list[Variant],
    runtimes: list[str],
    batch_sizes=(1, 256),
    threads: int = 1,
    warmup: int = 10,
    repeats: int = 50,
) -> list[dict]:
    """One row per variant × runtime × batch size, with speed-ups over the teacher in eager."""

    rows = []
    with tempfile.TemporaryDirectory(prefix="kd-bench-") as tmp, torch_threads(threads), torch.inference_mode():
        for v in variants:
            for runtime in runtimes:
                if v.quantize and runtime == BF16_RUNTIME:  # an int8 model has no bf16 form
                    continue
                fn, size = runner(v, runtime, Path(tmp), threads)
                for bs in batch_sizes:
                    stats = time_fn(fn, v.run.input_shape, bs, warmup, repeats)
                    rows.append(
                        {
                            "model": v.name,
                            "runtime": runtime,
                            "precision": row_precision(v, runtime),
                            "threads": threads,
                            "bytes": size,
                            "run_id": v.run.run_id,
                            **stats,
                        }
                    )
    return add_speedups(rows)


def _teacher_of(store: Store, run: LoadedRun) -> LoadedRun | None:
    """The run's teacher, from the store (or the checkpoint path it was distilled from)."""
    ref = run.record.teacher_id if run.record is not None else None
    if not ref or run.kind == "teacher":
        return None
    if store.get_run(ref) is not None:
        return export.load_run(store, ref)
    path = Path(ref).expanduser()
    if not path.is_file():
        return None
    export.check_archive(path, CheckpointError, "checkpoint")
    model, meta = load_checkpoint(path)
    shape, classes = tuple(meta["input_shape"]), list(meta["classes"])
    return export.LoadedRun(path.name, "teacher", meta["spec"].label(), model.eval(), shape, classes)


def run_variants(store: Store | str | Path, run_id: str) -> list[Variant]:
    """What `bench RUN` measures: a student (or baseline) run → its teacher, itself and itself
    in int8; a teacher run → itself and itself in int8."""
    store = as_store(store)
    run = export.load_run(store, run_id)
    teacher = _teacher_of(store, run)
    variants = [Variant("teacher", teacher)] if teacher is not None else []
    return [*variants, Variant(run.kind, run), Variant(f"{run.kind}-int8", run, "int8")]


def bench_start(
    store: Store | str | Path, run_id: str, runtimes=DEFAULT_RUNTIMES, batch_sizes=(1, 256), threads: int | None = None
) -> tuple[list[Variant], dict]:
    """The models `bench_run` times and its result before any row: checked runtimes, the thread
    count (torch's current one if not given), the machine, and the warning for a missing teacher."""
    runtimes = parse_runtimes(runtimes)
    threads = threads or torch.get_num_threads()
    variants = run_variants(store, run_id)
    warnings = (
        []
        if variants[0].name == "teacher"
        else [f"the teacher of run '{run_id}' is not in the store, so no speed-up over it is given."]
    )
    result = {
        "run_id": run_id,
        "machine": machine_info(threads),
        "runtimes": runtimes,
        "batch_sizes": list(batch_sizes),
        "threads": threads,
        "rows": [],
        "warnings": warnings,
    }
    return variants, result


def bench_step(result: dict, variant: Variant, runtime: str, warmup: int = 10, repeats: int = 50) -> None:
    """Time one model under one runtime at every batch size into `result` (speed-ups recomputed)."""
    rows = latency_rows([variant], [runtime], tuple(result["batch_sizes"]), result["threads"], warmup, repeats)
    result["rows"] = add_speedups(result["rows"] + rows)


def bench_run(
    store: Store | str | Path,
    run_id: str,
    runtimes=DEFAULT_RUNTIMES,
    batch_sizes=(1, 256),
    threads: int | None = None,
    warmup: int = 10,
    repeats: int = 50,
) -> dict:
    """Latency of a run's models under each runtime: {run_id, machine, runtimes, batch_sizes,
    threads, warnings, rows: [{model, runtime, precision, batch_size, median_ms, p90_ms, ms_per_sample,
    samples_per_s, speedup_vs_teacher_eager, threads, runs, bytes, run_id}]}."""
    variants, result = bench_start(store, run_id, runtimes, batch_sizes, threads)
    for v in variants:
        for runtime in result["runtimes"]:
            bench_step(result, v, runtime, warmup, repeats)
    return result


QUANT_METHODS = {
    ("eager", None): "PyTorch float32",
    ("eager", "int8"): "PyTorch dynamic int8 (Linear)",
    ("onnxruntime", None): "ONNX Runtime float32",
    ("onnxruntime", "int8"): "ONNX Runtime dynamic int8 (MatMul/Gemm)",
    (BF16_RUNTIME, None): "PyTorch bfloat16 autocast (matmuls and convolutions)",
}
# bf16 keeps 8 bits of mantissa: logits move by ~1e-2 of their scale, and near-ties may flip.
BF16_TOLERANCE = export.Tolerance(0.05, 0.97)


def _quant_row(
    run: LoadedRun,
    runtime: str,
    quantize: str | None,
    workdir: Path,
    threads: int,
    x,
    y,
    reference,
    batch_sizes,
    warmup: int,
    repeats: int,
) -> dict:
    """Accuracy, agreement with the float model, size and latency of one (runtime, precision)."""
    variant = Variant(run.kind, run, quantize)
    fn, size = runner(variant, runtime, workdir, threads)
    logits = export.batched(fn, x)
    check = export.compare(
        reference, logits, BF16_TOLERANCE if runtime == BF16_RUNTIME else export.TOLERANCES[quantize]
    )
    row = {
        "model": run.kind if not quantize else f"{run.kind}-{quantize}",
        "runtime": runtime,
        "precision": row_precision(variant, runtime),
        "method": QUANT_METHODS[(runtime, quantize)],
        "test_acc": accuracy(logits, y),
        "agreement": check["agreement"],
        "max_abs_diff": check["max_abs_diff"],
        "within_tolerance": check["ok"],
        "bytes": size,
        "threads": threads,
    }
    for bs in batch_sizes:
        stats = time_fn(fn, run.input_shape, bs, warmup, repeats)
        row[f"median_ms_b{bs}"], row[f"p90_ms_b{bs}"] = stats["median_ms"], stats["p90_ms"]
    return row


def quantization_report(
    store: Store | str | Path,
    run_id: str,
    data=None,
    threads: int = 1,
    batch_sizes=(1, 256),
    warmup: int = 10,
    repeats: int = 50,
    bf16: bool = False,
) -> dict:
    """The run's model in float32 and int8, under PyTorch and ONNX Runtime, on its test split,
    and with `bf16` (where `bf16_inference` allows it) in eager PyTorch under bfloat16 autocast:
    {run_id, machine, samples, rows: [{model, runtime, precision, method, test_acc, acc_delta,
    agreement, max_abs_diff, within_tolerance, bytes, size_ratio, median_ms_b<B>, p90_ms_b<B>,
    speedup_vs_float, threads}]}; deltas and ratios are against float32 in the same runtime
    (bf16: in eager PyTorch)."""

    if bf16:
        native, why = bf16_inference()
        if not native:
            raise ConfigError(f"eager bf16 is not offered on this machine: {why}.")
    run = export.load_run(store, run_id)
    x, y = export.eval_split(run, data)
    reference = predict_logits(run.model, x)
    big, rows = f"median_ms_b{max(batch_sizes)}", []
    # (runtime, quantize) groups, each row compared with its group's first (float32) row
    groups = [
        [("eager", None), ("eager", "int8"), *([(BF16_RUNTIME, None)] if bf16 else [])],
        [("onnxruntime", None), ("onnxruntime", "int8")],
    ]
    with tempfile.TemporaryDirectory(prefix="kd-quant-") as tmp, torch_threads(threads), torch.inference_mode():
        for group in groups:
            measured = [
                _quant_row(run, runtime, quantize, Path(tmp), threads, x, y, reference, batch_sizes, warmup, repeats)
                for runtime, quantize in group
            ]
            for row in measured:  # against float32 in the same runtime
                row["acc_delta"] = row["test_acc"] - measured[0]["test_acc"]
                row["size_ratio"] = row["bytes"] / measured[0]["bytes"]
                row["speedup_vs_float"] = measured[0][big] / row[big]
            rows += measured
    return {
        "run_id": run_id,
        "machine": machine_info(threads),
        "samples": len(x),
        "batch_sizes": list(batch_sizes),
        "rows": rows,
    }
