"""Distillation methods side by side: (a) each method's training step time relative to KD for the
same teacher and student, (b) a small leaderboard over seeds with paired tests.

Fashion-MNIST (Debian's dataset-fashion-mnist, through kd_core's loader) when it is there, else
sklearn's digits; the script prints which. To fit in a few minutes on a shared 2-core machine it
uses a subset: `--train-images` training images (default 4,000), `--val-images` validation and
`--test-images` test images (default 1,000 and 2,000), one thread per run.

(a) For every method, a 1-epoch `engine.fit` of the student from the same teacher, the methods
interleaved round by round (`--rounds`), so a load spike on the shared machine hits them alike;
the figure is the median seconds per step over rounds and its ratio to KD's. The teacher-target
cache is on, as by default: KD's teacher logits come from the cache, a feature method's maps may not.

(b) A leaderboard (kd_core.views.leaderboard) through the real sweep machinery and a temporary
store: every method in `--board` and the no-KD baseline at `--seeds` seeds, `--epochs` epochs,
test accuracy on the test subset, paired t-tests against the baseline and KD adjusted by
Benjamini–Hochberg; the table is printed as the CLI prints it.

    python benchmarks/bench_methods.py [--rounds 2] [--seeds 3] [--epochs 2] [--board kd,dkd,dist,at]
    python benchmarks/bench_methods.py --skip-a --student-family mlp --student-size 32 --board kd,dkd,dist,sp
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from kd_core.cli.leaderboard import print_table
from kd_core.config import DataConfig, DistillConfig, ModelSpec, RunConfig, TrainConfig
from kd_core.deploy.runtimes import machine_info
from kd_core.methods import METHODS, parse_methods
from kd_core.store import Store
from kd_core.sweep.grid import create_sweep
from kd_core.sweep.runner import run_sweep
from kd_core.train import engine
from kd_core.train.data import DEBIAN_FASHION_DIR, load_dataset
from kd_core.train.recorder import train_teacher
from kd_core.views.leaderboard import leaderboard, make_leaderboard


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def subset(data, a):
    n, v, t = (
        min(k, len(y))
        for k, y in ((a.train_images, data.train_y), (a.val_images, data.val_y), (a.test_images, data.test_y))
    )
    return replace(
        data,
        train_x=data.train_x[:n],
        train_y=data.train_y[:n],
        val_x=data.val_x[:v],
        val_y=data.val_y[:v],
        test_x=data.test_x[:t],
        test_y=data.test_y[:t],
    )


def step_times(data, data_cfg, teacher, student: ModelSpec, a) -> None:
    """(a): median seconds per step of each method over interleaved rounds, and the ratio to KD."""
    names = list(METHODS)
    steps = -(-len(data.train_y) // a.batch_size)
    per: dict[str, list[float]] = {n: [] for n in names}
    for r in range(a.rounds):
        for name in names:
            train = TrainConfig(epochs=1, batch_size=a.batch_size, seed=r, device="cpu", threads=1, lr=3e-3)
            distill = DistillConfig(4.0, 0.5, True, parse_methods(name))
            cfg = RunConfig(kind="student", data=data_cfg, model=student, train=train, distill=distill)
            result = engine.fit(cfg, data, teacher)
            assert result.status == "finished", (name, result.message)
            per[name].append(len(data.train_y) / result.samples_per_s / steps)  # training samples only
        print(f"  round {r + 1}/{a.rounds} done, load {load()}")
    kd = statistics.median(per["kd"])
    print(f"\n(a) step time, {student.label()} student, batch {a.batch_size}, {steps} steps/epoch, 1 thread")
    print(f"{'method':10s} {'ms/step (median)':>17s} {'× KD':>6s}  {'each round, ms':s}")
    for name in names:
        med = statistics.median(per[name])
        rounds = ", ".join(f"{1000 * s:.2f}" for s in per[name])
        print(f"{name:10s} {1000 * med:17.2f} {med / kd:6.2f}  {rounds}")


def board(store: Store, data, data_cfg, teacher_id: str, student: ModelSpec, a) -> None:
    """(b): the leaderboard through create_sweep + run_sweep, printed as `kd-studio leaderboard`."""
    train = TrainConfig(epochs=a.epochs, batch_size=a.batch_size, device="cpu", threads=1, lr=3e-3)
    cfg = make_leaderboard(
        teacher_id, a.board.split(","), a.seeds, student.family, student.size, student.depth, data_cfg, train
    )
    sweep_id = create_sweep(store, cfg, data)  # checks that teacher and student serve every method
    started = time.perf_counter()
    outcomes = run_sweep(store, sweep_id, data)
    assert all(o.status == "finished" for o in outcomes), [o.message for o in outcomes]
    print(
        f"\n(b) leaderboard {sweep_id}: {student.label()} student, {a.seeds} seeds, {a.epochs} epochs, T=4, λ=0.5, "
        f"test accuracy on {len(data.test_y)} test images; {len(outcomes)} runs in {time.perf_counter() - started:.0f} s"
    )
    print_table(leaderboard(store, sweep_id))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-images", type=int, default=4000)
    p.add_argument("--val-images", type=int, default=1000)
    p.add_argument("--test-images", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--teacher-size", type=int, default=16, help="CNN teacher width")
    p.add_argument("--teacher-epochs", type=int, default=3)
    p.add_argument("--student-family", choices=["cnn", "mlp"], default="cnn")
    p.add_argument("--student-size", type=int, default=4, help="CNN width or MLP hidden width")
    p.add_argument("--rounds", type=int, default=2, help="(a): interleaved rounds of every method")
    p.add_argument("--seeds", type=int, default=3, help="(b): seeds per method")
    p.add_argument("--epochs", type=int, default=2, help="(b): epochs per run")
    p.add_argument("--board", default="kd,dkd,dist,at", help="(b): the methods (KD is always included)")
    p.add_argument("--skip-a", action="store_true")
    a = p.parse_args()

    dataset = "fashion-mnist" if DEBIAN_FASHION_DIR.is_dir() else "digits"
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data_cfg = DataConfig(dataset=dataset, root=str(Path(tmp) / "data"))
        data = subset(load_dataset(data_cfg), a)
        print(f"CPU: {machine_info()['cpu']}, {os.cpu_count()} cores (shared with other jobs); load average {load()}")
        print(
            f"{dataset} ({'Debian dataset-fashion-mnist' if dataset != 'digits' else 'fallback: no Fashion-MNIST'}): "
            f"{len(data.train_y)} train / {len(data.val_y)} val / {len(data.test_y)} test images"
        )
        store = Store(Path(tmp) / "runs")
        t_train = TrainConfig(epochs=a.teacher_epochs, batch_size=a.batch_size, device="cpu", threads=1, lr=3e-3)
        t_cfg = RunConfig(kind="teacher", data=data_cfg, model=ModelSpec("cnn", a.teacher_size), train=t_train)
        outcome = train_teacher(store, t_cfg, data)
        assert outcome.status == "finished", outcome.message
        teacher = outcome.model.eval()
        print(f"teacher cnn w{a.teacher_size}: test acc {outcome.metrics['test_acc']:.4f} ({a.teacher_epochs} epochs)")
        student = ModelSpec(a.student_family, a.student_size)
        if not a.skip_a:
            step_times(data, data_cfg, teacher, student, a)
        board(store, data, data_cfg, outcome.run_id, student, a)
    print(f"\ntotal {time.perf_counter() - started:.0f} s; load average after {load()}")


if __name__ == "__main__":
    main()
