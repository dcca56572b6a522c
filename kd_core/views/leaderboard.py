"""A leaderboard: distillation methods side by side for one teacher and one student, over seeds.

It is a sweep (kind "leaderboard") over method mixes at one T, λ and student size, each method
and the no-KD baseline trained at the same seeds, so every comparison is paired by seed. Per
method the table gives the mean ± sample std of the metric (test accuracy by default) and its
gain over the baseline and over plain KD, each judged by a paired t-test over seeds
(`stats.paired_test`: scipy.stats.ttest_rel). A leaderboard of k methods runs about 2k tests,
so about 0.05·2k come out "significant" by chance alone: the p-values are adjusted together by
Benjamini–Hochberg (`sweep.results.bh_adjust`: scipy.stats.false_discovery_control), and a
method is marked best only where it beats both the baseline and KD after that adjustment.
Otherwise the table says the differences are within noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import pandas as pd

from kd_core.config import DataConfig, TrainConfig
from kd_core.errors import ConfigError
from kd_core.jobs import Job, JobManager
from kd_core.methods import catalogue
from kd_core.stats import SIGNIFICANCE, TEST_NAME, PairedTest, pair_by_seed, paired_test, summarize
from kd_core.store import Store
from kd_core.sweep.grid import SweepConfig, create_sweep, finished_runs, load_sweep, pending, validate_sweep
from kd_core.sweep.results import bh_adjust
from kd_core.sweep.runner import start_sweep
from kd_core.train.data import Dataset

KIND = "leaderboard"
BASELINE = "no KD (baseline)"
METRIC = "test_acc"


def make_leaderboard(
    teacher_id: str,
    methods: tuple[str, ...] | list[str],
    seeds: int,
    family: str,
    size: int,
    depth: int = 1,
    data: DataConfig | None = None,
    train: TrainConfig | None = None,
    temperature: float = 4.0,
    alpha: float = 0.5,
    first_seed: int = 0,
    cache: bool = True,
) -> SweepConfig:
    """The leaderboard as a SweepConfig, plain KD always among its methods (every method is
    compared with it); ConfigError on a bad method, seed count or grid value."""
    if seeds < 2:
        raise ConfigError(f"a leaderboard needs at least 2 seeds for its paired tests, got {seeds}.")
    mixes = tuple(m.strip() for m in methods if m.strip())
    cfg = SweepConfig(
        temperatures=(float(temperature),),
        alphas=(float(alpha),),
        sizes=(int(size),),
        seeds=SweepConfig.seed_range(int(seeds), int(first_seed)),
        teacher_id=teacher_id or "",
        family=family,
        depth=int(depth),
        data=data or DataConfig(),
        train=train or TrainConfig(),
        cache_teacher_logits=cache,
        methods=mixes,
        kind=KIND,
    )
    validate_sweep(cfg)  # names a bad mix before "kd" is added
    if "kd" not in cfg.method_texts:
        cfg = replace(cfg, methods=("kd", *mixes))
    return cfg


def method_names() -> list[str]:
    """Every single method the registry offers, as the page's picker lists them."""
    return [m["name"] for m in catalogue()]


def start_leaderboard(
    manager: JobManager, store: Store, data: Dataset, cfg: SweepConfig, backend: str = "inprocess", address=None
) -> tuple[str, Job]:
    """Store the leaderboard (create_sweep refuses a method the teacher or student cannot serve)
    and start it as the worker's one job (a sweep job: curves per run, progress in its `sweep` note)."""
    sweep_id = create_sweep(store, cfg, data)
    return sweep_id, start_sweep(manager, store, data, sweep_id, backend, address, what="leaderboard")


def resume_leaderboard(
    manager: JobManager, store: Store, data: Dataset, sweep_id: str, backend: str = "inprocess"
) -> Job:
    """Run a stored leaderboard's unfinished runs (the finished ones are kept) as the worker's job."""
    return start_sweep(manager, store, data, sweep_id, backend, what="leaderboard")


def leaderboard_data(store: Store, sweep_id: str) -> DataConfig:
    """The data a stored leaderboard was planned on (the page loads it through its cache)."""
    return load_sweep(store, sweep_id).data


def leaderboards(store: Store) -> list[dict]:
    """The stored leaderboards, newest first: {"id", "created", "label", "config", "left" (runs not
    finished: a stopped leaderboard can be resumed)}."""
    out = []
    for row in store.list_sweeps():
        if row["config"].get("kind") != KIND:
            continue
        cfg = load_sweep(store, row["id"])
        label = f"{row['id']} · {cfg.family} {cfg.sizes[0]} · {', '.join(cfg.method_texts)} × {len(cfg.seeds)} seeds"
        left = len(pending(store, row["id"], cfg))
        out.append({"id": row["id"], "created": row["created"], "label": label, "config": row["config"], "left": left})
    return out


# ---------------------------------------------------------------- the table


@dataclass
class Leaderboard:
    """table: one row per entry (the baseline first, then each method in the order given);
    tested / significant_bh: how many tests had a p-value and how many stay significant after
    Benjamini–Hochberg; best: the marked method (None: within noise); verdict: the result in words."""

    sweep_id: str
    metric: str
    table: pd.DataFrame
    tested: int = 0
    significant: int = 0
    significant_bh: int = 0
    best: str | None = None
    verdict: str = ""
    seeds: tuple[int, ...] = field(default_factory=tuple)


def _values(store: Store, sweep_id: str, metric: str) -> dict[str, dict[int, float]]:
    """{method (BASELINE for the no-KD runs): {seed: metric}} over the finished runs."""
    out: dict[str, dict[int, float]] = {}
    for (kind, _, seed, _, _, _, method), run in finished_runs(store, sweep_id).items():
        value = run.metrics.get(metric)
        if value is not None:
            out.setdefault(BASELINE if kind == "baseline" else method, {})[seed] = float(value)
    return out


def _test_columns(prefix: str, test: PairedTest | None) -> dict:
    if test is None:
        return {f"{prefix}_gain": math.nan, f"{prefix}_gain_std": math.nan, f"{prefix}_p": math.nan}
    return {f"{prefix}_gain": test.mean_diff, f"{prefix}_gain_std": test.std_diff, f"{prefix}_p": test.p}


def _row(name: str, values: dict[str, dict[int, float]], level: float) -> dict:
    mine = values.get(name, {})
    s = summarize(list(mine.values()))
    row = {"method": name, "n": s.n, "mean": s.mean, "std": s.std, "text": s.text()}
    for prefix, other in (("base", BASELINE), ("kd", "kd")):
        test = None
        if name not in (BASELINE, other):
            _, x, y = pair_by_seed(mine, values.get(other, {}))
            test = paired_test(x, y, level)
        row.update(_test_columns(prefix, test))
    return row


def leaderboard(store: Store, sweep_id: str, metric: str = METRIC, level: float = SIGNIFICANCE) -> Leaderboard:
    """The leaderboard's table from the runs stored so far (callable while it runs).

    Columns: method, n, mean, std, text; base_gain / base_gain_std / base_p (paired over seeds
    against the no-KD baseline), kd_gain / kd_gain_std / kd_p (against plain KD; NaN for KD
    itself), base_p_bh / kd_p_bh (Benjamini–Hochberg over every test of the table together),
    beats_base / beats_kd (a positive gain with adjusted p < level), best (the marked one)."""
    cfg = load_sweep(store, sweep_id)
    values = _values(store, sweep_id, metric)
    df = pd.DataFrame([_row(name, values, level) for name in (BASELINE, *cfg.method_texts)])
    adjusted = bh_adjust([*df["base_p"], *df["kd_p"]])  # one family: every comparison of the table
    df["base_p_bh"], df["kd_p_bh"] = adjusted[: len(df)], adjusted[len(df) :]
    for side in ("base", "kd"):
        df[f"beats_{side}"] = (df[f"{side}_p_bh"] < level) & (df[f"{side}_gain"] > 0)
    p = pd.concat([df["base_p"], df["kd_p"]]).to_numpy(dtype=float)
    tested = p[~pd.isna(p)]
    board = Leaderboard(
        sweep_id,
        metric,
        df,
        tested=len(tested),
        significant=int((tested < level).sum()),
        significant_bh=int((adjusted[~pd.isna(adjusted)] < level).sum()),
        seeds=cfg.seeds,
    )
    winners = df[df["beats_base"] & df["beats_kd"]]
    board.best = str(winners.loc[winners["mean"].idxmax(), "method"]) if len(winners) else None
    df["best"] = df["method"] == board.best
    board.verdict = _verdict(board, level)
    return board


def _verdict(board: Leaderboard, level: float) -> str:
    df = board.table
    n = int(df["n"].max()) if len(df) else 0
    tests = (
        f"Each gain by {TEST_NAME}; {board.tested} tests adjusted together by Benjamini–Hochberg at {level:g} "
        f"({board.significant} significant before, {board.significant_bh} after)"
    )
    if board.tested == 0:
        return f"No test yet: each method needs at least 2 finished seeds beside its baseline ({n} so far)."
    if board.best is not None:
        row = df[df["best"]].iloc[0]
        return (
            f"Best: {board.best}, {row['text']}; it beats the no-KD baseline by {row['base_gain']:+.4f} "
            f"(adjusted p={row['base_p_bh']:.2g}) and plain KD by {row['kd_gain']:+.4f} (adjusted "
            f"p={row['kd_p_bh']:.2g}). {tests}."
        )
    kd = df[df["method"] == "kd"].iloc[0]
    worse = df[(df["base_p_bh"] < level) & (df["base_gain"] < 0)]["method"].tolist()
    losses = (
        f" {len(worse)} of {len(df) - 1} methods ({', '.join(worse)}) {'is' if len(worse) == 1 else 'are'} "
        "significantly worse than the "
        "baseline after the adjustment: distillation hurt here."
        if worse
        else ""
    )
    if bool(kd["beats_base"]):
        return (
            f"Within noise: no method beats plain KD beyond seed noise; KD itself beats the no-KD "
            f"baseline by {kd['base_gain']:+.4f} (adjusted p={kd['base_p_bh']:.2g}).{losses} {tests}."
        )
    return f"Within noise: no method beats both the no-KD baseline and plain KD beyond seed noise.{losses} {tests}."
