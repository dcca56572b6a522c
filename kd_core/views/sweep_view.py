"""What the Sweep page asks of kd_core besides the results tables: the grid typed as
lists, how many runs it makes, which stored sweeps are unfinished, whether Ray is there,
and the results in words (the best cells, the multiple-testing counts, the estimate's basis).

No torch: importing this module imports neither torch nor ray.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
from collections.abc import Callable
from dataclasses import replace

from kd_core import fmt
from kd_core.config import DataConfig, TrainConfig
from kd_core.errors import ConfigError

# The Sweep page imports only views: what it takes from the sweep package is re-exported here (`X as X`).
from kd_core.stats import SIGNIFICANCE as SIGNIFICANCE
from kd_core.stats import TEST_NAME as TEST_NAME
from kd_core.store import Store
from kd_core.sweep.executors import make_executor
from kd_core.sweep.grid import SweepConfig, finished_runs, load_sweep, plan, validate_sweep
from kd_core.sweep.grid import check_sweep_data as check_sweep_data
from kd_core.sweep.grid import create_sweep as create_sweep
from kd_core.sweep.grid import pending as pending
from kd_core.sweep.ray_executor import RAY_MISSING as RAY_MISSING
from kd_core.sweep.results import RAY_START_S
from kd_core.sweep.results import estimate as estimate
from kd_core.sweep.results import gain_curve as gain_curve
from kd_core.sweep.results import multiple_tests as multiple_tests
from kd_core.sweep.results import sweep_grids as sweep_grids
from kd_core.sweep.results import sweep_results as sweep_results
from kd_core.sweep.runner import start_sweep as start_sweep


def parse_values(text: str, cast: Callable = float, name: str = "values") -> tuple:
    """ "1, 2, 4" → (1.0, 2.0, 4.0); commas or spaces between values. ConfigError says what is wrong."""
    parts = [p for p in text.replace(",", " ").split() if p]
    if not parts:
        raise ConfigError(f"{name}: enter at least one value, e.g. 1, 2, 4.")
    out = []
    for p in parts:
        try:
            value = float(p) if cast is float else cast(p)
        except ValueError:
            kind = "a whole number" if cast is int else "a number"
            raise ConfigError(f"{name}: '{p}' is not {kind}; separate values with commas, e.g. 1, 2, 4.") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name}: '{p}' is not a finite number.")
        out.append(value)
    if len(set(out)) != len(out):
        raise ConfigError(f"{name}: a value is repeated ({', '.join(f'{v:g}' for v in out)}).")
    return tuple(out)


def make_sweep(
    temperatures: str,
    alphas: str,
    sizes: str,
    seeds: int,
    first_seed: int,
    teacher_id: str,
    family: str,
    depth: int,
    data: DataConfig,
    train: TrainConfig,
    budgets: str = "all",
    methods: str = "kd",
) -> SweepConfig:
    """A SweepConfig from the page's fields (the lists as typed); ConfigError on a bad value, a bad
    method included. `budgets`: label budgets, "all" or 0 for every label, e.g. "100, 500, all";
    `methods`: comma-separated mixes, e.g. "kd, dkd, 0.5*kd+1*at"."""
    cfg = SweepConfig(
        methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
        temperatures=parse_values(temperatures, float, "Temperatures T"),
        alphas=parse_values(alphas, float, "λ values"),
        sizes=parse_values(sizes, int, "Student sizes"),
        seeds=SweepConfig.seed_range(int(seeds), int(first_seed)),
        teacher_id=teacher_id or "",
        family=family,
        depth=int(depth),
        data=data,
        train=train,
        label_budgets=parse_budgets(budgets),
    )
    for a in cfg.alphas:
        if not 0.0 <= a <= 1.0:
            raise ConfigError(f"λ values: {a:g} is outside [0, 1].")
    for t in cfg.temperatures:
        if t <= 0:
            raise ConfigError(f"Temperatures T: {t:g} must be above 0.")
    for s in cfg.sizes:
        if s < 1:
            raise ConfigError(f"Student sizes: {s} must be at least 1.")
    validate_sweep(replace(cfg, teacher_id=cfg.teacher_id or "?"))  # the methods, before anything is stored
    return cfg


def parse_budgets(text: str) -> tuple[int, ...]:
    """ "100, 500, all" → (100, 500, 0): the label budgets of a gain-versus-labels sweep."""
    words = text.replace(",", " ").split()
    values = parse_values(" ".join("0" if w.lower() == "all" else w for w in words), int, "Label budgets")
    if any(v < 0 for v in values):
        raise ConfigError("Label budgets: use positive counts, or all.")
    return values


def budget_name(budget: int) -> str:
    return "all labels" if budget == 0 else f"{budget:,} labels"


def run_counts(sweep: SweepConfig) -> dict:
    """{"cells": distillations, "baselines": no-KD runs, "total", "configs": methods × T × λ × sizes × budgets}."""
    configs = (
        len(sweep.methods) * len(sweep.temperatures) * len(sweep.alphas) * len(sweep.sizes) * len(sweep.label_budgets)
    )
    cells = configs * len(sweep.seeds)
    baselines = len(sweep.sizes) * len(sweep.seeds) * len(sweep.label_budgets)
    return {"cells": cells, "baselines": baselines, "total": cells + baselines, "configs": configs}


def sweep_list(store: Store) -> list[dict]:
    """Every stored sweep, newest first: {"id", "created", "config", "total", "done", "left", "label"}
    (the label names the grid; it does not change as runs finish)."""
    out = []
    for row in store.list_sweeps():
        sweep = load_sweep(store, row["id"])
        total, done = len(plan(sweep)), len(finished_runs(store, row["id"]))
        methods = "" if sweep.methods == ("kd",) else f"{'/'.join(sweep.method_texts)} × "
        label = (
            f"{row['id']} · {methods}T {'/'.join(f'{t:g}' for t in sweep.temperatures)} × "
            f"λ {'/'.join(f'{a:g}' for a in sweep.alphas)} × {sweep.family} "
            f"{'/'.join(map(str, sweep.sizes))} × {len(sweep.seeds)} seed{'s' * (len(sweep.seeds) > 1)}"
        )
        out.append(
            {
                "id": row["id"],
                "created": row["created"],
                "config": row["config"],
                "total": total,
                "done": done,
                "left": total - done,
                "label": label,
            }
        )
    return out


def ray_available() -> bool:
    """Whether the optional `ray` package can be imported (checked without importing it)."""
    return importlib.util.find_spec("ray") is not None


def duration_text(seconds: float | None) -> str:
    """ "about 40 s", "about 3 min", "about 1.5 h"; "no measurement yet" for None."""
    if seconds is None:
        return "no measurement yet"
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"


def ray_workers() -> int:
    """How many runs a Ray sweep started here trains at once: the CPUs of the local instance
    (`make_executor`'s num_cpus), each run being a 1-CPU task."""

    return int(inspect.signature(make_executor).parameters["num_cpus"].default)


def _model_label(model: tuple) -> str:
    family, size, depth = model
    return f"{family} {size}×{depth}" if family == "mlp" else f"{family} {size}"


def estimate_note(est, dataset: str) -> str:
    """Where a `sweep_results.Estimate` comes from, in words (None: there is nothing to go by)."""
    if est is None:
        return f"There is no estimate yet: train anything on {dataset} first."
    scaled = {m: b for m, b in est.basis.items() if b[0] == "scaled"}
    if scaled:
        refs = ", ".join(f"{_model_label(b[1])} {b[2]}" for b in {b[1:3]: b for b in scaled.values()}.values())
        note = (
            f"The estimate scales the training speed this store measured on {dataset} ({refs}) to the "
            f"planned students by FLOPs per step, above a fixed cost per step; rough until a student of "
            f"this size has been trained here."
        )
    else:
        note = f"The estimate comes from the training speed this store measured on {dataset} for the same students."
    if est.workers > 1:
        note += (
            f" Ray: {est.workers} runs at once (the local instance's CPUs; a cluster given by address "
            f"may run more), plus about {RAY_START_S:g} s to start it."
        )
    return note


def _cells(rows: list[dict], most: int = 4) -> str:
    names = [f"T={r['temperature']:g} λ={r['alpha']:g}" for r in rows]
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def best_text(g: dict, label: str) -> str:
    """The best cell of one size's grid (`sweep_results.sweep_grids`) in words: every marked best cell
    with its gain and verdict; "no cell beats its baseline" when no mean gain is above 0; "" before
    any run."""
    best, top = g["best"], g["top"]
    if not top:
        return ""
    if len(best) == 1:
        b = best[0]
        return (
            f"Best for {label}: T={b['temperature']:g}, λ={b['alpha']:g} — {b['text']}; "
            f"gain {b['gain_text']}: {b['verdict']}."
        )
    if best:
        each = "; ".join(
            f"T={b['temperature']:g} λ={b['alpha']:g}: gain {b['gain_text']}, {b['verdict']}" for b in best
        )
        return f"Best for {label}: {len(best)} cells tie at the highest mean, {fmt.num(best[0]['mean'])} — {each}."
    where = f"{_cells(top)}" + (f" ({len(top)} cells tie)" if len(top) > 1 else "")
    if g["beats"] == 0:
        return (
            f"{label}: no cell beats its baseline ({g['baseline']['text']}) — no mean gain is above 0. "
            f"The highest mean, {top[0]['text']}, is at {where}, gain {top[0]['gain_text']}."
        )
    return (
        f"{label}: the highest mean, {top[0]['text']} at {where}, does not beat its baseline "
        f"(gain {top[0]['gain_text']}); {g['beats']} cell{'s' * (g['beats'] != 1)} with fewer finished "
        f"seeds or a lower mean have a mean gain above 0."
    )


def significance_text(summary: dict, test_name: str) -> str:
    """`sweep_results.multiple_tests`' counts in words: the test, how many significant cells chance
    alone gives, and how many stay significant after the Benjamini–Hochberg correction."""
    k, level = summary["tested"], summary["level"]
    if k == 0:
        return (
            f"Significance: {test_name}, two-sided, α = {level:g}; no cell has a test yet "
            f"(it needs 2 seeds, and a gain that is not the same on every seed)."
        )
    return (
        f"Significance: {test_name}, two-sided, α = {level:g}, each cell on its own (* in a cell). With "
        f"k = {k} tested cell{'s' * (k != 1)}, about {level:g} × {k} = {summary['expected']:.2g} would come "
        f"out significant by chance alone even if distillation changed nothing; {summary['significant']} "
        f"did. After the Benjamini–Hochberg correction over the {k} (scipy.stats.false_discovery_control, "
        f"false discovery rate {level:g}): {summary['significant_bh']} of {k} stay significant."
    )
