"""Training-step time at 1 thread and at all cores, by model size: the evidence
behind `kd_core.train.engine.auto_threads` (1 thread below AUTO_THREADS_MIN_STEP_FLOPS).

Each row times the engine's step (index_select batch, forward, Hinton loss,
backward, fused Adam) of one student on random data, interleaving the thread
counts (1, N, 1, N) and keeping the best of each, so load from other processes
hits both alike. This is a script, not a test:

    python benchmarks/bench_threads.py [--steps 150]

Run it once on an idle machine and once while something else runs (the browser,
a second training): a second thread that helps when idle can hurt when busy.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from kd_core.config import ModelSpec
from kd_core.train.engine import AUTO_THREADS_MIN_STEP_FLOPS, auto_threads
from kd_core.train.losses import hinton_kd_loss
from kd_core.train.models import build_model, describe

CASES = [  # (student, input shape, batch): the presets and sizes the sliders reach
    (ModelSpec("mlp", 32, 1), (1, 8, 8), 32),
    (ModelSpec("mlp", 64, 1), (1, 28, 28), 32),
    (ModelSpec("mlp", 128, 1), (1, 28, 28), 64),
    (ModelSpec("mlp", 256, 1), (1, 28, 28), 64),
    (ModelSpec("mlp", 512, 1), (1, 28, 28), 64),
    (ModelSpec("mlp", 1024, 2), (1, 28, 28), 64),
    (ModelSpec("cnn", 1, 1), (1, 28, 28), 64),
    (ModelSpec("cnn", 8, 1), (1, 28, 28), 64),
]


def step_ms(spec: ModelSpec, shape: tuple, batch: int, threads: int, steps: int) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(spec, shape, 10)
    x, y, t = torch.randn(batch * steps, *shape), torch.randint(0, 10, (batch * steps,)), torch.randn(batch * steps, 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)

    def step(i: int) -> None:
        idx = torch.arange(i * batch, (i + 1) * batch)
        out = model(x.index_select(0, idx))
        loss = hinton_kd_loss(out, t.index_select(0, idx), y.index_select(0, idx), 4.0, 0.9).total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()

    for i in range(min(20, steps)):
        step(i)
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    return (time.perf_counter() - start) / steps * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=150)
    args = p.parse_args()
    cores = os.cpu_count() or 1
    print(
        f"{cores} cores, torch {torch.__version__}, load average {os.getloadavg()[0]:.2f}; "
        f"auto threshold {AUTO_THREADS_MIN_STEP_FLOPS / 1e6:.0f} MFLOP/step"
    )
    print(f"| student | batch | MFLOP/step | 1 thread ms | {cores} threads ms | {cores} / 1 | auto picks |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for spec, shape, batch in CASES:
        step_flops = 3 * describe(spec, shape, 10)["flops"] * batch
        runs = [step_ms(spec, shape, batch, n, args.steps) for n in (1, cores, 1, cores)]
        one, many = min(runs[0::2]), min(runs[1::2])
        print(
            f"| {spec.label()} | {batch} | {step_flops / 1e6:.1f} | {one:.3f} | {many:.3f} | {many / one:.2f} | "
            f"{auto_threads(step_flops, cores)} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
