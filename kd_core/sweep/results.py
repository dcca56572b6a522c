"""A sweep's results and its time estimate, read from the store as plain tables.

Everything here is computed from the runs the store holds under a sweep id, so
it can be called while the sweep runs (the grid fills in) and from any page.
No torch at import: pandas DataFrames, dicts and floats out (the time estimate
asks kd_core.train.models for the planned students' FLOPs when it is called).

Each configuration is reported as mean ± sample std over its seeds with the
count; its gain over the no-KD baseline is the mean of per-seed differences
(student minus the baseline of the same size and seed), judged by a paired
t-test (`stats.paired_test`). A grid runs one such test per cell, so about
α·k of k cells come out "significant" by chance alone; `multiple_tests` counts
the cells that stay significant after the Benjamini–Hochberg correction.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kd_core.config import ModelSpec, RunConfig
from kd_core.stats import SIGNIFICANCE, ZERO_SPREAD, pair_by_seed, paired_test, summarize
from kd_core.store import Store
from kd_core.sweep.grid import Cell, SweepConfig, finished_runs, load_sweep, plan
from kd_core.train.labels import parse_transfer, step_plan
from kd_core.train.models import describe

GRID_VALUES = (
    "mean",
    "std",
    "n",
    "gain_mean",
    "gain_std",
    "gain_n",
    "t",
    "p",
    "significant",
    "p_bh",
    "significant_bh",
    "text",
    "gain_text",
    "verdict",
    "best",
    "best_marked",
)
# Means closer than this are a tie (accuracies pass through float32; see stats.ZERO_SPREAD), and a
# mean gain must be above it to count as beating the baseline.
TIE = ZERO_SPREAD


def _by_config(store: Store, sweep_id: str, metric: str, budget: int | None = None) -> dict[tuple, dict[int, float]]:
    """{(kind, size, T, λ, method): {seed: metric}} over the sweep's finished runs at one label
    budget; with `budget` None, {(kind, size, T, λ, method, budget): …} over every budget."""
    out: dict[tuple, dict[int, float]] = {}
    for (kind, size, seed, t, a, b, m), run in finished_runs(store, sweep_id).items():
        value = run.metrics.get(metric)
        if value is None or (budget is not None and b != budget):
            continue
        key = (kind, size, t, a, m) if budget is not None else (kind, size, t, a, m, b)
        out.setdefault(key, {})[seed] = float(value)
    return out


def _cell_row(
    size: int, method: str, t: float, a: float, cell: dict[int, float], base: dict[int, float], level: float
) -> dict:
    s = summarize(list(cell.values()))
    b = summarize(list(base.values()))
    seeds, x, y = pair_by_seed(cell, base)
    gain = summarize(list(x - y))
    test = paired_test(x, y, level)
    return {
        "size": size,
        "method": method,
        "temperature": t,
        "alpha": a,
        "n": s.n,
        "mean": s.mean,
        "std": s.std,
        "text": s.text(),
        "baseline_n": b.n,
        "baseline_mean": b.mean,
        "baseline_std": b.std,
        "gain_n": gain.n,
        "gain_mean": gain.mean,
        "gain_std": gain.std,
        "gain_text": gain.text(),
        "t": test.t,
        "p": test.p,
        "significant": test.significant,
        "verdict": test.reason,
        "test": test.test,
        "seeds": seeds,
    }


def bh_adjust(pvalues: Sequence[float]) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (`scipy.stats.false_discovery_control`, method "bh")
    over the finite p-values; NaN (a cell without a test) stays NaN and is not in the family."""
    from scipy.stats import false_discovery_control

    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    tested = np.isfinite(p)
    if tested.any():
        out[tested] = false_discovery_control(p[tested], method="bh")
    return out


def _mark_best(df: pd.DataFrame) -> None:
    """best: every cell at the highest mean of its size and method (ties within TIE all count); best_marked:
    those of them whose mean gain over the baseline is above 0 (a tie with the baseline or a loss
    to it is nothing to mark)."""
    df["best"] = False
    for _, part in df[df["n"] > 0].groupby(["size", "method"], sort=False):
        df.loc[part.index[part["mean"] >= part["mean"].max() - TIE], "best"] = True
    df["best_marked"] = df["best"] & (df["gain_mean"] > TIE)


def sweep_results(
    store: Store, sweep_id: str, metric: str = "best_val_acc", level: float = SIGNIFICANCE, budget: int | None = None
) -> pd.DataFrame:
    """One row per planned (size, method, T, λ), run or not (n = 0), in grid order, at one label budget
    (`budget`; default the sweep's first, "all labels" for every sweep without a budget axis).

    Columns: size, method (canonical: grid.method_text), temperature, alpha, n, mean, std, text ("0.9500 ± 0.0100 (n=3)"),
    baseline_n/_mean/_std, gain_n/_mean/_std/_text, t, p, significant (True, False or
    None = no verdict), verdict (the reason in words), test, seeds (paired), p_bh (the
    Benjamini–Hochberg adjusted p over every tested cell of the sweep; NaN without a test),
    significant_bh (p_bh < level; None without a test), best (the highest mean of its size;
    every cell of a tie), best_marked (best and a mean gain above 0: what the page and the CLI mark).
    """
    sweep = load_sweep(store, sweep_id)
    values = _by_config(store, sweep_id, metric, sweep.label_budgets[0] if budget is None else budget)
    rows = []
    for size in sweep.sizes:
        base = values.get(("baseline", size, None, None, None), {})
        for m in sweep.method_texts:
            for t in sweep.temperatures:
                for a in sweep.alphas:
                    rows.append(_cell_row(size, m, t, a, values.get(("student", size, t, a, m), {}), base, level))
    df = pd.DataFrame(rows)
    df["p_bh"] = bh_adjust(df["p"])
    df["significant_bh"] = [None if math.isnan(p) else bool(p < level) for p in df["p_bh"]]
    _mark_best(df)
    df.attrs["metric"], df.attrs["level"] = metric, level
    return df


def multiple_tests(df: pd.DataFrame, level: float = SIGNIFICANCE) -> dict:
    """How far the grid's significant cells go beyond chance, from `sweep_results`' table:
    {"tested": cells with a p-value, "significant": of them p < level (uncorrected),
    "expected": level × tested (expected significant by chance when nothing changes),
    "significant_bh": of them Benjamini–Hochberg adjusted p < level (false discovery rate level),
    "level": the significance level}."""
    p, p_bh = df["p"].to_numpy(dtype=float), df["p_bh"].to_numpy(dtype=float)
    tested = np.isfinite(p)
    return {
        "tested": int(tested.sum()),
        "significant": int((p[tested] < level).sum()),
        "expected": level * int(tested.sum()),
        "significant_bh": int((p_bh[tested] < level).sum()),
        "level": level,
    }


def baseline_results(
    store: Store, sweep_id: str, metric: str = "best_val_acc", budget: int | None = None
) -> pd.DataFrame:
    """One row per student size: the no-KD baseline's n, mean, std and text (at `budget`, as in
    `sweep_results`)."""
    sweep = load_sweep(store, sweep_id)
    values = _by_config(store, sweep_id, metric, sweep.label_budgets[0] if budget is None else budget)
    rows = []
    for size in sweep.sizes:
        s = summarize(list(values.get(("baseline", size, None, None, None), {}).values()))
        rows.append({"size": size, **s.to_dict(), "text": s.text()})
    return pd.DataFrame(rows, columns=["size", "mean", "std", "n", "text"])


def sweep_grids(
    store: Store,
    sweep_id: str,
    metric: str = "best_val_acc",
    level: float = SIGNIFICANCE,
    results: pd.DataFrame | None = None,
    budget: int | None = None,
    method: str | None = None,
) -> dict[int, dict]:
    """For one method (canonical text; default the sweep's first), per student size, heatmap-ready grids (rows: temperature ascending, columns: λ ascending)
    for each of GRID_VALUES, plus "best" (the rows of the marked best cells as dicts: every cell
    tied at the highest mean, none when that mean does not beat the baseline), "top" (the rows at
    the highest mean, marked or not; empty before any run), "beats" (how many cells have a mean gain
    above 0) and "baseline" (mean, std, n, text). `results`: the same call's `sweep_results` table,
    when the caller has it already."""
    df = sweep_results(store, sweep_id, metric, level, budget) if results is None else results
    df = df[df["method"] == (method or load_sweep(store, sweep_id).method_texts[0])]
    baselines = baseline_results(store, sweep_id, metric, budget).set_index("size")
    out: dict[int, dict] = {}
    for size, part in df.groupby("size", sort=False):
        grids = {v: part.pivot(index="temperature", columns="alpha", values=v) for v in GRID_VALUES}
        grids["best"] = [r.to_dict() for _, r in part[part["best_marked"]].iterrows()]
        grids["top"] = [r.to_dict() for _, r in part[part["best"]].iterrows()]
        grids["beats"] = int((part["gain_mean"] > TIE).sum())
        grids["baseline"] = baselines.loc[size].to_dict()
        out[int(size)] = grids
    return out


def gain_curve(store: Store, sweep_id: str, metric: str = "test_acc", level: float = SIGNIFICANCE) -> pd.DataFrame:
    """The gain-versus-labels curve: one row per (size, method, T, λ, label budget), budgets ascending with
    "all labels" (0) last. Columns as `sweep_results`' plus `budget`; each point's gain is paired
    by seed with the baseline of the same size, seed and budget. No correction for the number of
    points: each budget is its own question (does distillation help at this many labels?)."""
    sweep = load_sweep(store, sweep_id)
    values = _by_config(store, sweep_id, metric)
    order = sorted(sweep.label_budgets, key=lambda b: (b == 0, b))
    rows = []
    for size in sweep.sizes:
        for m, t, a in ((m, t, a) for m in sweep.method_texts for t in sweep.temperatures for a in sweep.alphas):
            for b in order:
                base = values.get(("baseline", size, None, None, None, b), {})
                row = _cell_row(size, m, t, a, values.get(("student", size, t, a, m, b), {}), base, level)
                rows.append({"budget": b, **row})
    df = pd.DataFrame(rows)
    df.attrs["metric"], df.attrs["level"] = metric, level
    return df


# ---------------------------------------------------------------- time estimate

# A training step of a tiny model costs about this much whatever its FLOPs (Python, autograd, the
# optimizer): ~2,700 steps/s for an MLP 784-64-10 on one thread (benchmarks/RESULTS_dashboard.md),
# about 0.45 ms a step for the digits mlp 16 (benchmarks/RESULTS_sweep.md). Only the rest of a
# measured step is scaled by FLOPs when no run of the planned model was measured.
STEP_FLOOR_S = 0.35e-3
# Starting and stopping a local Ray instance and putting data and teacher in its object store
# (benchmarks/RESULTS_sweep.md: about 5 s).
RAY_START_S = 5.0
TRAINED_STUDENTS = ("student", "baseline")


@dataclass(frozen=True)
class Speed:
    """One finished run's measured speed: training samples per second (validation included, as the
    engine measures it) at its batch size, and the rest of the run (testing, latency, saving)."""

    kind: str
    model: tuple  # (family, size, depth)
    flops: float  # forward FLOPs per sample (0: unknown)
    batch_size: int
    samples_per_s: float
    overhead_s: float = 0.0

    @property
    def step_s(self) -> float:
        return self.batch_size / self.samples_per_s


@dataclass(frozen=True)
class PlannedRun:
    """A run to estimate: its kind, model, forward FLOPs per sample, batch size and training samples
    (steps per epoch × batch size × epochs)."""

    kind: str
    model: tuple
    flops: float
    batch_size: int
    samples: int


@dataclass(frozen=True)
class Estimate:
    """seconds: the plan's expected wall time; basis: how each planned model was estimated ("measured"
    from its own runs, or "scaled" by FLOPs from another model's), as {model: (basis, reference
    model, reference kind, runs)}; workers: runs at once."""

    seconds: float
    basis: dict
    workers: int = 1

    @property
    def scaled(self) -> bool:
        return any(b[0] == "scaled" for b in self.basis.values())


def _reference(speeds: Sequence[Speed], run: PlannedRun) -> list[Speed]:
    """The measured runs to go by: the same kind and model; else student or baseline runs of the
    same model; else student or baseline runs of the model nearest in FLOPs per step; else any run
    of the model nearest in FLOPs (a teacher, before anything was distilled). Within the nearest
    model, runs of the same kind when there are any."""
    same = [s for s in speeds if s.model == run.model]
    for tier in ([s for s in same if s.kind == run.kind], [s for s in same if s.kind in TRAINED_STUDENTS]):
        if tier:
            return tier
    target = run.flops * run.batch_size
    if target <= 0:
        return []
    for tier in ([s for s in speeds if s.kind in TRAINED_STUDENTS and s.flops > 0], [s for s in speeds if s.flops > 0]):
        if tier:
            near = min(tier, key=lambda s: abs(math.log(s.flops * s.batch_size / target))).model
            group = [s for s in tier if s.model == near]
            return [s for s in group if s.kind == run.kind] or group
    return []


def scaled_step(speed: Speed, run: PlannedRun, floor_s: float = STEP_FLOOR_S) -> tuple[float, float]:
    """(seconds per training step, seconds of per-run overhead) of `run`, from one measured run:
    the measured step less a fixed floor (at most the whole step) scales with the FLOPs per step
    (forward FLOPs × batch size); the overhead (forward passes of the same model) scales like the
    step. The same model at the same batch size gives the measurement back."""
    if speed.model == run.model:  # the same model on the same data: the same FLOPs per sample
        ratio = run.batch_size / speed.batch_size
    else:
        ratio = run.flops * run.batch_size / (speed.flops * speed.batch_size)
    floor = min(floor_s, speed.step_s)
    step = floor + (speed.step_s - floor) * ratio
    return step, speed.overhead_s * step / speed.step_s


def plan_seconds(
    speeds: Sequence[Speed], runs: Sequence[PlannedRun], workers: int = 1, start_s: float = 0.0
) -> Estimate | None:
    """The wall time of `runs` from measured speeds: each run takes its samples at the median
    speed of its reference runs (`_reference`, scaled by `scaled_step`) plus their median overhead.
    With `workers` > 1 running at once (Ray's workers), the runs' sum is divided by the workers, but
    the plan takes at least its longest run; `start_s` is added (starting Ray). None when no
    measured run can serve (nothing measured yet)."""
    memo: dict[tuple, tuple[float, float]] = {}
    basis: dict = {}
    total, longest = 0.0, 0.0
    for run in runs:
        key = (run.kind, run.model, run.flops, run.batch_size)
        if key not in memo:
            ref = _reference(speeds, run)
            if not ref:
                return None
            pairs = [scaled_step(s, run) for s in ref]
            memo[key] = (statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs))
            kind = "measured" if ref[0].model == run.model else "scaled"
            basis.setdefault(run.model, (kind, ref[0].model, ref[0].kind, len(ref)))
        step, overhead = memo[key]
        seconds = run.samples / run.batch_size * step + overhead
        total += seconds
        longest = max(longest, seconds)
    workers = max(1, int(workers))
    return Estimate(max(total / workers, longest) + (start_s if runs else 0.0), basis, workers)


def measured_speeds(store: Store, dataset: str) -> list[Speed]:
    """Every finished run on `dataset` with a measured training speed, as a Speed."""
    out = []
    for r in store.list_runs(dataset=dataset, status="finished"):
        m, c = r.metrics, r.config
        if m.get("train_samples_per_s", 0) > 0 and r.finished:
            out.append(
                Speed(
                    r.kind,
                    (c.model.family, int(c.model.size), int(c.model.depth)),
                    float(m.get("flops") or 0),
                    int(c.train.batch_size),
                    float(m["train_samples_per_s"]),
                    max(0.0, r.finished - r.created - m.get("seconds", 0.0)),
                )
            )
    return out


def planned_runs(cells: Sequence[Cell], n_train: int, flops: Mapping[tuple, float]) -> list[PlannedRun]:
    """The cells as PlannedRuns; `flops` maps (family, size, depth) to forward FLOPs per sample."""
    out = []
    for cell in cells:
        cfg: RunConfig = cell.config
        spec, t = cfg.model, cfg.train
        model = (spec.family, spec.size, spec.depth)
        out.append(
            PlannedRun(
                cfg.kind, model, float(flops.get(model, 0.0)), t.batch_size, planned_steps(cfg, n_train) * t.batch_size
            )
        )
    return out


def planned_steps(cfg: RunConfig, n_train: int) -> int:
    """Training steps of a run: plain epochs, or with a label budget and the rest of the split as
    transfer set, the mixed steps its student and baseline share (kd_core.train.labels.step_plan).
    A transfer folder is not counted: its size is unknown until it is read."""
    budget = cfg.labels.labels
    rest = n_train - budget if 0 < budget < n_train and parse_transfer(cfg.labels.transfer).rest else 0
    plan = step_plan(budget or n_train, rest, cfg.train.batch_size, cfg.labels.transfer_ratio)
    return plan.steps_per_epoch * cfg.train.epochs


def estimate(
    store: Store,
    sweep: SweepConfig,
    info: dict,
    cells: Sequence[Cell] | None = None,
    workers: int = 1,
    start_s: float = 0.0,
) -> Estimate | None:
    """The Estimate of the cells (default: the whole plan; pass `kd_core.sweep.grid.pending(store,
    sweep_id)` for what is left) from the runs the store measured on the sweep's dataset; `info`
    is the dataset's `Dataset.info()` (train size, input shape, classes). None when the store has
    no finished run on this dataset. An upper bound when early stopping (patience) is on."""
    speeds = measured_speeds(store, sweep.data.dataset)
    if not speeds:
        return None
    cells = plan(sweep) if cells is None else cells
    models = {(c.config.model.family, c.config.model.size, c.config.model.depth) for c in cells}
    flops = {m: describe(ModelSpec(*m), tuple(info["input_shape"]), int(info["num_classes"]))["flops"] for m in models}
    return plan_seconds(speeds, planned_runs(cells, int(info["train"]), flops), workers, start_s)
