"""What the dashboard's Deployment section asks of kd_core, in plain data.

Distill, then quantize, then ship: a stored run's models (its teacher, itself
and itself in int8) timed under eager PyTorch, TorchScript and ONNX Runtime;
float against int8 in accuracy, size and speed; and the files to download
(weights, checked TorchScript/ONNX exports, model card).

Importing this module does not import torch: the functions that measure or
export import kd_core.deploy.export / kd_core.deploy.runtimes' measuring code when called.
Measuring sets torch's thread count for its duration (process-wide), so the
dashboard runs it as a job in the single worker (`start_measure`), never beside
training. Results are plain dicts and pandas DataFrames.
"""

from __future__ import annotations

import io
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from kd_core.config import timing_threads as timing_threads  # re-exported for the Deployment tab
from kd_core.deploy import runtimes as rt
from kd_core.deploy.export import ExportError, export_bytes, weights_bytes
from kd_core.deploy.modelcard import card_files
from kd_core.deploy.runtimes import bf16_inference as bf16_inference  # (the tab offers eager bf16, why)
from kd_core.deploy.runtimes import machine_line as machine_line
from kd_core.errors import KDError
from kd_core.jobs import JobBusy
from kd_core.records import StoredRun
from kd_core.stats import accuracy_difference, sampling_noise
from kd_core.store import Store, as_store
from kd_core.views.compare import STUDENT_KINDS, usable_runs

if TYPE_CHECKING:
    from kd_core.jobs import Job, JobManager, JobSnapshot

JOB_KIND = "deploy"
NOTE = "deploy"  # the job note that carries the measurement
DEFAULT_BATCHES = (1, 256)
RUNTIME_LABELS = {
    "eager": "eager PyTorch",
    "torchscript": "TorchScript",
    "onnxruntime": "ONNX Runtime",
    "onnxruntime-cuda": "ONNX Runtime (CUDA)",
    rt.BF16_RUNTIME: "eager PyTorch, bf16",
}
# what the Downloads offer: artifact -> (format, quantize)
EXPORTS = {
    "torchscript": ("torchscript", None),
    "torchscript-int8": ("torchscript", "int8"),
    "onnx": ("onnx", None),
    "onnx-int8": ("onnx", "int8"),
}


# ---------------------------------------------------------------- which run


def deploy_options(store: Store, dataset: str, teacher_id: str | None, picked: Sequence[str] = ()) -> list[dict]:
    """Runs of `dataset` one can measure and download (finished or stopped, with weights):
    the students picked on the page first, then the teacher in use, then the rest, newest
    first. Each: {id, label, kind, teacher_id}."""
    runs = {r.id: r for r in usable_runs(store, dataset) if r.weights}
    order = [*picked, *([teacher_id] if teacher_id else []), *runs]
    return [
        {"id": rid, "label": runs[rid].label, "kind": runs[rid].kind, "teacher_id": runs[rid].teacher_id}
        for rid in dict.fromkeys(order)
        if rid in runs
    ]


def default_run(options: list[dict], picked: Sequence[str], teacher_id: str | None) -> str | None:
    """The student picked on the page, else the teacher's latest student, else its latest
    baseline, else the first option."""
    by_id = {o["id"]: o for o in options}
    for rid in picked:
        if rid in by_id and by_id[rid]["kind"] == "student":
            return rid
    for kind in STUDENT_KINDS:
        for o in options:  # newest first after the picked ones and the teacher
            if o["kind"] == kind and o["teacher_id"] == teacher_id:
                return o["id"]
    return options[0]["id"] if options else None


def option_label(option: dict) -> str:
    return f"{option['label']} · {option['kind']} · {option['id']}"


def teacher_in_store(store: Store, run_id: str) -> str | None:
    """The run's teacher id when that teacher is a stored run with weights."""
    run = store.get_run(run_id)
    if run is None or run.kind == "teacher" or not run.teacher_id:
        return None
    teacher = store.get_run(run.teacher_id)
    return run.teacher_id if teacher is not None and teacher.weights else None


# ---------------------------------------------------------------- measuring


def tab_runtimes(with_bf16: bool = True) -> list[str]:
    """What the Deployment tab measures: the default runtimes this machine has, and eager
    PyTorch under bf16 autocast where the CPU does bf16 natively (and `with_bf16`)."""
    names = [r for r in rt.DEFAULT_RUNTIMES if r in rt.available_runtimes()]
    return names + ([rt.BF16_RUNTIME] if with_bf16 and rt.bf16_inference()[0] else [])


def _test_acc(record: StoredRun | None) -> float | None:
    return record.metrics.get("test_acc") if record is not None else None


def measure(
    store: Store | str | Path,
    run_id: str,
    *,
    data=None,
    threads: int = 1,
    runtimes: Sequence[str] | None = None,
    batch_sizes: Sequence[int] = DEFAULT_BATCHES,
    warmup: int = 10,
    repeats: int = 50,
    publish: Callable[[dict], None] = lambda r: None,
    stop: threading.Event | None = None,
) -> dict:
    """`runtimes.bench_run` and `runtimes.quantization_report` for one run, step by step:
    after each model × runtime the partial result goes to `publish`, and `stop` is checked.

    Returns {run_id, label, kind, models, accuracy{model: test acc}, machine, threads, runtimes,
    batch_sizes, warmup, repeats, warnings, rows (bench_run's rows), quantization
    (quantization_report's result, or None), steps_done, steps_total, phase, complete,
    stopped, seconds}; with machine, threads and rows it is also a `bench_run` result,
    which `modelcard.model_card(latency=...)` takes."""
    started = time.perf_counter()
    store = as_store(store)
    names = list(runtimes) if runtimes else tab_runtimes(with_bf16=False)
    variants, result = rt.bench_start(store, run_id, names, batch_sizes, threads)
    run = next(v.run for v in variants if v.run.run_id == run_id)  # as loaded for timing
    result.update(
        label=run.label,
        kind=run.kind,
        models=[v.name for v in variants],
        accuracy={v.name: _test_acc(v.run.record) for v in variants if not v.quantize},
        warmup=warmup,
        repeats=repeats,
        quantization=None,
        steps_done=0,
        steps_total=len(variants) * len(result["runtimes"]) + 1,
        phase="starting",
        complete=False,
        stopped=False,
        seconds=0.0,
    )

    def step(phase: str) -> bool:
        result["phase"], result["seconds"] = phase, time.perf_counter() - started
        publish(result)
        if stop is not None and stop.is_set():
            result["stopped"] = True
            publish(result)
            return False
        return True

    for v in variants:
        for name in result["runtimes"]:
            if not step(f"timing {v.name} under {RUNTIME_LABELS.get(name, name)}"):
                return result
            rt.bench_step(result, v, name, warmup, repeats)
            result["steps_done"] += 1
    if not step("float32 against int8: accuracy on the test split, size and latency"):
        return result
    result["quantization"] = rt.quantization_report(
        store,
        run_id,
        data=data,
        threads=threads,
        batch_sizes=tuple(batch_sizes),
        warmup=warmup,
        repeats=repeats,
        bf16=rt.BF16_RUNTIME in result["runtimes"],
    )
    result["steps_done"] += 1
    result.update(complete=True, phase="done", seconds=time.perf_counter() - started)
    publish(result)
    return result


class MeasureBusy(KDError):
    """Another job is running in this process: a measurement must not run beside it."""


def start_measure(manager: JobManager, store: Store | str | Path, run_id: str, *, label: str = "", **kw) -> Job:
    """`measure` as a job in the manager's single worker; MeasureBusy while another job runs.
    The job publishes its partial and final result as the note `deploy` (and its run id as
    `deploy_run` at once); it returns no training outcomes, so it ends "finished", or
    "stopped" when asked to stop, or "failed" with the error's message."""

    def work(emit, stop, job):
        measure(store, run_id, stop=stop, publish=lambda r: job.note(**{NOTE: r}), **kw)
        return []

    try:
        job = manager.start(f"measure {label or run_id} across runtimes", JOB_KIND, work)
    except JobBusy as err:
        raise MeasureBusy(
            f"Cannot measure now: {err} Timings taken beside another job would be "
            "wrong, and torch's thread count is process-wide."
        ) from err
    job.note(**{f"{NOTE}_run": run_id})
    return job


def job_run(snapshot: JobSnapshot) -> str | None:
    """The run a deploy job measures (None for other jobs)."""
    return snapshot.notes.get(f"{NOTE}_run") if snapshot.kind == JOB_KIND else None


def measurement(snapshot: JobSnapshot) -> dict | None:
    """The (partial) measurement a deploy job's snapshot carries, if any."""
    return snapshot.notes.get(NOTE)


# ---------------------------------------------------------------- tables


def runtime_label(name: str) -> str:
    return RUNTIME_LABELS.get(name, name)


def latency_frame(result: dict) -> pd.DataFrame:
    """One row per model × runtime × batch size (bench_run's rows), runtime labels in `runtime_label`."""
    if not result.get("rows"):
        return pd.DataFrame(columns=[*rt.ROW_COLUMNS, "runtime_label"])
    frame = rt.rows_frame(result["rows"])
    return frame.assign(runtime_label=frame["runtime"].map(runtime_label))


def latency_table(result: dict) -> pd.DataFrame:
    """One row per model × runtime: precision, size, and per batch size B the columns
    b<B>_median_ms, b<B>_p90_ms, b<B>_speedup (over the teacher in eager PyTorch);
    samples_per_s at the largest batch."""
    long = latency_frame(result)
    out = []
    for (model, runtime), part in long.groupby(["model", "runtime"], sort=False):
        row = {
            "model": model,
            "runtime": runtime_label(runtime),
            "precision": part["precision"].iloc[0],
            "size_kb": part["bytes"].iloc[0] / 1e3,
        }
        for r in part.itertuples():
            row[f"b{r.batch_size}_median_ms"], row[f"b{r.batch_size}_p90_ms"] = r.median_ms, r.p90_ms
            row[f"b{r.batch_size}_speedup"] = r.speedup_vs_teacher_eager
        row["samples_per_s"] = part.loc[part["batch_size"].idxmax(), "samples_per_s"]
        out.append(row)
    return pd.DataFrame(out)


def quantization_table(result: dict) -> pd.DataFrame:
    """quantization_report's rows (float32 and int8 × PyTorch and ONNX Runtime, and eager bf16
    where measured), size in kB."""
    q = result.get("quantization")
    if not q:
        return pd.DataFrame()
    frame = pd.DataFrame(q["rows"])
    return frame.assign(runtime=frame["runtime"].map(runtime_label), size_kb=frame["bytes"] / 1e3)


def _accuracy_row(by_key: dict, precision: str, runtime: str) -> dict | None:
    """The quantization report's row that measured accuracy for `precision` under `runtime`
    (None for float32, whose accuracy is the run's): int8 under ONNX Runtime quantizes its own
    graph, TorchScript scripts the eager int8 model; bf16 is eager PyTorch under autocast."""
    if precision == "int8":
        return by_key.get(("int8", "onnxruntime" if runtime.startswith("onnxruntime") else "eager"))
    if precision == "bfloat16":
        return by_key.get(("bfloat16", rt.BF16_RUNTIME))
    return None


def options(result: dict) -> list[dict]:
    """Every way to ship the measured run: its float32 and int8 models under each runtime (and
    the float model under bf16 autocast where measured), each {model, precision, runtime, acc,
    agreement, bytes, ms: {batch: median}, equal}; `equal`: its test accuracy is within the test
    set's sampling noise of the float32 model's (95%, paired by image through its agreement with
    the float32 model). An int8 or bf16 option whose accuracy was not measured is never equal."""
    rows, q = result.get("rows") or [], result.get("quantization") or {}
    kind = result["kind"]
    by_key = {(r["precision"], r["runtime"]): r for r in q.get("rows", [])}
    float_acc = result["accuracy"].get(kind)
    if float_acc is None and ("float32", "eager") in by_key:
        float_acc = by_key[("float32", "eager")]["test_acc"]
    n = int(q.get("samples") or 0)
    out = []
    for model in (kind, f"{kind}-int8"):
        for runtime in dict.fromkeys(r["runtime"] for r in rows if r["model"] == model):
            mine = [r for r in rows if r["model"] == model and r["runtime"] == runtime]
            precision = mine[0].get("precision", "int8" if model.endswith("-int8") else "float32")
            quant = _accuracy_row(by_key, precision, runtime)
            acc = quant["test_acc"] if quant else (float_acc if precision == "float32" else None)
            agreement = quant["agreement"] if quant else 1.0
            equal = acc is not None and float_acc is not None
            if acc is not None and float_acc is not None and precision != "float32":
                equal = abs(acc - float_acc) <= sampling_noise(acc, float_acc, n, 1 - agreement)
            out.append(
                {
                    "model": model,
                    "precision": precision,
                    "runtime": runtime_label(runtime),
                    "acc": acc,
                    "agreement": agreement,
                    "bytes": mine[0]["bytes"],
                    "ms": {r["batch_size"]: r["median_ms"] for r in mine},
                    "equal": equal,
                }
            )
    return out


def headline(result: dict) -> dict | None:
    """The whole effect on one line: the base model (the teacher when it is in the store, else
    the run itself) in eager PyTorch float32, against the run's fastest option at batch 1 among
    those as accurate as its float32 model (see `options`; int8 only when it is both).

    {base, final, speedup {batch: ×}, size_ratio (base bytes / final bytes), accuracy (a
    stats.Difference of final against base, or None), smallest (the int8 option, reported for
    its size, when it is not the final one), choices (how many options were compared)}.
    base and final: {model, precision, runtime, acc, bytes, ms: {batch: median}}."""
    rows, q = result.get("rows") or [], result.get("quantization")
    if not result.get("complete") or not rows or not q:
        return None
    base_name = result["models"][0]
    base_rows = {r["batch_size"]: r for r in rows if r["model"] == base_name and r["runtime"] == "eager"}
    opts = options(result)
    first = min(result["batch_sizes"])
    candidates = [o for o in opts if o["equal"] and first in o["ms"]] or [o for o in opts if first in o["ms"]]
    final = min(candidates, key=lambda o: o["ms"][first])
    base_acc = result["accuracy"].get(base_name)
    if base_name == result["kind"]:  # no teacher in the store: the float model itself
        base_acc = next(r["test_acc"] for r in q["rows"] if r["precision"] == "float32" and r["runtime"] == "eager")
    int8 = [o for o in opts if o["precision"] == "int8"]
    smallest = min(int8, key=lambda o: o["bytes"]) if int8 and final["precision"] != "int8" else None
    n = int(q.get("samples") or 0)
    accuracy = None
    if base_acc is not None and final["acc"] is not None and base_name != result["kind"]:
        accuracy = accuracy_difference({0: final["acc"]}, {0: base_acc}, n)
    big = max(result["batch_sizes"])
    return {
        "base": {
            "model": base_name,
            "precision": "float32",
            "runtime": runtime_label("eager"),
            "acc": base_acc,
            "bytes": base_rows[big]["bytes"],
            "ms": {b: r["median_ms"] for b, r in base_rows.items()},
        },
        "final": final,
        "speedup": {b: base_rows[b]["median_ms"] / final["ms"][b] for b in final["ms"] if b in base_rows},
        "size_ratio": base_rows[big]["bytes"] / final["bytes"],
        "accuracy": accuracy,
        "smallest": smallest,
        "choices": len(opts),
    }


# ---------------------------------------------------------------- downloads


def weights(store: Store | str | Path, run_id: str) -> dict:
    """The run's checkpoint: {ok, filename, mime, data} or {ok: False, error}."""
    try:
        return {"ok": True, **weights_bytes(store, run_id)}
    except KDError as err:
        return {"ok": False, "error": str(err)}


def build_export(store: Store | str | Path, run_id: str, artifact: str, data=None) -> dict:
    """Export, load back and check on the test split (see kd_core.deploy.export): {ok, filename, mime,
    data, report, seconds}; refused or failed: {ok: False, error, report (may be empty)}."""
    fmt, quantize = EXPORTS[artifact]
    started = time.perf_counter()
    try:
        built = export_bytes(store, run_id, fmt, quantize, data=data)
    except ExportError as err:
        return {"ok": False, "error": str(err), "report": err.report}
    except KDError as err:
        return {"ok": False, "error": str(err), "report": {}}
    return {"ok": True, **built, "seconds": time.perf_counter() - started}


def check_text(report: dict) -> str:
    """An export check in one line: max |Δlogit| and top-1 agreement against the float model."""
    if not report or "max_abs_diff" not in report:
        return ""
    t = report.get("tolerance", {})
    text = (
        f"max |Δlogit| {report['max_abs_diff']:.3g} (allowed {t.get('max_abs_diff', float('nan')):.3g}) · "
        f"top-1 agreement {report['agreement']:.4f} (at least {t.get('min_agreement', float('nan')):g})"
    )
    if report.get("samples"):
        text += f" on {report['samples']} test samples"
    if report.get("test_acc") is not None and report.get("reference_test_acc") is not None:
        text += f" · test acc {report['test_acc']:.4f} (PyTorch float32 {report['reference_test_acc']:.4f})"
    return text


def card(store: Store | str | Path, run_id: str, result: dict | None = None) -> dict:
    """The model card: {ok, zip: bytes, zip_name, files: {name: bytes}}, with the measurement
    `result` (latency and int8) when it is a complete one of this run; {ok: False, error}."""
    use = result if result and result.get("complete") and result.get("run_id") == run_id else None
    latency, quant = (use, use["quantization"]) if use else (None, None)
    try:
        files = card_files(store, run_id, latency, quant)
    except KDError as err:
        return {"ok": False, "error": str(err)}
    buf = io.BytesIO()  # as modelcard.card_zip lays it out, from the same files (built once)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, payload in files.items():
            z.writestr(f"{run_id}/{name}", payload)
    return {
        "ok": True,
        "zip": buf.getvalue(),
        "zip_name": f"{run_id}_model_card.zip",
        "files": files,
        "with_measurement": use is not None,
    }
