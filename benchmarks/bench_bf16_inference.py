"""Eager inference in bf16 autocast against float32, side by side, for models of several sizes:
what the Deployment tab's "eager PyTorch, bf16" row measures, on untrained models (speed does not
depend on the weights).

Each model is timed through the same code the tab uses (`runtimes.runner` under "eager" and
"eager-bf16", `runtimes.time_fn`), fp32 and bf16 in turn per batch size so that a load spike hits
both alike. Prints the median ms of each and bf16's speed-up, the CPU and whether it does bf16
natively. Refused on a CPU without bf16 units: there the tab does not offer the row.

    python benchmarks/bench_bf16_inference.py [--threads 2] [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from kd_core.config import ModelSpec
from kd_core.deploy import runtimes as rt
from kd_core.deploy.export import LoadedRun
from kd_core.train.bench import torch_threads
from kd_core.train.models import build_model, flops_per_sample

MODELS = {  # name -> (spec, input shape)
    "MLP 784-64": (ModelSpec("mlp", 64, 1), (1, 28, 28)),
    "MLP 784-1024-1024": (ModelSpec("mlp", 1024, 2), (1, 28, 28)),
    "CNN w8": (ModelSpec("cnn", 8), (1, 28, 28)),
    "CNN w32": (ModelSpec("cnn", 32), (1, 28, 28)),
    "resnet18 ×0.5, 32 px": (ModelSpec("resnet18", width=0.5), (3, 32, 32)),
}


def time_model(spec: ModelSpec, shape: tuple[int, ...], batches, threads: int, warmup: int, repeats: int) -> list:
    model = build_model(spec, shape, 10).eval()
    run = LoadedRun("bench", "teacher", spec.label(), model, shape, [str(i) for i in range(10)])
    variant = rt.Variant("teacher", run)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch_threads(threads):
        fns = {r: rt.runner(variant, r, Path(tmp), threads)[0] for r in ("eager", rt.BF16_RUNTIME)}
        for batch in batches:
            ms = {r: rt.time_fn(fn, shape, batch, warmup, repeats)["median_ms"] for r, fn in fns.items()}
            rows.append((batch, ms["eager"], ms[rt.BF16_RUNTIME]))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--batches", default="1,256")
    a = p.parse_args()
    ok, why = rt.bf16_inference()
    info = rt.machine_info(a.threads)
    print(f"CPU: {info['cpu']} — {why}; {a.threads} thread(s); load average {os.getloadavg()[0]:.2f}")
    if not ok:
        print("error: this CPU has no bf16 units; the Deployment tab does not offer eager bf16 here.", file=sys.stderr)
        return 2
    batches = [int(b) for b in a.batches.split(",")]
    print("| model | MFLOP/sample | batch | fp32 ms | bf16 ms | bf16 speed-up |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (spec, shape) in MODELS.items():
        mflop = flops_per_sample(build_model(spec, shape, 10), shape) / 1e6
        for batch, fp32, bf16 in time_model(spec, shape, batches, a.threads, a.warmup, a.repeats):
            print(f"| {name} | {mflop:.2f} | {batch} | {fp32:.3f} | {bf16:.3f} | {fp32 / bf16:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
