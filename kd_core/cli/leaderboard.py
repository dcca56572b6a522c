"""`kd-studio leaderboard`: distillation methods side by side for one teacher and one student.

    kd-studio leaderboard --teacher RUN_ID --methods dkd,dist,0.5*kd+1*dist --seeds 3 --epochs 5 [--json]
    kd-studio leaderboard --resume ID        (a stopped one: only its unfinished runs)
    kd-studio leaderboard --list

Every method and the no-KD baseline train at the same N seeds (plain KD is always included);
the table gives mean ± std per method and its gain over the baseline and over KD, with paired
t-tests over seeds adjusted together by Benjamini–Hochberg (kd_core.views.leaderboard). A bad
method, or one the models cannot serve, is refused before anything is stored.
"""

from __future__ import annotations

import json
import math
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
    load,
    method_list,
    plain,
    train_config,
)
from kd_core.errors import ConfigError
from kd_core.stats import SIGNIFICANCE
from kd_core.store import Store
from kd_core.sweep.executors import make_executor
from kd_core.sweep.grid import create_sweep, load_sweep, pending, plan
from kd_core.sweep.ray_executor import check_ray_address, check_ray_gcs
from kd_core.sweep.runner import run_sweep
from kd_core.train.data import load_dataset
from kd_core.train.models import student_preset
from kd_core.views.leaderboard import (
    KIND,
    METRIC,
    Leaderboard,
    leaderboard,
    leaderboards,
    make_leaderboard,
)


def register(sub) -> None:
    """Add the `leaderboard` sub-command to the CLI's sub-parsers."""
    p = sub.add_parser("leaderboard", help="compare distillation methods over seeds, with paired tests")
    add_data_args(p)
    add_train_args(p, epochs=5)
    g = p.add_argument_group("leaderboard")
    g.add_argument("--teacher", help="teacher run id or checkpoint path")
    g.add_argument("--methods", type=method_list, default=("kd", "dkd", "dist"), help="e.g. dkd,dist,0.5*kd+1*at")
    g.add_argument("--seeds", type=int, default=3, help="N seeds: --seed, --seed+1, … (at least 2)")
    g.add_argument("--family", choices=["mlp", "cnn"], default=None, help="student family (default: the preset's)")
    g.add_argument("--size", type=int, default=None, help="student width (default: the preset's)")
    g.add_argument("--depth", type=int, default=None, help="MLP hidden layers")
    g.add_argument("-T", "--temperature", type=float, default=4.0, help="T of every logit-based method")
    g.add_argument("--alpha", "--lambda", type=float, default=0.5, help="λ, the weight of the distillation terms")
    g.add_argument("--no-cache", action="store_true", help="run the teacher on every batch")
    g.add_argument("--metric", choices=["test_acc", "best_val_acc", "final_val_acc"], default=METRIC)
    add_backend_args(g)
    g.add_argument("--resume", metavar="ID", help="run the runs of this leaderboard that have not finished")
    g.add_argument("--list", action="store_true", help="list the stored leaderboards and exit")
    g.add_argument("--show", metavar="ID", help="print a stored leaderboard's table and exit")
    p.set_defaults(fn=cmd_leaderboard)


def leaderboard_config(a):
    if not a.teacher:
        raise ConfigError("a leaderboard needs --teacher (a run id or checkpoint path).")
    preset = student_preset(a.dataset)
    return make_leaderboard(
        str(a.teacher),
        a.methods,
        a.seeds,
        a.family or preset.family,
        preset.size if a.size is None else a.size,
        preset.depth if a.depth is None else a.depth,
        data_config(a),
        train_config(a),
        a.temperature,
        a.alpha,
        a.seed,
        not a.no_cache,
    )


def _num(x: float, fmt: str = "+.4f") -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def print_table(board: Leaderboard) -> None:
    """The table as text: one line per entry, the marked best with ^."""
    print(f"{'method':<22}{'n':>3}  {'mean ± std':<20}{'vs baseline':>13}{'p (BH)':>9}{'vs KD':>11}{'p (BH)':>9}")
    for r in board.table.to_dict("records"):
        mean = f"{r['mean']:.4f} ± {_num(r['std'], '.4f')}" if r["n"] else "no runs"
        mark = " ^" if r["best"] else ""
        print(
            f"{r['method'][:21]:<22}{r['n']:>3}  {mean:<20}{_num(r['base_gain']):>13}{_num(r['base_p_bh'], '.2g'):>9}"
            f"{_num(r['kd_gain']):>11}{_num(r['kd_p_bh'], '.2g'):>9}{mark}"
        )
    print(board.verdict)


def payload(board: Leaderboard) -> dict:
    return plain(
        {
            "sweep_id": board.sweep_id,
            "metric": board.metric,
            "seeds": list(board.seeds),
            "rows": board.table.to_dict("records"),
            "tested": board.tested,
            "significant": board.significant,
            "significant_bh": board.significant_bh,
            "best": board.best,
            "verdict": board.verdict,
        }
    )


def _show(a) -> int:
    store = Store(a.store)
    if a.list:
        rows = leaderboards(store)
        if a.json:
            print(json.dumps(plain(rows), indent=2, default=str))
        for r in [] if a.json else rows:
            print(r["label"])
        return 0
    board = leaderboard(store, a.show, a.metric, SIGNIFICANCE)  # KDError: no such sweep
    print(json.dumps({"command": "leaderboard", **payload(board)}, indent=2) if a.json else "", end="")
    if not a.json:
        print_table(board)
    return 0


def cmd_leaderboard(a) -> int:
    if a.list or a.show:
        return _show(a)
    started = time.perf_counter()
    cfg = None if a.resume else leaderboard_config(a)  # a bad method or value: refused before the data loads
    executor = make_executor(a.backend, a.ray_address, a.ray_cpus)
    if a.backend == "ray" and a.ray_address:
        check_ray_address(a.ray_address)
        check_ray_gcs(a.ray_address)
    if cfg is None:
        store = Store(a.store)
        cfg, sweep_id = load_sweep(store, a.resume), a.resume
        if cfg.kind != KIND:
            raise ConfigError(
                f"{sweep_id} is a sweep, not a leaderboard; `kd-studio sweep --resume {sweep_id}` runs it."
            )
        data = load_dataset(cfg.data)
    else:
        data, store = load(a)
        sweep_id = create_sweep(store, cfg, data)  # refuses AT on an MLP and the like before storing
    left = len(pending(store, sweep_id, cfg))
    print(
        f"leaderboard {sweep_id}: {left} of {len(plan(cfg))} runs to go (resume with --resume {sweep_id})",
        file=sys.stderr,
    )
    with StopOnSignal() as stop:
        bar = ProgressBar(not a.quiet)
        outcomes = run_sweep(store, sweep_id, data, emit=bar, stop=stop.event, executor=executor)
        bar.close()
    runs = [o.summary() for o in outcomes]
    board = leaderboard(store, sweep_id, a.metric, SIGNIFICANCE)
    if a.json:
        out = {"command": "leaderboard", "backend": executor.name, "config": cfg.to_dict(), "runs": runs}
        out.update(payload(board), seconds=time.perf_counter() - started)
        print(json.dumps(plain(out), indent=2, default=str))
    else:
        print_table(board)
    return exit_code(runs, stop)
