"""Benchmark: torchvision families and data larger than memory, on this machine's CPU.

Part "kd": a torchvision teacher (resnet18 with the small-input stem, 28 px grey) distilled
into mobilenet_v3_small on Fashion-MNIST (Debian's dataset-fashion-mnist files), with the
same student trained without the teacher as a baseline: samples/s, seconds per epoch, test
accuracy, and the student's gain over its baseline with its noise (one seed: the test set's
sampling noise, views.compare.headline_differences). On a shared 2-core CPU the full 60k
images at resnet18 ×1 would take hours per epoch, so a seeded subset and reduced widths are
used; the flags say which, and RESULTS_models.md states them.

Part "memmap": a folder of generated 96 px JPEGs (≥ 50k, ten classes) trained through the
memory-mapped uint8 cache, against the in-RAM path on a subset small enough for RAM: cache
build time, samples/s over the run in windows (a steady rate, not only a mean) and the peak
resident memory of the process (train/memory.py).

    nice -n 5 python benchmarks/bench_models.py                      # both parts, defaults
    nice -n 5 python benchmarks/bench_models.py --part memmap --images 50000
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from kd_core.config import DataConfig, DistillConfig, ModelSpec, RunConfig, TrainConfig
from kd_core.store import Store
from kd_core.train.data import Dataset, load_dataset
from kd_core.train.engine import fit
from kd_core.train.memory import PeakRSS
from kd_core.train.models import describe
from kd_core.train.recorder import distill, train_teacher
from kd_core.views.compare import headline_differences

RESULTS = Path(__file__).with_name("RESULTS_models.md")


def machine() -> dict:
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
         if ln.startswith("Model name")), platform.processor(),
    )  # fmt: skip
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": ram / 2**30, "torch": torch.__version__}


def load_average() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


# ---------------------------------------------------------------- part 1: KD on Fashion-MNIST


def subset(data: Dataset, n_train: int, n_val: int, n_test: int, seed: int) -> Dataset:
    """Seeded random rows of each split (class balance as drawn)."""
    g = torch.Generator().manual_seed(seed)
    pick = lambda x, y, n: (lambda i: (x[i], y[i]))(torch.randperm(len(y), generator=g)[:n].sort().values)  # noqa: E731
    (tx, ty), (vx, vy), (sx, sy) = (pick(data.train_x, data.train_y, n_train), pick(data.val_x, data.val_y, n_val),
                                    pick(data.test_x, data.test_y, n_test))  # fmt: skip
    return replace(data, train_x=tx, train_y=ty, val_x=vx, val_y=vy, test_x=sx, test_y=sy)


def run_kd(args, work: Path) -> dict:
    data = load_dataset(DataConfig("fashion-mnist", root=str(work / "data"), download=False))
    data = subset(data, args.train, args.val, args.test, seed=0)
    store = Store(work / "runs")
    train = TrainConfig(epochs=args.epochs, batch_size=128, lr=1e-3, seed=0, device="cpu", threads=args.threads)
    t_spec, s_spec = (
        ModelSpec("resnet18", width=args.teacher_width),
        ModelSpec("mobilenet_v3_small", width=args.student_width),
    )
    t_cfg = RunConfig(kind="teacher", data=DataConfig("fashion-mnist"), model=t_spec, train=train)
    print(f"teacher {t_spec.label()} on {len(data.train_y)} images, load {load_average()}", flush=True)
    teacher = train_teacher(store, t_cfg, data)
    s_cfg = replace(t_cfg, kind="student", model=s_spec, teacher_id=teacher.run_id,
                    train=replace(train, lr=3e-3), distill=DistillConfig(temperature=4.0, alpha=0.9))  # fmt: skip
    print(f"student {s_spec.label()} + baseline, load {load_average()}", flush=True)
    student, baseline = distill(store, s_cfg, data, teacher.model, with_baseline=True)
    rows = {}
    for name, outcome, spec in (
        ("teacher", teacher, t_spec),
        ("student", student, s_spec),
        ("baseline", baseline, s_spec),
    ):
        m = store.get_run(outcome.run_id).metrics
        epochs = store.epochs(outcome.run_id)
        rows[name] = {
            "model": spec.label(), "params": m["params"], "mflops": describe(spec, data.input_shape, 10)["flops"] / 1e6,
            "test_acc": m["test_acc"], "samples_per_s": m["train_samples_per_s"],
            "epoch_s": m["seconds"] / max(1, len(epochs)), "latency_b1_ms": m["latency"]["batches"]["1"]["median_ms"],
            "peak_rss_mib": m.get("peak_rss_bytes", 0) / 2**20,
        }  # fmt: skip
    gain = headline_differences(store, teacher.run_id, student.run_id).get("baseline")
    return {"rows": rows, "gain": gain.text() if gain else "n/a", "n": [args.train, args.val, args.test],
            "epochs": args.epochs, "threads": args.threads, "load": load_average()}  # fmt: skip


# ---------------------------------------------------------------- part 2: a folder through the cache


def make_folder(root: Path, n: int, size: int, classes: int = 10, seed: int = 0) -> Path:
    """`n` JPEGs of `size` px in `classes` folders: class k is a stripe pattern of its own
    frequency and colour plus noise, so a model has something to learn."""
    from PIL import Image

    if (root / "done").is_file() and int((root / "done").read_text()) == n:
        return root
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for k in range(classes):
        (root / f"class{k}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        k = i % classes
        wave = np.sin(2 * np.pi * ((k % 5) + 1) * (xx * np.cos(k) + yy * np.sin(k)) + rng.uniform(0, 6.3))
        colour = np.array([(k * 37) % 256, (k * 91) % 256, (k * 53) % 256]) / 255
        img = 0.5 + 0.35 * wave[..., None] * colour + rng.normal(0, 0.12, (size, size, 3))
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(root / f"class{k}" / f"{i}.jpg", quality=90)
        if (i + 1) % 5000 == 0:
            print(f"  generated {i + 1}/{n}", flush=True)
    (root / "done").write_text(str(n))
    return root


def linked_subset(src: Path, dst: Path, n: int) -> Path:
    """The first `n` images of `src` (by index) as hard links: the same files, a smaller folder."""
    if (dst / "done").is_file():
        return dst
    for path in src.glob("class*/*.jpg"):
        if int(path.stem) < n:
            (dst / path.parent.name).mkdir(parents=True, exist_ok=True)
            os.link(path, dst / path.parent.name / path.name)
    (dst / "done").write_text(str(n))
    return dst


def timed_fit(data: Dataset, steps: int, threads: int) -> dict:
    """Train a small CNN for `steps` batches (then stop): samples/s in ten windows, resident
    memory before and at its peak."""
    cfg = RunConfig(
        model=ModelSpec("cnn", 8), train=TrainConfig(epochs=100, batch_size=64, device="cpu", threads=threads)
    )
    stop, marks = threading.Event(), []

    def emit(rec) -> None:
        if rec.event == "step":
            marks.append((rec.step, time.perf_counter()))
            if rec.step >= steps:
                stop.set()

    with PeakRSS() as peak:
        before = peak.read()
        result = fit(cfg, data, emit=emit, stop=stop)
    edges = np.unique(np.linspace(0, len(marks) - 1, 11).astype(int))  # ten windows, fewer on a short run
    rows = min(64, len(data.train_y))  # rows per step (a tiny test folder has fewer than a batch)
    rates = [rows * (marks[b][0] - marks[a][0]) / (marks[b][1] - marks[a][1]) for a, b in itertools.pairwise(edges)]
    return {"steps": len(marks), "samples_per_s": result.samples_per_s, "windows": rates,
            "rss_before_mib": before / 2**20, "peak_rss_mib": peak.bytes / 2**20, "rss_scope": peak.scope}  # fmt: skip


def one_path(args) -> dict:
    """In a fresh process (so one path's memory does not count in the next): load the folder
    (a memmap path builds its cache first, timed apart), then train."""
    folder, storage = Path(args.one_folder), args.one_storage
    cfg = DataConfig(
        f"folder:{folder}", image_size=args.size, storage=storage, cache_dir=str(Path(args.work) / "cache")
    )
    started = time.perf_counter()
    data = load_dataset(cfg) if storage == "memmap" else None
    first_s = time.perf_counter() - started
    started = time.perf_counter()
    data = load_dataset(cfg)
    load_s = time.perf_counter() - started
    return {"first_load_s": first_s if storage == "memmap" else load_s, "load_s": load_s,
            "train_images": len(data.train_y), **timed_fit(data, args.steps, args.threads), "load": load_average()}  # fmt: skip


def run_memmap(args, work: Path) -> dict:
    print(f"generating {args.images} images at {args.size} px, load {load_average()}", flush=True)
    big = make_folder(work / "folder", args.images, args.size)
    small = linked_subset(big, work / f"subset{args.in_ram}", args.in_ram)
    out = {
        "images": args.images,
        "in_ram": args.in_ram,
        "size": args.size,
        "steps": args.steps,
        "threads": args.threads,
    }
    for key, folder, storage in (("memmap_full", big, "memmap"), ("memmap_subset", small, "memmap"),
                                 ("ram_subset", small, "memory")):  # fmt: skip
        print(f"{key}: loading and training {args.steps} steps, load {load_average()}", flush=True)
        child = [sys.executable, __file__, "--work", str(work), "--size", str(args.size), "--steps", str(args.steps),
                 "--threads", str(args.threads), "--one-folder", str(folder), "--one-storage", storage]  # fmt: skip
        proc = subprocess.run(child, capture_output=True, text=True, check=True)
        out[key] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["cache_bytes"] = sum(p.stat().st_size for p in (work / "cache").rglob("images.npy"))
    return out


# ---------------------------------------------------------------- report


def ratios(rows: dict, num: str, den: str, keys: tuple[str, ...]) -> dict[str, float]:
    """rows[num][k] / rows[den][k] for each k: the side-by-side comparison, from one run's figures."""
    return {k: rows[num][k] / rows[den][k] for k in keys}


KD_RATIOS = ("params", "mflops", "latency_b1_ms", "samples_per_s", "epoch_s")
MEMMAP_RATIOS = ("samples_per_s", "peak_rss_mib", "rss_before_mib")


def ratio_line(name: str, r: dict[str, float]) -> str:
    return f"| {name} | " + " | ".join(f"{v:.2f}×" for v in r.values()) + " |"


def fmt_kd(r: dict) -> list[str]:
    lines = [
        f"Fashion-MNIST, seeded subset: {r['n'][0]} train / {r['n'][1]} val / {r['n'][2]} test images, "
        f"{r['epochs']} epochs, batch 128, Adam, {r['threads']} threads, seed 0; load average at the end {r['load']}.",
        "",
        "| run | model | params | MFLOPs/sample | test acc | train samples/s | s/epoch | latency b1 (ms) | peak RSS (MiB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, x in r["rows"].items():
        lines.append(
            f"| {name} | {x['model']} | {x['params']:,} | {x['mflops']:.1f} | {x['test_acc']:.4f} | "
            f"{x['samples_per_s']:.0f} | {x['epoch_s']:.1f} | {x['latency_b1_ms']:.2f} | {x['peak_rss_mib']:.0f} |"
        )
    lines += ["", "Ratios from the same run:", "", "| ratio | " + " | ".join(KD_RATIOS) + " |",
              "|---|" + "---:|" * len(KD_RATIOS)]  # fmt: skip
    lines.append(ratio_line("student / teacher", ratios(r["rows"], "student", "teacher", KD_RATIOS)))
    lines.append(ratio_line("student / baseline", ratios(r["rows"], "student", "baseline", KD_RATIOS)))
    lines += ["", f"Student against its no-KD baseline (one seed): {r['gain']}."]
    return lines


def fmt_memmap(r: dict) -> list[str]:
    lines = [
        f"{r['images']:,} generated JPEGs at {r['size']} px (10 classes); the two caches (whole folder and subset) "
        f"take {r['cache_bytes'] / 2**30:.2f} GiB of uint8 on disk (the folder as float32 in RAM would be "
        f"{r['images'] * 3 * r['size'] ** 2 * 4 / 2**30:.1f} GiB). "
        f"In-RAM comparison on the first {r['in_ram']:,} images. Model cnn w8, batch 64, {r['steps']} steps, "
        f"{r['threads']} threads.",
        "",
        "| path | train images | first load (s) | load (s) | samples/s | per-window samples/s (min–max of 10) "
        "| RSS before training (MiB) | peak RSS training (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in ("memmap_full", "memmap_subset", "ram_subset"):
        x = r[key]
        lines.append(
            f"| {key.replace('_', ', ')} | {x['train_images']:,} | {x['first_load_s']:.1f} | {x['load_s']:.1f} | "
            f"{x['samples_per_s']:.0f} | {min(x['windows']):.0f}–{max(x['windows']):.0f} | "
            f"{x['rss_before_mib']:.0f} | {x['peak_rss_mib']:.0f} |"
        )
    lines += ["", "Ratios from the same run:", "", "| ratio | " + " | ".join(MEMMAP_RATIOS) + " |",
              "|---|" + "---:|" * len(MEMMAP_RATIOS)]  # fmt: skip
    lines.append(ratio_line("memmap / RAM, same subset", ratios(r, "memmap_subset", "ram_subset", MEMMAP_RATIOS)))
    lines.append(ratio_line("memmap full / RAM subset", ratios(r, "memmap_full", "ram_subset", MEMMAP_RATIOS)))
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["kd", "memmap", "all"], default="all")
    p.add_argument("--work", default="/tmp/kd_bench_models", help="generated images, caches and run stores")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train", type=int, default=3000, help="Fashion-MNIST training images (subset)")
    p.add_argument("--val", type=int, default=1000)
    p.add_argument("--test", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--teacher-width", type=float, default=0.25)
    p.add_argument("--student-width", type=float, default=0.5)
    p.add_argument("--images", type=int, default=50_000)
    p.add_argument("--in-ram", type=int, default=10_000, help="images of the in-RAM comparison")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--steps", type=int, default=150, help="training steps per path in the memmap part")
    p.add_argument("--write", action="store_true", help=f"also write {RESULTS.name} (or _kd / _memmap for one part)")
    p.add_argument("--one-folder", help=argparse.SUPPRESS)  # a child process: one path of the memmap part
    p.add_argument("--one-storage", help=argparse.SUPPRESS)
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    if args.one_folder:
        print(json.dumps(one_path(args)))
        return
    results = {"machine": machine(), "load_before": load_average(), "args": vars(args)}
    if args.part in ("kd", "all"):
        results["kd"] = run_kd(args, work)
    if args.part in ("memmap", "all"):
        results["memmap"] = run_memmap(args, work)
    (work / "results.json").write_text(json.dumps(results, indent=1))
    m = results["machine"]
    lines = [f"CPU: {m['cpu']} ({m['cores']} cores, {m['ram_gib']:.0f} GiB RAM), torch {m['torch']}; "
             f"load average before: {results['load_before']} (1/5/15 min; the machine is shared)."]  # fmt: skip
    if "kd" in results:
        lines += ["", "## Distillation: resnet18 → mobilenet_v3_small", "", *fmt_kd(results["kd"])]
    if "memmap" in results:
        lines += ["", "## A folder larger than RAM would hold as float32", "", *fmt_memmap(results["memmap"])]
    print("\n".join(lines))
    if args.write:  # one file per part: the parts may be run apart on a busy machine
        target = RESULTS if args.part == "all" else RESULTS.with_name(f"RESULTS_models_{args.part}.md")
        target.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
