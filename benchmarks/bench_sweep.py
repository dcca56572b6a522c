"""The issue's sweep on digits, in-process and through Ray: timed, checked equal, its grid read back.

T ∈ {1, 2, 4, 8, 16} × λ ∈ {0.25, 0.5, 0.75, 1.0} × one small student × 3 seeds, each seed with its
no-KD baseline (63 runs), read as the Sweep page reads it.

1. A teacher with the project's default digits preset (mlp 512×2, 15 epochs as on the Teacher page)
   is trained by `python -m kd_core teacher` into DIR/teacher, or reused when that store has one.
2. The same sweep runs twice through `python -m kd_core sweep --json` (the command a user types),
   once per backend, each into its own fresh store (DIR/inprocess, DIR/ray: emptied first). Each is
   timed from spawning the process to its exit (data loading and, for Ray, starting and stopping
   a local 2-CPU instance included).
3. Both stores must hold the same runs (cell key: kind, size, seed, T, λ) with the same accuracies.
4. The grid is read back with kd_core.sweep.results (mean ± std over seeds, the gain over the no-KD
   baseline of the same seed, kd_core.stats' paired t-test), for validation and test accuracy.

    python benchmarks/bench_sweep.py [--store DIR] [--epochs 100] [--size 16] [--out FILE]

Prints a Markdown report and writes it to benchmarks/RESULTS_sweep.md; a "## Notes" section
already in that file is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from kd_core.records import StoredRun  # noqa: E402
from kd_core.stats import ZERO_SPREAD  # noqa: E402
from kd_core.store import Store  # noqa: E402
from kd_core.sweep.grid import finished_runs  # noqa: E402
from kd_core.sweep.results import baseline_results, sweep_results  # noqa: E402

TEMPERATURES = (1, 2, 4, 8, 16)
ALPHAS = (0.25, 0.5, 0.75, 1.0)
SEEDS = 3
TEACHER_EPOCHS = 15  # the Teacher page's default and the README's example
METRICS = {"best_val_acc": "best validation accuracy", "test_acc": "test accuracy"}
COMPARED = ("best_val_acc", "final_val_acc", "test_acc")
BACKENDS = ("inprocess", "ray")
NOTES = "## Notes"  # from this heading on, RESULTS_sweep.md is written by hand


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--store", type=Path, default=None, help="working folder (default: a fresh temp dir)")
    p.add_argument("--size", type=int, default=16, help="student MLP width, 1 hidden layer (default 16)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "RESULTS_sweep.md")
    return p.parse_args()


def cli(args: list[str], store: Path) -> tuple[dict, float]:
    """`python -m kd_core ARGS --store STORE --json --quiet`: its JSON and its wall seconds."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "kd_core", *args, "--store", str(store), "--json", "--quiet"],
        cwd=store.parent,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,
    )
    wall = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"kd_core {' '.join(args)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout), wall


def teacher(root: Path) -> tuple[str, StoredRun]:
    """The checkpoint path of a finished digits teacher in ROOT/teacher (trained when there is none)."""
    store = root / "teacher"
    found = [r for r in Store(store).list_runs(kind="teacher", dataset="digits", status="finished") if r.weights]
    if not found:
        cli(["teacher", "--dataset", "digits", "--epochs", str(TEACHER_EPOCHS)], store)
        found = Store(store).list_runs(kind="teacher", dataset="digits", status="finished")
    run = found[0]
    return run.weights, run


def sweep(root: Path, backend: str, teacher_path: str, a: argparse.Namespace) -> dict:
    """One timed `kd_core sweep` into a fresh ROOT/BACKEND store."""
    store = root / backend
    shutil.rmtree(store, ignore_errors=True)
    args = [
        "sweep",
        "--dataset",
        "digits",
        "--teacher",
        teacher_path,
        "--backend",
        backend,
        "--temperatures",
        ",".join(map(str, TEMPERATURES)),
        "--alphas",
        ",".join(map(str, ALPHAS)),
        "--sizes",
        str(a.size),
        "--family",
        "mlp",
        "--depth",
        "1",
        "--seeds",
        str(SEEDS),
        "--epochs",
        str(a.epochs),
        "--batch-size",
        str(a.batch_size),
        "--lr",
        str(a.lr),
    ]
    payload, wall = cli(args, store)
    runs = Store(store).list_runs(sweep_id=payload["sweep_id"])
    return {
        "backend": payload["backend"],
        "store": Store(store),
        "id": payload["sweep_id"],
        "wall": wall,
        "cli_s": payload["seconds"],
        "runs": len(runs),
        "finished": sum(r.status == "finished" for r in runs),
        "train_s": sum(r.metrics.get("seconds", 0.0) for r in runs),
        "threads": sorted({r.metrics.get("train_threads") for r in runs}),
        "command": args,
    }


def compare(a: dict, b: dict) -> dict:
    """Max |a − b| per metric over the runs both sweeps have, by cell key; the keys must match."""
    ra, rb = finished_runs(a["store"], a["id"]), finished_runs(b["store"], b["id"])
    diffs = {m: max(abs(ra[k].metrics[m] - rb[k].metrics[m]) for k in ra.keys() & rb.keys()) for m in COMPARED}
    return {"same_cells": ra.keys() == rb.keys(), "cells": len(ra.keys() & rb.keys()), **diffs}


# ---------------------------------------------------------------- the report (Markdown lines)


def verdict(row) -> str:
    """significant / not significant (p) per kd_core.stats, or why there is no verdict."""
    sig = row["significant"]
    if sig is None or sig != sig:  # None, or NaN where pandas filled a missing verdict
        return "no verdict"
    return f"{'significant' if bool(sig) else 'not significant'}, p={row['p']:.3g}"


def significant(row) -> bool:
    return verdict(row).startswith("significant")


def grid(df) -> list[str]:
    """T × λ: mean ± std over seeds, mean gain over the baseline, p; * significant, bold the best mean."""
    lines = ["| T \\ λ | " + " | ".join(f"{a:g}" for a in ALPHAS) + " |", "|---" * (len(ALPHAS) + 1) + "|"]
    for t, part in df.groupby("temperature", sort=True):
        cells = []
        for _, r in part.sort_values("alpha").iterrows():
            p = f"p={r['p']:.2g}" if r["p"] == r["p"] else "no p: same Δ on every seed"
            text = f"{r['mean']:.4f} ± {r['std']:.4f}<br>Δ {r['gain_mean']:+.4f}, {p}{' *' * significant(r)}"
            cells.append(f"**{text} (best)**" if r["best"] else text)
        lines.append(f"| **T={t:g}** | " + " | ".join(cells) + " |")
    return lines


def findings(df) -> list[str]:
    """The best cell, and which cells beat (or lose to) the baseline beyond seed noise. A gain within
    ZERO_SPREAD of 0 is float32 rounding (kd_core.stats), neither positive nor negative."""
    best = df[df["best"]].iloc[0]
    up, down = df[df["gain_mean"] > ZERO_SPREAD], df[df["gain_mean"] < -ZERO_SPREAD]
    wins = [
        f"T={r['temperature']:g} λ={r['alpha']:g} ({r['gain_text']}, p={r['p']:.3g})"
        for _, r in up.iterrows()
        if significant(r)
    ]
    losses = sum(significant(r) for _, r in down.iterrows())
    return [
        f"Cells: mean ± sample std over {SEEDS} seeds; Δ = mean per-seed gain over the baseline of the "
        f"same seed; p = {best['test']}; * = significant at 0.05.",
        "",
        f"- best mean: T={best['temperature']:g}, λ={best['alpha']:g}: {best['text']}, gain "
        f"{best['gain_text']}: {best['verdict']}",
        f"- positive mean gain in {len(up)} of {len(df)} cells; significant gain in {len(wins)}"
        + (": " + "; ".join(wins) if wins else ""),
        f"- negative mean gain in {len(down)} cells; significantly worse than the baseline in {losses}",
        "",
    ]


def results(store: Store, sweep_id: str, metric: str) -> list[str]:
    df = sweep_results(store, sweep_id, metric)
    base = baseline_results(store, sweep_id, metric).iloc[0]
    return [f"### {METRICS[metric]}", "", f"No-KD baseline: {base['text']}.", "", *grid(df), "", *findings(df)]


def machine(runs: list[dict]) -> list[str]:
    import ray
    import torch

    cpu = platform.processor() or platform.machine()
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    m = re.search(r"^Model name:\s*(.+)$", lscpu, re.M)
    threads = ", ".join(f"{r['backend']}: {'/'.join(map(str, r['threads']))}" for r in runs)
    return [
        "## Machine",
        "",
        f"- CPU: {m.group(1).strip() if m else cpu}, {os.cpu_count()} cores",
        f"- torch {torch.__version__}, ray {ray.__version__}, Python {platform.python_version()}, "
        f"{platform.platform()}",
        f"- torch threads per training run (read back from every run's metrics.train_threads): {threads}",
        f"- load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        "",
    ]


def timing(runs: list[dict], same: dict) -> list[str]:
    lines = [
        "## Time per backend",
        "",
        "| backend | runs finished | wall s | runs/s | sweep s (CLI's own timer) | Σ training s of the runs |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['backend']} | {r['finished']}/{r['runs']} | {r['wall']:.1f} | {r['runs'] / r['wall']:.2f} "
            f"| {r['cli_s']:.1f} | {r['train_s']:.1f} |"
        )
    lines += [
        "",
        "Wall: from spawning `python -m kd_core sweep` to its exit (imports, data, teacher, every run, "
        "storing; for Ray also starting and stopping the local instance).",
        "",
        "## Same numbers on both backends",
        "",
        f"- same cells (kind, size, seed, T, λ) in both stores: {'yes' if same['same_cells'] else 'NO'} "
        f"({same['cells']} runs compared)",
        "- max |in-process − Ray| over those runs: " + ", ".join(f"{m} {same[m]:.3g}" for m in COMPARED),
        "",
    ]
    return lines


def settings(a: argparse.Namespace, teacher_run: StoredRun, command: list[str]) -> list[str]:
    spec, m = teacher_run.config.model, teacher_run.metrics
    return [
        "## Setup",
        "",
        f"- teacher: {teacher_run.id}, mlp {spec.size}×{spec.depth} (the digits preset), "
        f"{teacher_run.config.train.epochs} epochs; test accuracy {m['test_acc']:.4f}, "
        f"best validation accuracy {m['best_val_acc']:.4f}",
        f"- sweep: {len(TEMPERATURES)} T × {len(ALPHAS)} λ × student mlp {a.size}×1 × {SEEDS} seeds "
        f"= {len(TEMPERATURES) * len(ALPHAS) * SEEDS} distillations + {SEEDS} no-KD baselines; "
        f"{a.epochs} epochs, batch {a.batch_size}, Adam lr {a.lr:g} per run",
        "- command (the teacher as its checkpoint path; `--store` added per backend):",
        "",
        "```",
        "python -m kd_core "
        + " ".join(command)
        .replace(teacher_run.weights, "TEACHER.pt")
        .replace("--backend inprocess", "--backend {inprocess,ray}")
        + " --json",
        "```",
        "",
    ]


def write(report: list[str], out: Path) -> None:
    """Print the report and write it to OUT, keeping OUT's hand-written Notes section."""
    text = "\n".join(report)
    print(text)
    old = out.read_text() if out.exists() else ""
    notes = old[old.index(NOTES) :] if NOTES in old else ""
    out.write_text(text + ("\n" + notes if notes else ""))
    print(f"written: {out}")


def main() -> int:
    a = parse_args()
    root = a.store or Path(tempfile.mkdtemp(prefix="kd_bench_sweep_"))
    root.mkdir(parents=True, exist_ok=True)
    teacher_path, teacher_run = teacher(root)
    runs = [sweep(root, backend, teacher_path, a) for backend in BACKENDS]
    same = compare(*runs)
    local = runs[0]
    report = [
        f"# Sweep: {len(TEMPERATURES)} T × {len(ALPHAS)} λ × {SEEDS} seeds on digits, in-process and Ray",
        "",
        f"`python benchmarks/bench_sweep.py {' '.join(sys.argv[1:])}`".replace(" `", "`")
        + f" — {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        *machine(runs),
        *settings(a, teacher_run, local["command"]),
        *timing(runs, same),
        "## The grid (in-process store)",
        "",
        *[line for metric in METRICS for line in results(local["store"], local["id"], metric)],
    ]
    write(report, a.out)
    ok = same["same_cells"] and all(r["finished"] == r["runs"] for r in runs)
    return 0 if ok and max(same[m] for m in COMPARED) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
