"""Where distillation wins: label budgets, transfer sets and consistent augmentation, measured.

    nice -n 5 python benchmarks/bench_transfer.py --jobs 2 [--parts fashion,semi,digits,folder]
        [--seeds 3] [--epochs 4] [--data-root data] [--store DIR] [--out FILE] [--smoke]

Every run goes through the real recorder into a run store (a fresh temp folder unless --store),
one torch thread per run (small models lose to a second thread on a busy 2-core machine,
benchmarks/RESULTS_engine.md). Parts:

fashion  Fashion-MNIST (Debian's dataset-fashion-mnist): an MLP 512×2 teacher on every label
         (a teacher from elsewhere); an MLP-64 student at {100, 500, 2000, 10000, all} labels,
         the rest of the training split an unlabelled transfer set, each point over --seeds seeds
         with a baseline on the same labelled subset and the same steps, gain judged by a paired
         t-test. At 500 labels also: KD on the labelled images only (same number of steps), a
         baseline with plain epochs and early stopping (is the baseline handicapped by the long
         plan?), and consistent augmentation (function matching: shifts, flips, mixup, the
         teacher seeing the student's view; its baseline gets the same augmentation) at the same
         and at twice the schedule.
semi     a teacher trained on the same 500 labels (semi-supervised), with the student's plan.
digits   the defaults: T × λ × transfer ratio at 5 labels per class, and T × λ with all labels,
         5 seeds each (engine only, no store); then the Overview's Quick start, timed end to end.
folder   why KD at T = 4, λ = 0.9 loses on a small image folder: 600 Fashion-MNIST images as an
         ImageFolder (CNN teacher w32, CNN student w8, the folder presets), 6 seeds per condition.

Writes every number to --out (JSON) and prints the tables RESULTS_transfer.md is written from,
with the CPU model and the load average before and after each part.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kd_core.config import DataConfig, DistillConfig, LabelConfig, ModelSpec, RunConfig, TrainConfig  # noqa: E402
from kd_core.deploy.runtimes import machine_info  # noqa: E402
from kd_core.jobs import JobManager  # noqa: E402
from kd_core.stats import paired_test, summarize  # noqa: E402
from kd_core.store import Store  # noqa: E402
from kd_core.train.data import DEBIAN_FASHION_DIR, load_dataset  # noqa: E402
from kd_core.train.engine import fit  # noqa: E402
from kd_core.train.labels import step_plan  # noqa: E402
from kd_core.train.metrics import accuracy, predict_logits  # noqa: E402
from kd_core.train.recorder import distill, train_teacher  # noqa: E402
from kd_core.views import quick  # noqa: E402

BUDGETS = (100, 500, 2000, 10000, 0)
FOCUS = 500  # the target point
T, LAMBDA, RATIO = 4.0, 0.5, 1.0  # the dashboard's defaults; the digits part checks them
BATCH = 256  # rows per step: 128 labelled + 128 transfer at ratio 1


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def pair_stats(student: list[float], baseline: list[float]) -> dict:
    t = paired_test(student, baseline)
    s, b = summarize(student), summarize(baseline)
    return {
        "student": s.to_dict(),
        "baseline": b.to_dict(),
        "gain": t.mean_diff,
        "gain_std": t.std_diff,
        "p": t.p,
        "n": t.n,
        "verdict": t.reason,
        "students": student,
        "baselines": baseline,
    }


def row(name: str, r: dict) -> str:
    s, b = r["student"], r["baseline"]
    p = "—" if r["p"] != r["p"] else f"{r['p']:.2g}"
    return (
        f"| {name} | {100 * b['mean']:.1f} ± {100 * b['std']:.1f} | {100 * s['mean']:.1f} ± {100 * s['std']:.1f} "
        f"| {100 * r['gain']:+.1f} ± {100 * r['gain_std']:.1f} | {p} | {r['n']} |"
    )


TABLE_HEAD = "| setting | baseline % | distilled % | gain (points) | p (paired t) | seeds |\n|---|---|---|---|---|---|"


# ---------------------------------------------------------------- Fashion-MNIST


class Fashion:
    def __init__(self, a, store: Store):
        self.a, self.store = a, store
        self.data = load_dataset(DataConfig("fashion-mnist", root=a.data_root))
        self.train = TrainConfig(epochs=a.epochs, batch_size=BATCH, lr=1e-3, device="cpu", threads=1)

    def student(self, budget: int, seed: int, teacher_id: str, **kw) -> RunConfig:
        labels = kw.pop("labels", LabelConfig(labels=budget, label_seed=seed, transfer_ratio=RATIO))
        return RunConfig(
            kind="student",
            data=DataConfig("fashion-mnist", root=self.a.data_root),
            model=ModelSpec("mlp", 64, 1),
            train=replace(self.train, seed=seed, **kw),
            distill=DistillConfig(T, LAMBDA),
            labels=labels,
            teacher_id=teacher_id,
        )

    def teacher(self, labels: LabelConfig | None = None, epochs: int = 4):
        cfg = RunConfig(
            kind="teacher",
            data=DataConfig("fashion-mnist", root=self.a.data_root),
            model=ModelSpec("mlp", 512, 2),
            train=replace(self.train, epochs=epochs),
            labels=labels or LabelConfig(),
        )
        return train_teacher(self.store, cfg, self.data)

    def pairs(self, cfgs: list[RunConfig], teacher) -> tuple[dict, list]:
        s, b, extra = [], [], []
        for cfg in cfgs:
            student, base = distill(self.store, cfg, self.data, teacher)
            s.append(student.metrics["test_acc"])
            b.append(base.metrics["test_acc"])
            extra.append({"baseline_best_epoch": base.metrics["best_epoch"], "seconds": student.metrics["seconds"]})
        return pair_stats(s, b), extra


def part_fashion(a, store: Store) -> dict:
    f = Fashion(a, store)
    seeds = range(a.seeds)
    out: dict = {"train": len(f.data.train_y), "test": len(f.data.test_y)}
    t0 = time.perf_counter()
    teacher = f.teacher(epochs=a.teacher_epochs)
    out["teacher"] = {"test_acc": teacher.metrics["test_acc"], "seconds": time.perf_counter() - t0}
    print(f"fashion teacher mlp 512x2 on all labels: test {teacher.metrics['test_acc']:.4f}", flush=True)
    curve = {}
    for budget in a.budgets:
        t1 = time.perf_counter()
        stats, extra = f.pairs([f.student(budget, s, teacher.run_id) for s in seeds], teacher.model)
        curve[budget] = {**stats, "runs": extra, "seconds": time.perf_counter() - t1}
        print(row(f"{budget or 'all'} labels + rest as transfer set", stats), flush=True)
    out["curve"] = curve

    n = len(f.data.train_y)
    mixed = step_plan(FOCUS, n - FOCUS, BATCH, RATIO).steps_per_epoch
    plain = step_plan(FOCUS, 0, BATCH, RATIO).steps_per_epoch
    same_steps = a.epochs * mixed // plain  # the labelled-only runs take as many steps as the mixed ones
    focus = {}
    none = LabelConfig(labels=FOCUS, transfer="none")
    cfgs = [f.student(FOCUS, s, teacher.run_id, epochs=same_steps, labels=replace(none, label_seed=s)) for s in seeds]
    focus["labelled only, same steps"], _ = f.pairs(cfgs, teacher.model)
    print(row("500 labels, KD on the labelled images only (same steps)", focus["labelled only, same steps"]))
    cfgs = [replace(c, train=replace(c.train, epochs=a.plain_epochs, patience=a.plain_epochs // 10)) for c in cfgs]
    focus["labelled only, plain epochs, early stopping"], _ = f.pairs(cfgs, teacher.model)
    print(
        row(
            f"500 labels only, {a.plain_epochs} epochs, early stopping",
            focus["labelled only, plain epochs, early stopping"],
        )
    )

    for name, epochs, patience in (
        ("function matching", a.epochs, 0),
        ("function matching, 2× schedule", 2 * a.epochs, 2),
    ):
        t1 = time.perf_counter()
        fm = dict(augment=True, flip=True, mixup=1.0, epochs=epochs, patience=patience)
        focus[name], _ = f.pairs([f.student(FOCUS, s, teacher.run_id, **fm) for s in seeds], teacher.model)
        focus[name]["seconds"] = time.perf_counter() - t1
        print(row(f"500 labels, {name} (baseline augmented alike)", focus[name]), flush=True)
    out["focus"] = focus
    out["steps"] = {"mixed_per_epoch": mixed, "labelled_only_epochs": same_steps}
    return out


# ---------------------------------------------------------------- digits: defaults and Quick start


def part_digits(a, store: Store) -> dict:
    data = load_dataset(DataConfig("digits"))
    tr = TrainConfig(epochs=10, batch_size=64, lr=1e-3, device="cpu", threads=1)
    teacher = fit(RunConfig(model=ModelSpec("mlp", 512, 2), train=tr), data).model

    def acc(cfg, t=None) -> float:
        return accuracy(predict_logits(fit(cfg, data, t).model, data.test_x), data.test_y)

    def cfg(seed, labels, temp=T, lam=LAMBDA) -> RunConfig:
        return RunConfig(
            kind="student",
            model=ModelSpec("mlp", 32, 1),
            train=replace(tr, lr=3e-3, seed=seed),
            distill=DistillConfig(temp, lam),
            labels=replace(labels, label_seed=seed),
        )

    rows = []
    seeds = range(a.digits_seeds)
    regimes = [LabelConfig(per_class=5, transfer_ratio=r) for r in (1.0, 3.0)] + [LabelConfig()]
    for labels in regimes:
        base = [acc(replace(cfg(s, labels), kind="baseline", distill=None)) for s in seeds]
        for temp in a.temperatures:
            for lam in a.lambdas:
                stats = pair_stats([acc(cfg(s, labels, temp, lam), teacher) for s in seeds], base)
                regime = "5 per class" if labels.budgeted else "all labels"
                rows.append({"regime": regime, "ratio": labels.transfer_ratio, "T": temp, "lambda": lam, **stats})
                print(
                    row(f"digits {regime}, ratio {labels.transfer_ratio:g}, T={temp:g}, λ={lam:g}", stats), flush=True
                )
    manager = JobManager()
    t0, cpu0 = time.perf_counter(), time.process_time()
    job = quick.start_quick(manager, Store(Path(store.root) / "quick"), data, device="cpu", threads=0)
    while job.live:
        time.sleep(0.1)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    manager.shutdown()
    summary = quick.quick_summary(Store(Path(store.root) / "quick"), job.snapshot())
    quick_out = {"seconds": seconds, "cpu_seconds": cpu, "status": job.snapshot().status}
    if summary:
        for regime in quick.REGIMES:
            quick_out[regime] = {"statement": summary[regime]["statement"], "p": summary[regime]["test"].p}
            print(summary[regime]["statement"])
    print(f"Quick start: {seconds:.1f} s wall, {cpu:.1f} s of CPU", flush=True)
    return {"sweep": rows, "quick": quick_out}


# ---------------------------------------------------------------- a small image folder


def fashion_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    def read(name: str, offset: int) -> np.ndarray:
        with gzip.open(DEBIAN_FASHION_DIR / f"{name}.gz") as fh:
            return np.frombuffer(fh.read(), np.uint8, offset=offset)

    return read(f"{split}-images-idx3-ubyte", 16).reshape(-1, 28, 28), read(f"{split}-labels-idx1-ubyte", 8)


def write_folders(root: Path, per_class: int = 60, extra: int = 3000) -> tuple[Path, Path]:
    """A 600-image ImageFolder (60 per class) and a folder of 3000 other, unlabelled images."""
    from PIL import Image

    labelled, unlabelled = root / "folder600", root / "unlabelled"
    if labelled.exists():
        return labelled, unlabelled
    x, y = fashion_arrays("train")
    order = np.random.default_rng(0).permutation(len(y))
    taken = dict.fromkeys(range(10), 0)
    unlabelled.mkdir(parents=True)
    rest = 0
    for i in order:
        c = int(y[i])
        if taken[c] < per_class:
            (labelled / f"c{c}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[i]).save(labelled / f"c{c}" / f"{i}.png")
            taken[c] += 1
        elif rest < extra:
            Image.fromarray(x[i]).save(unlabelled / f"{i}.png")
            rest += 1
    return labelled, unlabelled


def part_folder(a, store: Store) -> dict:
    labelled, unlabelled = write_folders(Path(store.root) / "folders")
    data = load_dataset(DataConfig(f"folder:{labelled}", image_size=32))
    tr = TrainConfig(epochs=20, batch_size=64, lr=3e-3, device="cpu", threads=1)
    out = {"split": data.info()}

    def teacher_of(epochs: int, lr: float):
        model = fit(RunConfig(model=ModelSpec("cnn", 32), train=replace(tr, epochs=epochs, lr=lr)), data).model
        zt, zs = predict_logits(model, data.train_x), predict_logits(model, data.test_x)
        p4 = torch.softmax(zs / 4, -1)
        info = {
            "test_acc": accuracy(zs, data.test_y),
            "train_acc": accuracy(zt, data.train_y),
            "max_prob_test": torch.softmax(zs, -1).max(-1).values.mean().item(),
            "entropy_T4_test": (-(p4 * p4.log()).sum(-1)).mean().item(),
        }
        return model, info

    def acc(cfg, t=None) -> float:
        return accuracy(predict_logits(fit(cfg, data, t).model, data.test_x), data.test_y)

    seeds = range(a.folder_seeds)
    base_cfg = RunConfig(kind="baseline", model=ModelSpec("cnn", 8), train=tr)
    base = [acc(replace(base_cfg, train=replace(tr, seed=s))) for s in seeds]
    out["baseline"] = summarize(base).to_dict()
    print(f"folder baseline cnn 8: {summarize(base).text()}", flush=True)
    conditions = {
        "default teacher (15 epochs, lr 1e-3)": [("T=4 λ=0.9", 4.0, 0.9, 20, LabelConfig())],
        "teacher trained longer (60 epochs, lr 3e-3)": [
            ("T=4 λ=0.9", 4.0, 0.9, 20, LabelConfig()),
            ("T=4 λ=0.5", 4.0, 0.5, 20, LabelConfig()),
            ("T=1 λ=0.9", 1.0, 0.9, 20, LabelConfig()),
            ("T=4 λ=0.9, 60 epochs", 4.0, 0.9, 60, LabelConfig()),
            ("T=4 λ=0.9 + 3000 unlabelled images", 4.0, 0.9, 3, LabelConfig(transfer=f"folder:{unlabelled}")),
            ("T=4 λ=0.5 + 3000 unlabelled images", 4.0, 0.5, 3, LabelConfig(transfer=f"folder:{unlabelled}")),
        ],
    }
    teacher_budgets = ((15, 1e-3), (60, 3e-3)) if not a.smoke else ((1, 1e-3), (2, 3e-3))
    for (tname, rows), (epochs, lr) in zip(conditions.items(), teacher_budgets):
        teacher, info = teacher_of(epochs, lr)
        out[tname] = {"teacher": info}
        print(f"folder {tname}: {json.dumps(info)}", flush=True)
        for name, temp, lam, s_epochs, labels in rows:
            s, b = [], []
            for seed in seeds:
                cfg = RunConfig(
                    kind="student",
                    model=ModelSpec("cnn", 8),
                    train=replace(tr, epochs=s_epochs, seed=seed),
                    distill=DistillConfig(temp, lam),
                    labels=labels,
                )
                s.append(acc(cfg, teacher))
                same_plan = s_epochs != 20 or labels.transfer != "rest"  # else the shared 20-epoch baseline
                b.append(acc(replace(cfg, kind="baseline", distill=None)) if same_plan else base[seed])
            out[tname][name] = pair_stats(s, b)
            print(row(f"folder, {tname}, {name}", out[tname][name]), flush=True)
    return out


def part_semi(a, store: Store) -> dict:
    """A teacher that saw only the student's 500 labels (semi-supervised), trained with the
    student's plan (the same steps over the same labelled batches), then the student on the rest."""
    f = Fashion(a, store)
    s, b, teachers = [], [], []
    for seed in range(a.seeds):
        labels = LabelConfig(labels=FOCUS, label_seed=seed, transfer_ratio=RATIO)
        semi = f.teacher(labels, epochs=a.epochs)
        student, base = distill(store, f.student(FOCUS, seed, semi.run_id), f.data, semi.model)
        s.append(student.metrics["test_acc"])
        b.append(base.metrics["test_acc"])
        teachers.append(semi.metrics["test_acc"])
    out = {"teacher on the same 500 labels": {**pair_stats(s, b), "teacher_test_acc": teachers}}
    print(row("500 labels, teacher on the same 500 labels", out["teacher on the same 500 labels"]), flush=True)
    return out


PARTS = {"fashion": part_fashion, "semi": part_semi, "digits": part_digits, "folder": part_folder}


def in_parallel(a, root: Path) -> None:
    """Each part in its own process (one torch thread each), `a.jobs` at a time: on 2 cores the
    whole benchmark takes about its longest part. Their JSON files are merged into --out."""
    parts, running, results = a.parts.split(","), [], {}
    argv, skip = [], False
    for arg in sys.argv[1:]:  # everything but --jobs N (or --jobs=N)
        if not skip and not arg.startswith("--jobs"):
            argv.append(arg)
        skip = arg == "--jobs"
    while parts or running:
        while parts and len(running) < a.jobs:
            name = parts.pop(0)
            out = root / f"{name}.json"
            cmd = [sys.executable, __file__, *argv, "--parts", name, "--store", str(root / name), "--out", str(out)]
            log = open(root / f"{name}.log", "w")  # noqa: SIM115 - closed when the process ends
            running.append((name, out, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
            print(f"started {name}: log {root / f'{name}.log'}", flush=True)
        time.sleep(2)
        for item in [r for r in running if r[2].poll() is not None]:
            running.remove(item)
            item[3].close()
            if item[1].exists():
                results.update(json.loads(item[1].read_text()))
            print(f"{item[0]} done (exit {item[2].returncode})", flush=True)
    a.out.write_text(json.dumps(results, indent=1, default=str))
    print(f"wrote {a.out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", default="fashion,semi,digits,folder")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--folder-seeds", type=int, default=6)
    p.add_argument(
        "--epochs", type=int, default=4, help="student epochs on Fashion-MNIST (passes over the transfer set)"
    )
    p.add_argument("--teacher-epochs", type=int, default=4, help="the Fashion-MNIST teacher's epochs")
    p.add_argument("--data-root", default="data")
    p.add_argument("--jobs", type=int, default=1, help="parts run at once, each in its own process")
    p.add_argument("--smoke", action="store_true", help="a few minutes' run of every code path (numbers meaningless)")
    p.add_argument("--store", type=Path, default=None)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results_transfer.json")
    a = p.parse_args()
    a.budgets, a.temperatures, a.lambdas = BUDGETS, (1.0, 2.0, 4.0, 8.0), (0.5, 0.9, 1.0)
    a.plain_epochs, a.digits_seeds = 200, 5
    if a.smoke:
        a.seeds, a.folder_seeds, a.epochs, a.teacher_epochs = 2, 2, 1, 1
        a.budgets, a.temperatures, a.lambdas = (FOCUS, 0), (4.0,), (0.9,)
        a.plain_epochs, a.digits_seeds = 10, 2
    torch.set_num_threads(1)
    if not (DEBIAN_FASHION_DIR.exists() or (Path(a.data_root) / "FashionMNIST").exists()):
        sys.exit("error: Fashion-MNIST not found; install Debian's dataset-fashion-mnist or pass --data-root.")
    root = a.store or Path(tempfile.mkdtemp(prefix="bench_transfer_"))
    if a.jobs > 1:
        return in_parallel(a, root)
    store = Store(root)
    report = {
        "cpu": machine_info()["cpu"],
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "args": vars(a) | {"store": str(root), "out": str(a.out)},
    }
    print(f"CPU: {report['cpu']} ({report['cores']} cores) · store {root}", flush=True)
    print(TABLE_HEAD)
    for name in a.parts.split(","):
        before, t0, cpu0 = load(), time.perf_counter(), time.process_time()
        report[name] = PARTS[name](a, store)
        report[name]["wall_s"] = time.perf_counter() - t0
        report[name]["cpu_s"] = time.process_time() - cpu0  # ≈ the wall time on an idle machine: 1 thread
        report[name]["load_before"], report[name]["load_after"] = before, load()
        print(
            f"## {name}: {report[name]['wall_s'] / 60:.1f} min wall, {report[name]['cpu_s'] / 60:.1f} min of CPU, "
            f"load average {before} → {load()}",
            flush=True,
        )
        a.out.write_text(json.dumps(report, indent=1, default=str))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
