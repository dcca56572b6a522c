"""`python -m kd_core sweep`: temperature × λ × student size over seeds, into the run store.

    python -m kd_core sweep --teacher RUN_ID --temperatures 1,2,4 --alphas 0.25,0.5 \\
        --sizes 16,32 --seeds 3 --epochs 5 [--methods kd,dkd,0.5*kd+1*at] [--backend ray] [--json]
    python -m kd_core sweep --resume SWEEP_ID

The sweep id goes to stderr first, so an interrupted sweep can be resumed; a
resumed sweep runs only the cells without a finished run. `--json` prints the
grids of means, stds, counts and gains over the baseline, and every cell.
"""

from __future__ import annotations

import json
import sys
import time

from kd_core.cli.common import (
    ProgressBar,
    StopOnSignal,
    add_backend_args,
    add_data_args,
    add_train_args,
    data_config,
    exit_code,
    method_list,
    train_config,
)
from kd_core.cli.common import numbers as _numbers
from kd_core.cli.common import plain as _plain
from kd_core.config import LabelConfig
from kd_core.errors import ConfigError
from kd_core.fmt import signed
from kd_core.stats import SIGNIFICANCE
from kd_core.store import Store
from kd_core.sweep.executors import make_executor
from kd_core.sweep.grid import (
    SWEEP_METRICS,
    SweepConfig,
    check_sweep_data,
    create_sweep,
    load_sweep,
    pending,
    plan,
    validate_sweep,
)
from kd_core.sweep.ray_executor import check_ray_address, check_ray_gcs
from kd_core.sweep.results import gain_curve, multiple_tests, sweep_grids, sweep_results
from kd_core.sweep.runner import run_sweep
from kd_core.train.data import load_dataset
from kd_core.train.models import student_preset
from kd_core.views.sweep_view import best_text

GRID_JSON = ("mean", "std", "n", "gain_mean", "gain_std", "gain_n", "p", "significant", "p_bh", "best_marked")


def register(sub) -> None:
    """Add the `sweep` sub-command to the CLI's sub-parsers."""
    p = sub.add_parser("sweep", help="sweep method × temperature × λ × student size over seeds")
    add_data_args(p)
    add_train_args(p, epochs=10)
    g = p.add_argument_group("sweep")
    g.add_argument("--teacher", help="teacher run id or checkpoint path (not needed with --resume)")
    g.add_argument("--temperatures", type=_numbers(float), default=(1.0, 2.0, 4.0), help="e.g. 1,2,4")
    g.add_argument("--alphas", "--lambdas", type=_numbers(float), default=(0.5, 0.9), help="λ values, e.g. 0.25,0.5")
    g.add_argument(
        "--methods", type=method_list, default=("kd",), help="method mixes, comma-separated: kd,dkd,0.5*kd+1*at"
    )
    g.add_argument("--sizes", type=_numbers(int), default=None, help="student sizes (default: the preset's)")
    g.add_argument("--family", choices=["mlp", "cnn"], default=None, help="student family (default: the preset's)")
    g.add_argument("--depth", type=int, default=None, help="MLP hidden layers")
    g.add_argument("--seeds", type=int, default=1, help="N seeds: --seed, --seed+1, … (default 1)")
    g.add_argument("--no-cache", action="store_true", help="run the teacher on every batch")
    g.add_argument("--resume", metavar="SWEEP_ID", help="run the cells of this sweep that have not finished")
    add_backend_args(g)
    g.add_argument("--metric", choices=SWEEP_METRICS, default="best_val_acc", help="what the grid shows")
    g.add_argument(
        "--label-budgets",
        type=_numbers(int),
        default=(0,),
        help="the gain-versus-labels axis: total labelled images per run, 0 for all, e.g. 100,500,2000,0",
    )
    g.add_argument("--transfer", default="rest", help="transfer set of the budget runs (see distill --transfer)")
    g.add_argument("--transfer-ratio", type=float, default=1.0, help="transfer rows per labelled row in a batch")
    p.set_defaults(fn=cmd_sweep)


def sweep_config(a) -> SweepConfig:
    if not a.teacher:
        raise ConfigError(
            "a new sweep needs --teacher (a run id or checkpoint path); --resume SWEEP_ID continues an old one."
        )
    if a.seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {a.seeds}.")
    preset = student_preset(a.dataset)
    return SweepConfig(
        temperatures=a.temperatures,
        alphas=a.alphas,
        sizes=a.sizes or (preset.size,),
        seeds=SweepConfig.seed_range(a.seeds, a.seed),
        teacher_id=str(a.teacher),
        family=a.family or preset.family,
        depth=preset.depth if a.depth is None else a.depth,
        data=data_config(a),
        train=train_config(a),
        cache_teacher_logits=not a.no_cache,
        label_budgets=a.label_budgets,
        labels=LabelConfig(transfer=a.transfer, transfer_ratio=a.transfer_ratio),
        methods=a.methods,
    )


def grid_payload(store, sweep_id: str, metric: str) -> dict:
    """{"grids": {size (with several methods "size method"): {size, method, label, temperatures, alphas, mean, std, n, gain_*, p, significant, p_bh, best_marked,
    best (the marked best cells: every tie, none when no best mean beats the baseline), top, beats,
    baseline, text (the best cell in words)}}, "cells": [...], "tests": the multiple-testing counts}"""
    results = sweep_results(store, sweep_id, metric, SIGNIFICANCE)
    methods = load_sweep(store, sweep_id).method_texts
    grids = {}
    for method in methods:
        for size, g in sweep_grids(store, sweep_id, metric, SIGNIFICANCE, results, method=method).items():
            one = len(methods) == 1
            label = f"size {size}" if one else f"{method}, size {size}"
            grids[str(size) if one else f"{size} {method}"] = {
                "size": size,
                "method": method,
                "label": label,
                "temperatures": g["mean"].index.tolist(),
                "alphas": g["mean"].columns.tolist(),
                **{v: g[v].values.tolist() for v in GRID_JSON},
                "best": g["best"],
                "top": g["top"],
                "beats": g["beats"],
                "baseline": g["baseline"],
                "text": best_text(g, label),
            }
    curve = gain_curve(store, sweep_id, metric, SIGNIFICANCE)
    return _plain(
        {
            "grids": grids,
            "cells": results.to_dict("records"),
            "tests": multiple_tests(results, SIGNIFICANCE),
            "curve": curve.to_dict("records"),
        }
    )


def cell_text(mean, std, n, gain, p, significant, best) -> str:
    """One cell of the text grid: "0.9704±0.0032 n=3 Δ+0.0046 p=0.2 ^"; * only for p < 0.05 (as on the
    page), ^ for a marked best cell, "p=–" where the paired test gives no verdict."""
    if not n:
        return "—"
    verdict = "p=–" if significant is None else f"p={p:.2g}" + (" *" if significant else "")
    return f"{mean:.4f}±{std or 0:.4f} n={n} Δ{signed(gain or 0)} {verdict}{' ^' if best else ''}"


def _print_grids(payload: dict) -> None:
    width = 44
    for g in payload["grids"].values():
        print(f"{g['label']}: baseline {g['baseline']['text']}")
        print("  T \\ λ  " + "".join(f"{a:>{width}g}" for a in g["alphas"]))
        for i, t in enumerate(g["temperatures"]):
            cells = [
                cell_text(*(g[k][i][j] for k in ("mean", "std", "n", "gain_mean", "p", "significant", "best_marked")))
                for j in range(len(g["alphas"]))
            ]
            print(f"  {t:<6g} " + "".join(f"{c:>{width}s}" for c in cells))
        print(
            f"  ^ best mean (every tie; only above the baseline) · * p < {SIGNIFICANCE:g}, paired t-test over seeds "
            f"(uncorrected) · p=–: no verdict"
        )
        if g["text"]:
            print(f"  {g['text']}")
    t = payload["tests"]
    if t["tested"]:
        print(
            f"{t['significant']} of {t['tested']} tested cells significant at {t['level']:g} (about "
            f"{t['expected']:.2g} expected by chance); {t['significant_bh']} after the Benjamini–Hochberg "
            f"correction (scipy.stats.false_discovery_control)"
        )


def _print_curve(payload: dict) -> None:
    """The gain-versus-labels curve, one line per budget, when the sweep has more than one."""
    rows = payload["curve"]
    if len({r["budget"] for r in rows}) < 2:
        return
    print("gain versus labels (student − baseline, paired over seeds):")
    for r in rows:
        labels = "all" if r["budget"] == 0 else f"{r['budget']:,}"
        print(
            f"  size {r['size']} T={r['temperature']:g} λ={r['alpha']:g}  {labels:>7} labels: "
            f"student {r['text']}  gain {r['gain_text']}  {r['verdict']}"
        )


def cmd_sweep(a) -> int:
    started = time.perf_counter()
    config = None if a.resume else sweep_config(a)
    data = None
    if config is not None:
        validate_sweep(config)  # before the store: a bad grid leaves no sweep behind
        data = load_dataset(config.data)
        check_sweep_data(config, data)  # nor does a label budget the dataset cannot give
    executor = make_executor(a.backend, a.ray_address, a.ray_cpus)
    if a.backend == "ray" and a.ray_address:
        check_ray_address(a.ray_address)  # seconds, not Ray's half-minute of retries, and before the store
        check_ray_gcs(a.ray_address)
    store = Store(a.store)
    sweep_id = a.resume if config is None else create_sweep(store, config, data)  # data: the models' checks
    sweep = load_sweep(store, sweep_id)
    print(
        f"sweep {sweep_id}: {len(pending(store, sweep_id, sweep))} of {len(plan(sweep))} runs to go "
        f"(resume with --resume {sweep_id})",
        file=sys.stderr,
    )
    data = data or load_dataset(sweep.data)
    with StopOnSignal() as stop:  # unfinished cells stay pending: --resume runs them
        bar = ProgressBar(not a.quiet)
        outcomes = run_sweep(store, sweep_id, data, emit=bar, stop=stop.event, executor=executor)
        bar.close()
    runs = [o.summary() for o in outcomes]
    payload = {
        "command": "sweep",
        "sweep_id": sweep_id,
        "backend": executor.name,
        "metric": a.metric,
        "config": sweep.to_dict(),
        "runs": runs,
        **grid_payload(store, sweep_id, a.metric),
        "seconds": time.perf_counter() - started,
    }
    if a.json:
        print(json.dumps(_plain(payload), indent=2, default=str))
    else:
        _print_grids(payload)
        _print_curve(payload)
    return exit_code(runs, stop)
