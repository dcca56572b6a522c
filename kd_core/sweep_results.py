"""A sweep's results and its time estimate, read from the store as plain tables.

Everything here is computed from the runs the store holds under a sweep id, so
it can be called while the sweep runs (the grid fills in) and from any page.
No torch: pandas DataFrames, dicts and floats out.

Each configuration is reported as mean ± sample std over its seeds with the
count; its gain over the no-KD baseline is the mean of per-seed differences
(student minus the baseline of the same size and seed), judged by a paired
t-test (`stats.paired_test`).
"""
from __future__ import annotations

import math
import statistics
from typing import Optional, Sequence

import pandas as pd

from .config import RunConfig
from .stats import pair_by_seed, paired_test, summarize
from .store import Store
from .sweep import Cell, SweepConfig, finished_runs, load_sweep, plan

GRID_VALUES = ("mean", "std", "n", "gain_mean", "gain_std", "gain_n", "p", "significant", "text")


def _by_config(store: Store, sweep_id: str, metric: str) -> dict[tuple, dict[int, float]]:
    """{(kind, size, T, λ): {seed: metric}} over the sweep's finished runs."""
    out: dict[tuple, dict[int, float]] = {}
    for (kind, size, seed, t, a), run in finished_runs(store, sweep_id).items():
        value = run["metrics"].get(metric)
        if value is not None:
            out.setdefault((kind, size, t, a), {})[seed] = float(value)
    return out


def _cell_row(size: int, t: float, a: float, cell: dict[int, float], base: dict[int, float],
              alpha: float) -> dict:
    s = summarize(list(cell.values()))
    b = summarize(list(base.values()))
    seeds, x, y = pair_by_seed(cell, base)
    gain = summarize(list(x - y))
    test = paired_test(x, y, alpha)
    return {"size": size, "temperature": t, "alpha": a, "n": s.n, "mean": s.mean, "std": s.std,
            "text": s.text(), "baseline_n": b.n, "baseline_mean": b.mean, "baseline_std": b.std,
            "gain_n": gain.n, "gain_mean": gain.mean, "gain_std": gain.std, "gain_text": gain.text(),
            "t": test.t, "p": test.p, "significant": test.significant, "verdict": test.reason,
            "test": test.test, "seeds": seeds}


def sweep_results(store: Store, sweep_id: str, metric: str = "best_val_acc", alpha: float = 0.05) -> pd.DataFrame:
    """One row per planned (size, T, λ), run or not (n = 0), in grid order.

    Columns: size, temperature, alpha, n, mean, std, text ("0.9500 ± 0.0100 (n=3)"),
    baseline_n/_mean/_std, gain_n/_mean/_std/_text, t, p, significant (True, False or
    None = no verdict), verdict (the reason in words), test, seeds (paired), best
    (the highest mean of its size; ties go to the first in grid order).
    """
    sweep = load_sweep(store, sweep_id)
    values = _by_config(store, sweep_id, metric)
    rows = []
    for size in sweep.sizes:
        base = values.get(("baseline", size, None, None), {})
        for t in sweep.temperatures:
            for a in sweep.alphas:
                rows.append(_cell_row(size, t, a, values.get(("student", size, t, a), {}), base, alpha))
    df = pd.DataFrame(rows)
    df["best"] = False
    for _, part in df[df["n"] > 0].groupby("size", sort=False):
        df.loc[part["mean"].idxmax(), "best"] = True
    df.attrs["metric"] = metric
    return df


def baseline_results(store: Store, sweep_id: str, metric: str = "best_val_acc") -> pd.DataFrame:
    """One row per student size: the no-KD baseline's n, mean, std and text."""
    sweep = load_sweep(store, sweep_id)
    values = _by_config(store, sweep_id, metric)
    rows = []
    for size in sweep.sizes:
        s = summarize(list(values.get(("baseline", size, None, None), {}).values()))
        rows.append({"size": size, **s.to_dict(), "text": s.text()})
    return pd.DataFrame(rows, columns=["size", "mean", "std", "n", "text"])


def sweep_grids(store: Store, sweep_id: str, metric: str = "best_val_acc", alpha: float = 0.05) -> dict[int, dict]:
    """Per student size, heatmap-ready grids (rows: temperature ascending, columns: λ ascending)
    for each of GRID_VALUES, plus "best" (that cell's row as a dict, None before any run)
    and "baseline" (mean, std, n, text)."""
    df = sweep_results(store, sweep_id, metric, alpha)
    baselines = baseline_results(store, sweep_id, metric).set_index("size")
    out: dict[int, dict] = {}
    for size, part in df.groupby("size", sort=False):
        grids = {v: part.pivot(index="temperature", columns="alpha", values=v) for v in GRID_VALUES}
        best = part[part["best"]]
        grids["best"] = best.iloc[0].to_dict() if len(best) else None
        grids["baseline"] = baselines.loc[size].to_dict()
        out[int(size)] = grids
    return out


def sweep_progress(store: Store, sweep_id: str) -> dict:
    """How far a sweep is: {"id", "total", "done", "config"}, from the store alone."""
    sweep = load_sweep(store, sweep_id)
    return {"id": sweep_id, "total": len(plan(sweep)), "done": len(finished_runs(store, sweep_id)),
            "config": sweep.to_dict()}


# ---------------------------------------------------------------- time estimate


def _throughput(runs: list[dict], cfg: RunConfig) -> Optional[tuple[float, float]]:
    """Median samples/s and per-run overhead (measuring, saving) of the closest measured runs:
    the same family, size and kind; else family and size; else family; else any."""
    def same(r: dict, *fields: str) -> bool:
        c = r["config"]
        probes = {"family": (c["model"]["family"], cfg.model.family), "size": (c["model"]["size"], cfg.model.size),
                  "kind": (r["kind"], cfg.kind)}
        return all(probes[f][0] == probes[f][1] for f in fields)

    for fields in (("family", "size", "kind"), ("family", "size"), ("family",), ()):
        match = [r for r in runs if same(r, *fields)]
        if match:
            rate = statistics.median(r["metrics"]["train_samples_per_s"] for r in match)
            overhead = statistics.median(max(0.0, r["finished"] - r["created"] - r["metrics"].get("seconds", 0.0))
                                         for r in match)
            return rate, overhead
    return None


def estimate_seconds(store: Store, sweep: SweepConfig, n_train: int,
                     cells: Optional[Sequence[Cell]] = None) -> Optional[float]:
    """Seconds the cells (default: the whole plan; pass `kd_core.sweep.pending(store, sweep_id)`
    for what is left) should take, from the training throughput the store measured on this dataset
    (runs' metrics["train_samples_per_s"]) plus their measured per-run overhead.
    None when the store has no finished run on this dataset to go by. An upper bound
    when early stopping (patience) is on."""
    runs = [r for r in store.list_runs(dataset=sweep.data.dataset, status="finished")
            if r["metrics"].get("train_samples_per_s", 0) > 0 and r["finished"]]
    if not runs:
        return None
    memo: dict[tuple, tuple[float, float]] = {}
    total = 0.0
    for cell in plan(sweep) if cells is None else cells:
        cfg = cell.config
        key = (cfg.kind, cfg.model.size)
        if key not in memo:
            memo[key] = _throughput(runs, cfg)
        rate, overhead = memo[key]
        t = cfg.train
        total += math.ceil(n_train / t.batch_size) * t.batch_size * t.epochs / rate + overhead
    return total
