"""Deployment benchmark on Fashion-MNIST: a teacher, its distilled student and the int8
student under eager PyTorch, TorchScript and ONNX Runtime.

Trains both quickly (real data, Debian's dataset-fashion-mnist files), checks every
export against PyTorch on the test split, measures latency at batch 1 and 256 with
a fixed thread count, and says how far the student's batch-256 throughput is from
its FLOP floor at this machine's measured matmul rate. Prints the report and writes
it to benchmarks/RESULTS_deploy.md.

    python benchmarks/bench_deploy.py [--threads 1] [--epochs 2] [--repeats 50]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from kd_core import export as ex
from kd_core import runtimes as rt
from kd_core.config import DataConfig, DistillConfig, RunConfig, TrainConfig
from kd_core.store import Store
from kd_core.train.bench import matmul_flops_per_s
from kd_core.train.data import load_dataset
from kd_core.train.models import student_preset, teacher_preset
from kd_core.train.recorder import distill, train_teacher

BATCHES = (1, 256)
RESULTS = Path(__file__).with_name("RESULTS_deploy.md")


def train_pair(store: Store, data, epochs: int, threads: int) -> tuple[str, str, list[str]]:
    """Teacher and distilled student at the dataset's presets; returns their ids and a summary."""
    train = TrainConfig(epochs=epochs, batch_size=128, lr=1e-3, seed=0, threads=threads)
    cfg = RunConfig(
        kind="teacher", data=DataConfig(dataset="fashion-mnist"), model=teacher_preset("fashion-mnist"), train=train
    )
    teacher = train_teacher(store, cfg, data)
    student = distill(
        store,
        replace(
            cfg,
            kind="student",
            model=student_preset("fashion-mnist"),
            distill=DistillConfig(temperature=4.0, alpha=0.9),
            teacher_id=teacher.run_id,
        ),
        data,
        teacher.model,
        with_baseline=False,
    )[0]
    lines = [
        f"- {o.kind}: {cfg_label} — test accuracy {o.metrics['test_acc']:.4f}, {o.metrics['params']:,} params, "
        f"{o.metrics['flops']:,} FLOPs/sample, trained {o.metrics['seconds']:.1f} s"
        for o, cfg_label in ((teacher, cfg.model.label()), (student, student_preset("fashion-mnist").label()))
    ]
    return teacher.run_id, student.run_id, lines


def export_checks(store: Store, teacher: str, student: str, data) -> list[str]:
    """Every export verified against PyTorch on the 10,000 test images."""
    lines = [
        "| model | format | bytes | max abs Δlogit | allowed | top-1 agreement | test acc |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    cases = [(teacher, f, None) for f in ex.FORMATS] + [(student, f, q) for f in ex.FORMATS for q in ex.QUANTIZE]
    for run_id, fmt, quantize in cases:
        r = ex.export_run(store, run_id, fmt, quantize, data=data)
        lines.append(
            f"| {r['kind']} | {fmt}{' int8' if quantize else ''} | {r['bytes']:,} | "
            f"{r['max_abs_diff']:.2e} | {r['tolerance']['max_abs_diff']:.2e} | {r['agreement']:.4f} | "
            f"{r['test_acc']:.4f} |"
        )
    return lines


def speedups(rows: list[dict]) -> list[str]:
    """Student (and int8 student) over the teacher, each runtime against the teacher in eager."""
    lines = ["| model | runtime | speed-up at batch 1 | speed-up at batch 256 |", "|---|---|---:|---:|"]
    by = {(r["model"], r["runtime"], r["batch_size"]): r["speedup_vs_teacher_eager"] for r in rows}
    for model in ("student", "student-int8"):
        for runtime in dict.fromkeys(r["runtime"] for r in rows):
            lines.append(f"| {model} | {runtime} | {by[(model, runtime, 1)]:.1f}× | {by[(model, runtime, 256)]:.1f}× |")
    return lines


def flop_floor(store: Store, rows: list[dict], threads: int) -> list[str]:
    """Batch-256 time against FLOPs / measured matmul rate: how much is overhead, not arithmetic.
    The rate is the best of two sizes (512² spills L2, 256² does not), each a median over calls."""
    with rt.torch_threads(threads):
        rates = {n: matmul_flops_per_s(n) for n in (256, 512)}
    rate = max(rates.values())
    flops = {r.kind: r.metrics["flops"] for r in store.list_runs()}
    lines = [
        f"Measured float32 matmul rate, {threads} thread(s): "
        + ", ".join(f"{n}×{n}: {v / 1e9:.1f} GFLOP/s" for n, v in rates.items())
        + f"; the floor uses the best, {rate / 1e9:.1f} GFLOP/s. "
        f"Teacher/student FLOP ratio: {flops['teacher'] / flops['student']:.1f}×.",
        "",
        "| model | runtime | FLOPs per batch of 256 | floor ms | measured ms | × floor | achieved GFLOP/s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["batch_size"] != 256 or r["model"] not in ("teacher", "student"):
            continue
        work = flops[r["model"]] * 256
        floor_ms = work / rate * 1e3
        lines.append(
            f"| {r['model']} | {r['runtime']} | {work:,} | {floor_ms:.4f} | {r['median_ms']:.4f} | "
            f"{r['median_ms'] / floor_ms:.2f}× | {work / r['median_ms'] / 1e6:.1f} |"
        )
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime intra-op threads")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--out", default=str(RESULTS))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    started, load_before = time.perf_counter(), os.getloadavg()
    data = load_dataset(DataConfig(dataset="fashion-mnist"))
    with tempfile.TemporaryDirectory(prefix="kd-bench-deploy-") as tmp:
        store = Store(tmp)
        teacher, student, trained = train_pair(store, data, a.epochs, a.threads)
        checks = export_checks(store, teacher, student, data)
        wall, cpu = time.perf_counter(), time.process_time()
        bench = rt.bench_run(store, student, rt.DEFAULT_RUNTIMES, BATCHES, a.threads, a.warmup, a.repeats)
        cpu_share = (time.process_time() - cpu) / (time.perf_counter() - wall) / a.threads
        quant = rt.quantization_report(store, student, data, a.threads, BATCHES, a.warmup, a.repeats)
        floor = flop_floor(store, bench["rows"], a.threads)
    load = (
        f"Contention: load average (1 min) {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after, on "
        f"{os.cpu_count()} cores; while the latency table was measured this process got {cpu_share:.0%} of "
        f"its {a.threads} thread(s)' time (100% = never preempted). Calls longer than a scheduler slice "
        "(the teacher at batch 256) suffer most."
    )
    report = [
        "# Deployment benchmark: Fashion-MNIST teacher → student",
        "",
        f"`python benchmarks/bench_deploy.py --threads {a.threads} --epochs {a.epochs} --warmup {a.warmup} "
        f"--repeats {a.repeats}` — {time.strftime('%Y-%m-%d %H:%M')}, "
        f"{time.perf_counter() - started:.0f} s in all.",
        "",
        rt.machine_line(bench["machine"]),
        "",
        load,
        "",
        "## Models",
        "",
        *trained,
        "",
        "## Exports checked on the test split (10,000 images)",
        "",
        *checks,
        "",
        f"## Latency ({a.threads} thread(s), median of ≥{a.repeats} calls after {a.warmup} warm-up)",
        "",
        rt.latency_markdown(bench["rows"]),
        "",
        "## Speed-up of the student over the teacher in eager PyTorch",
        "",
        *speedups(bench["rows"]),
        "",
        "## int8 student beside the float student",
        "",
        *rt.quantization_markdown(quant),
        "",
        "## Batch-256 throughput against the FLOP floor",
        "",
        *floor,
        "",
    ]
    text = "\n".join(report)
    print(text)
    Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
