"""torch.compile for the training step on CPU: worth a setting here? One training step (forward,
float32 cross-entropy, backward, fused Adam) of the engine's models, eager against
`torch.compile(model)` (inductor, default mode), medians of timed steps after warm-up, plus the
compile time (the first compiled steps). One run, the arms interleaved; prints the CPU.

    python benchmarks/bench_compile.py [--steps 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from kd_core.config import ModelSpec
from kd_core.train.models import build_model
from kd_core.train.precision import bf16_support

CASES = {  # label -> (spec, input shape, channels-last)
    "MLP 784-512-10 (bench_engine's student)": (ModelSpec("mlp", 512, 1), (1, 28, 28), False),
    "CNN w32 on 28 px (channels-last)": (ModelSpec("cnn", 32), (1, 28, 28), True),
}


def stepper(model, x, y):
    opt = torch.optim.Adam(model.parameters(), fused=True)

    def step():
        loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def timed(step, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(
        f"torch {torch.__version__}, {os.cpu_count()} cores, {a.threads} thread(s); {bf16_support(torch.device('cpu'))[1]}"
    )
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    for label, (spec, shape, cl) in CASES.items():
        torch.manual_seed(0)
        x, y = torch.randn(a.batch_size, *shape), torch.randint(0, 10, (a.batch_size,))
        fmt = torch.channels_last if cl else torch.contiguous_format
        x = x.contiguous(memory_format=fmt)
        eager_model = build_model(spec, shape, 10).to(memory_format=fmt)
        compiled_model = torch.compile(build_model(spec, shape, 10).to(memory_format=fmt))
        eager, compiled = stepper(eager_model, x, y), stepper(compiled_model, x, y)
        t0 = time.perf_counter()
        compiled(), compiled()  # compile (forward and backward graphs)
        compile_s = time.perf_counter() - t0
        timed(eager, 3)
        e1, c1 = timed(eager, a.steps), timed(compiled, a.steps)  # interleaved: eager, compiled, eager, compiled
        e2, c2 = timed(eager, a.steps), timed(compiled, a.steps)
        e, c = (e1 + e2) / 2, (c1 + c2) / 2
        print(f"{label}: eager {e:.2f} ms/step, compiled {c:.2f} ms/step, {e / c:.2f}x; compile {compile_s:.0f} s")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
