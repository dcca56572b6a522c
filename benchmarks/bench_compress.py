"""How soon a compress study finds the issue's student on Fashion-MNIST: Optuna's default sampler and
pruner (TPE + median) against plain random search (RandomSampler, no pruner), same budget, 3 repeats.

Goal: a student whose validation accuracy is within 1 point of the teacher's, at least 10× faster than
the teacher at batch 1 under ONNX Runtime (1 thread), each candidate timed on this machine before it
trains. Each study runs one trial at a time until a trial meets the goal or the budget (--trials, or
--minutes per study) is spent; "minutes to the goal" is from the start of its first trial to the end
of the first trial that meets the goal (the teacher's one-off timing excluded, the same for both).

A fixed teacher (MLP 1024×2 by default, trained once, seed 0) and, to stay within ~30 minutes on 2 shared cores,
a subset: the first --train training images and --val validation images of the fixed split (the test
split whole); trials train --epochs epochs. Run with `nice`:

    nice -n 5 python benchmarks/bench_compress.py [--work DIR] [--repeats 3] [--trials 12] [--minutes 4]

Prints a Markdown report and writes benchmarks/RESULTS_compress.md (a "## Notes" section is kept).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from kd_core.compress.config import CompressConfig, Goal  # noqa: E402
from kd_core.compress.search import run_study  # noqa: E402
from kd_core.compress.space import SearchSpace  # noqa: E402
from kd_core.compress.study import create_study, read_study  # noqa: E402
from kd_core.config import DataConfig, ModelSpec, RunConfig, TrainConfig  # noqa: E402
from kd_core.deploy.runtimes import machine_line  # noqa: E402
from kd_core.store import Store  # noqa: E402
from kd_core.train.data import load_dataset  # noqa: E402
from kd_core.train.recorder import train_teacher  # noqa: E402

ARMS = {"tpe+median": ("tpe", "median"), "random": ("random", "none")}
NOTES = "## Notes"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", type=Path, default=None, help="working folder (default: a fresh temp dir)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--trials", type=int, default=12, help="trial budget of each study")
    p.add_argument("--minutes", type=float, default=4.0, help="wall-clock budget of each study")
    p.add_argument("--epochs", type=int, default=3, help="epochs per trial")
    p.add_argument("--teacher-width", type=int, default=1024, help="the teacher: an MLP of this width × 2")
    p.add_argument("--train", type=int, default=12000, help="training images used")
    p.add_argument("--val", type=int, default=2000, help="validation images used")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "RESULTS_compress.md")
    return p.parse_args()


def subset(data, n_train: int, n_val: int):
    return replace(
        data,
        train_x=data.train_x[:n_train],
        train_y=data.train_y[:n_train],
        val_x=data.val_x[:n_val],
        val_y=data.val_y[:n_val],
    )


def teacher(work: Path, data, width: int) -> str:
    store = Store(work / "teacher")
    cfg = RunConfig(
        data=DataConfig("fashion-mnist"),
        model=ModelSpec("mlp", width, 2),
        train=TrainConfig(epochs=4, lr=1e-3, batch_size=128, threads=0, seed=0, device="cpu"),
    )
    outcome = train_teacher(store, cfg, data)
    assert outcome.status == "finished", outcome.message
    return str(store.weights_path(outcome.run_id))


def study_config(teacher_id: str, arm: str, repeat: int, a) -> CompressConfig:
    sampler, pruner = ARMS[arm]
    return CompressConfig(
        teacher_id=teacher_id,
        data=DataConfig("fashion-mnist"),
        train=TrainConfig(epochs=a.epochs, lr=3e-3, batch_size=64, threads=1, seed=0, device="cpu"),
        runtime="onnxruntime",
        batch_size=1,
        goal=Goal(max_drop=1.0, min_speedup=10.0),
        space=SearchSpace(mlp_widths=(16, 1024), mlp_depths=(1, 2)),
        sampler=sampler,
        pruner=pruner,
        trials=a.trials,
        seed=100 + repeat,
    )


def one_study(work: Path, data, teacher_id: str, arm: str, repeat: int, a) -> dict:
    """Trials one at a time until one meets the goal or the budget is spent."""
    store = Store(work / f"{arm}-{repeat}")
    study_id = create_study(store, study_config(teacher_id, arm, repeat, a))
    began, report = time.time(), None
    for k in range(1, a.trials + 1):
        report = run_study(store, study_id, data, trials=k)
        if (
            report.chosen is not None
            or report.verdict.startswith("No candidate can")
            or time.time() - began > 60 * a.minutes
        ):
            break
    trials = read_study(store, study_id).get_trials()
    first = trials[0].datetime_start if trials else None
    hit = report.chosen if report else None
    feasible = [r["number"] for r in report.rows if r.get("feasible")] if report else []
    goal_trial = trials[min(feasible)] if feasible else None  # trials are in number order
    return {
        "arm": arm,
        "repeat": repeat,
        "trials_run": len(trials),
        "reached": goal_trial is not None,
        "trials_to_goal": goal_trial.number + 1 if goal_trial else None,
        "minutes_to_goal": (goal_trial.datetime_complete - first).total_seconds() / 60 if goal_trial else None,
        "minutes_total": (trials[-1].datetime_complete - first).total_seconds() / 60 if trials else 0.0,
        "pruned_budget": sum(r["pruned_by"] == "budget" for r in report.rows),
        "pruned_pruner": sum(r["pruned_by"] == "pruner" for r in report.rows),
        "chosen": hit,
        "reference": report.reference,
        "verdict": report.verdict,
    }


def fmt(v, spec=".2f") -> str:
    return "—" if v is None else format(v, spec)


def summary(results: list[dict], arm: str, a) -> dict:
    rs = [r for r in results if r["arm"] == arm]
    # a study that did not reach the goal counts at its budget (a lower bound on its true time)
    minutes = [r["minutes_to_goal"] if r["reached"] else r["minutes_total"] for r in rs]
    trials = [r["trials_to_goal"] if r["reached"] else r["trials_run"] for r in rs]
    return {
        "reached": sum(r["reached"] for r in rs),
        "n": len(rs),
        "median_minutes": statistics.median(minutes),
        "median_trials": statistics.median(trials),
        "minutes": minutes,
        "trials": trials,
    }


def report(results: list[dict], a, load: tuple, seconds: float) -> str:
    ref = results[0]["reference"]
    lines = [
        "# Compress benchmark: minutes and trials to the issue's student",
        "",
        f"CPU: {ref['machine']['cpu']}; {machine_line(ref['machine'])}.",
        f"Load average (1, 5, 15 min) before: {load[0]}; after: {load[1]} — the machine is shared with other work, "
        "so latencies and minutes are noisy.",
        f"Total wall time: {seconds / 60:.1f} min.",
        "",
        f"Teacher: MLP {a.teacher_width}×2 (4 epochs), validation accuracy {ref['val_acc']:.4f}, test {ref['test_acc']:.4f}, "
        f"{ref['latency_ms']:.4f} ms at batch 1 under ONNX Runtime (1 thread). Goal: validation accuracy ≥ "
        f"{ref['val_acc'] - 0.01:.4f} (1 point) and latency ≤ {ref['latency_ms'] / 10:.4f} ms (10×).",
        f"Data: Fashion-MNIST, the first {a.train} training and {a.val} validation images of the fixed split, the "
        f"whole test split; each trial trains {a.epochs} epochs. Search: MLP width 16–1024 (log), 1–2 hidden layers, "
        "T 1–8 (log), λ 0.1–0.95, float32 or int8. Budget per study: "
        f"{a.trials} trials or {a.minutes:g} minutes. Sampler seeds 100, 101, 102, the same for both arms (paired: "
        "TPE's first 10 trials are random draws, so both arms start alike; they part at trial 11 or at the "
        "first trial the median pruner stops).",
        "",
        "| arm | repeat | reached | trials to goal | minutes to goal | trials run | over budget (not trained) | stopped by pruner | chosen |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        c = r["chosen"]
        chosen = (
            "" if c is None else f"{c['label']}: {c['val_acc']:.4f}, {c['latency_ms']:.4f} ms ({c['speedup']:.1f}×)"
        )
        lines.append(
            f"| {r['arm']} | {r['repeat']} | {'yes' if r['reached'] else 'no'} | {fmt(r['trials_to_goal'], 'd')} | "
            f"{fmt(r['minutes_to_goal'])} | {r['trials_run']} | {r['pruned_budget']} | {r['pruned_pruner']} | {chosen} |"
        )
    s = {arm: summary(results, arm, a) for arm in ARMS}
    lines += [
        "",
        "| arm | reached | median minutes | median trials | minutes (each repeat) |",
        "|---|---:|---:|---:|---|",
    ]
    for arm, v in s.items():
        each = ", ".join(f"{m:.2f}" for m in v["minutes"])
        lines.append(
            f"| {arm} | {v['reached']}/{v['n']} | {v['median_minutes']:.2f} | {v['median_trials']:g} | {each} |"
        )
    ratio_m = s["random"]["median_minutes"] / s["tpe+median"]["median_minutes"]
    ratio_t = s["random"]["median_trials"] / s["tpe+median"]["median_trials"]
    lines += [
        "",
        f"Ratio random / (TPE + median pruner), medians over {a.repeats} repeats: **{ratio_m:.2f}× in minutes, "
        f"{ratio_t:.2f}× in trials** (a study that missed the goal counts at its whole budget: a lower bound). "
        "Target: ≥ 2× sooner.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    a = parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    started = time.time()
    work = a.work or Path(tempfile.mkdtemp(prefix="kd-bench-compress-"))
    data = subset(load_dataset(DataConfig("fashion-mnist")), a.train, a.val)
    teacher_id = teacher(work, data, a.teacher_width)
    print(f"teacher: {teacher_id}", file=sys.stderr)
    results = []
    for repeat in range(a.repeats):
        for arm in ARMS:  # interleaved, so that a change in the machine's load hits both arms alike
            r = one_study(work, data, teacher_id, arm, repeat, a)
            print(f"{arm} #{repeat}: {r['verdict']}", file=sys.stderr, flush=True)
            results.append(r)
    text = report(
        results,
        a,
        (tuple(round(x, 2) for x in load_before), tuple(round(x, 2) for x in os.getloadavg())),
        time.time() - started,
    )
    old = a.out.read_text() if a.out.exists() else ""
    notes = old[old.index(NOTES) :] if NOTES in old else ""
    a.out.write_text(text + ("\n" + notes if notes else ""))
    print(text)


if __name__ == "__main__":
    main()
