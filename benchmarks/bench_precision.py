"""The CNN-32 teacher's epoch in fp32, fp32 + channels-last and bf16 + channels-last, side by side.

One process, one run: for each seed the three arms train in turn (so a load spike on this
shared machine hits all three alike) through `kd_core.train.engine.fit`, the whole `fit` timed
(model build, the epoch, the end-of-epoch validation). The epoch is a subset of Fashion-MNIST's
training split (`--train-images`, default 3,200 = 50 steps of 64) and the validation split is cut
to `--val-images` so that the whole run takes a minute or two on 2 cores at one thread; the ratios are
per-step costs, which a subset does not change, while the accuracies are of a short run and only
comparable with each other. Reports the median seconds per arm and the ratios to fp32, the
validation accuracy as mean ± sd over seeds, the CPU model and whether it does bf16 natively.

The plain-fp32 arm turns channels-last off by replacing `engine.wants_channels_last` for its run:
the engine otherwise always takes channels-last for convolutional families.

    python benchmarks/bench_precision.py [--seeds 3] [--train-images 3200] [--threads 1] [--family cnn --size 32]
"""

from __future__ import annotations

import argparse
import os
import statistics
from dataclasses import replace

import torch

from kd_core.config import DataConfig, ModelSpec, RunConfig, TrainConfig
from kd_core.deploy.runtimes import machine_info
from kd_core.train import engine
from kd_core.train.data import load_dataset
from kd_core.train.precision import bf16_support

ARMS = {  # name -> (precision, channels-last)
    "fp32": ("fp32", False),
    "fp32+CL": ("fp32", True),
    "bf16+CL": ("bf16", True),
}


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def run_arm(cfg: RunConfig, data, channels_last: bool) -> engine.FitResult:
    keep = engine.wants_channels_last
    if not channels_last:
        engine.wants_channels_last = lambda *a, **k: False  # type: ignore[assignment]
    try:
        result = engine.fit(cfg, data)
    finally:
        engine.wants_channels_last = keep  # type: ignore[assignment]
    assert result.status == "finished", result.message
    assert result.channels_last == channels_last
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--family", default="cnn")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--train-images", type=int, default=3200)
    p.add_argument("--val-images", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="1 by default: on a shared machine a second thread waits")
    a = p.parse_args()

    data = load_dataset(DataConfig(dataset=a.dataset))
    n, v = min(a.train_images, len(data.train_y)), min(a.val_images, len(data.val_y))
    data = replace(data, train_x=data.train_x[:n], train_y=data.train_y[:n], val_x=data.val_x[:v], val_y=data.val_y[:v])
    native, why = bf16_support(torch.device("cpu"))
    spec = ModelSpec(a.family, a.size)
    print(f"CPU: {machine_info()['cpu']}, {os.cpu_count()} cores; bf16: {why}; torch {torch.__version__}")
    print(f"{spec.label()} on {a.dataset}: {n} training images (1 epoch, batch {a.batch_size}), {v} validation")
    print(f"load average before: {load()}")

    seconds: dict[str, list[float]] = {k: [] for k in ARMS}
    accs: dict[str, list[float]] = {k: [] for k in ARMS}
    threads = 0
    for seed in range(a.seeds):
        for name, (precision, cl) in ARMS.items():
            train = TrainConfig(
                epochs=1, batch_size=a.batch_size, seed=seed, device="cpu", threads=a.threads, precision=precision
            )
            cfg = RunConfig(kind="teacher", data=DataConfig(dataset=a.dataset), model=spec, train=train)
            result = run_arm(cfg, data, cl)
            seconds[name].append(result.seconds)
            accs[name].append(result.best_val_acc)
            threads = result.threads
            print(f"  seed {seed} {name:8s} {result.seconds:6.2f} s  val acc {result.best_val_acc:.4f}  load {load()}")

    base = statistics.median(seconds["fp32"])
    print(f"\n{'arm':10s} {'median s':>9s} {'× fp32':>7s} {'val acc (mean ± sd, ' + str(a.seeds) + ' seeds)':>32s}")
    for name in ARMS:
        med = statistics.median(seconds[name])
        sd = statistics.stdev(accs[name]) if len(accs[name]) > 1 else float("nan")
        print(f"{name:10s} {med:9.2f} {base / med:7.2f} {100 * statistics.mean(accs[name]):24.2f} ± {100 * sd:.2f}")
    diffs = [100 * (b - f) for b, f in zip(accs["bf16+CL"], accs["fp32"])]  # paired by seed
    spread = f" ± {statistics.stdev(diffs):.2f} (sd of the paired differences)" if len(diffs) > 1 else ""
    print(
        f"bf16+CL − fp32 accuracy: {statistics.mean(diffs):+.2f} points{spread}; threads {threads}; native bf16: {native}"
    )
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
