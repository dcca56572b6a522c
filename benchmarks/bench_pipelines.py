"""The multi-model methods (kd_core.pipelines) on digits, measured over seeds.

    nice -n 5 python benchmarks/bench_pipelines.py [--seeds 5] [--epochs 10] [--out FILE]

Per seed s (every run seeded from s, one torch thread, a fresh temp store):
  teacher   MLP 256, on labels
  KD        MLP 8 distilled from the teacher, and its no-KD baseline (same seed and steps)
  TAKD      teacher → MLP 32 assistant → MLP 8 student
  BAN       MLP 16: gen 0 on labels, gens 1 and 2 each from the one before
  DML       two MLP 8 peers trained together (peer 0 is seeded like the baseline, so it starts
            from the same weights), T = 1, λ = 0.5 as in the paper
Prints test accuracy as mean ± std over seeds and paired t-tests (kd_core.stats) of the
comparisons that matter, with the CPU model and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from dataclasses import replace

import torch

from kd_core.config import DataConfig, DistillConfig, ModelSpec, RunConfig, TrainConfig
from kd_core.pipelines import ban, dml, takd
from kd_core.stats import paired_test, summarize
from kd_core.store import Store
from kd_core.train.data import load_dataset
from kd_core.train.recorder import distill, train_teacher


def cpu() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next(
        (ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), platform.processor()
    )


def one_seed(store: Store, data, seed: int, epochs: int) -> dict[str, float]:
    train = TrainConfig(epochs=epochs, lr=3e-3, seed=seed, device="cpu", threads=1)
    base = RunConfig(kind="student", data=DataConfig("digits"), train=train, distill=DistillConfig(4.0, 0.9))
    teacher = train_teacher(store, replace(base, model=ModelSpec("mlp", 256, 1)), data)
    small, mid = ModelSpec("mlp", 8, 1), ModelSpec("mlp", 32, 1)
    kd, baseline = distill(store, replace(base, model=small, teacher_id=teacher.run_id), data, teacher.model)
    chain = takd(store, base, data, teacher.model, teacher.run_id, [mid, small])
    gens = ban(store, replace(base, model=ModelSpec("mlp", 16, 1)), data, generations=2)
    peers = dml(store, replace(base, distill=DistillConfig(1.0, 0.5)), data, [small, small])
    acc = {
        "teacher": teacher,
        "KD mlp 8": kd,
        "baseline mlp 8": baseline,
        "TAKD assistant mlp 32": chain.outcomes[0],
        "TAKD student mlp 8": chain.outcomes[1],
        **{f"BAN mlp 16 gen {k}": o for k, o in enumerate(gens.outcomes)},
        **{f"DML peer {k} mlp 8": o for k, o in enumerate(peers.outcomes)},
    }
    for name, o in acc.items():
        assert o.status == "finished", (name, o.message)
    return {name: o.metrics["test_acc"] for name, o in acc.items()}


COMPARISONS = [
    ("KD mlp 8", "baseline mlp 8"),
    ("TAKD student mlp 8", "KD mlp 8"),
    ("BAN mlp 16 gen 1", "BAN mlp 16 gen 0"),
    ("BAN mlp 16 gen 2", "BAN mlp 16 gen 0"),
    ("DML peer 0 mlp 8", "baseline mlp 8"),
]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--out", default="")
    a = p.parse_args()
    torch.set_num_threads(1)
    data = load_dataset(DataConfig("digits"))
    load_before, started = os.getloadavg(), time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(tmp)
        rows = [one_seed(store, data, s, a.epochs) for s in range(a.seeds)]
    seconds, load_after = time.perf_counter() - started, os.getloadavg()
    print(f"CPU {cpu()}, {os.cpu_count()} cores, load {load_before[0]:.1f} → {load_after[0]:.1f}, {seconds:.0f} s")
    print(
        f"digits, {a.epochs} epochs, Adam 3e-3, seeds 0..{a.seeds - 1}\n\n| run | test acc (mean ± std, n) |\n|---|---|"
    )
    for name in rows[0]:
        s = summarize([r[name] for r in rows])
        print(f"| {name} | {s.mean:.4f} ± {s.std:.4f} (n={s.n}) |")
    print("\n| comparison | mean diff ± std | p | verdict |\n|---|---|---|---|")
    tests = {}
    for treated, control in COMPARISONS:
        t = paired_test([r[treated] for r in rows], [r[control] for r in rows])
        tests[f"{treated} − {control}"] = t.__dict__
        print(f"| {treated} − {control} | {t.mean_diff:+.4f} ± {t.std_diff:.4f} | {t.p:.3f} | {t.reason} |")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"cpu": cpu(), "seconds": seconds, "load": [load_before, load_after], "rows": rows,
                       "tests": tests}, f, indent=1, default=str)  # fmt: skip


if __name__ == "__main__":
    main()
