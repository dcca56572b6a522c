"""What the Sweep page asks of kd_core besides the results tables: the grid typed as
lists, how many runs it makes, which stored sweeps are unfinished, whether Ray is there.

No torch: importing this module imports neither torch nor ray.
"""
from __future__ import annotations

import importlib.util
import math
from typing import Callable, Optional

from .config import DataConfig, TrainConfig
from .errors import ConfigError
from .store import Store
from .sweep import SweepConfig, finished_runs, load_sweep, plan


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
            raise ConfigError(f"{name}: '{p}' is not {kind}; separate values with commas, e.g. 1, 2, 4.") \
                from None
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name}: '{p}' is not a finite number.")
        out.append(value)
    if len(set(out)) != len(out):
        raise ConfigError(f"{name}: a value is repeated ({', '.join(f'{v:g}' for v in out)}).")
    return tuple(out)


def make_sweep(temperatures: str, alphas: str, sizes: str, seeds: int, first_seed: int, teacher_id: str,
               family: str, depth: int, data: DataConfig, train: TrainConfig) -> SweepConfig:
    """A SweepConfig from the page's fields (the lists as typed); ConfigError on a bad value."""
    cfg = SweepConfig(temperatures=parse_values(temperatures, float, "Temperatures T"),
                      alphas=parse_values(alphas, float, "λ values"),
                      sizes=parse_values(sizes, int, "Student sizes"),
                      seeds=SweepConfig.seed_range(int(seeds), int(first_seed)), teacher_id=teacher_id or "",
                      family=family, depth=int(depth), data=data, train=train)
    for a in cfg.alphas:
        if not 0.0 <= a <= 1.0:
            raise ConfigError(f"λ values: {a:g} is outside [0, 1].")
    for t in cfg.temperatures:
        if t <= 0:
            raise ConfigError(f"Temperatures T: {t:g} must be above 0.")
    for s in cfg.sizes:
        if s < 1:
            raise ConfigError(f"Student sizes: {s} must be at least 1.")
    return cfg


def run_counts(sweep: SweepConfig) -> dict:
    """{"cells": distillations, "baselines": no-KD runs, "total", "configs": T × λ × sizes}."""
    configs = len(sweep.temperatures) * len(sweep.alphas) * len(sweep.sizes)
    cells = configs * len(sweep.seeds)
    baselines = len(sweep.sizes) * len(sweep.seeds)
    return {"cells": cells, "baselines": baselines, "total": cells + baselines, "configs": configs}


def sweep_list(store: Store) -> list[dict]:
    """Every stored sweep, newest first: {"id", "created", "config", "total", "done", "left", "label"}
    (the label names the grid; it does not change as runs finish)."""
    out = []
    for row in store.list_sweeps():
        sweep = load_sweep(store, row["id"])
        total, done = len(plan(sweep)), len(finished_runs(store, row["id"]))
        label = (f"{row['id']} · T {'/'.join(f'{t:g}' for t in sweep.temperatures)} × "
                 f"λ {'/'.join(f'{a:g}' for a in sweep.alphas)} × {sweep.family} "
                 f"{'/'.join(map(str, sweep.sizes))} × {len(sweep.seeds)} seed{'s' * (len(sweep.seeds) > 1)}")
        out.append({"id": row["id"], "created": row["created"], "config": row["config"], "total": total,
                    "done": done, "left": total - done, "label": label})
    return out


def ray_available() -> bool:
    """Whether the optional `ray` package can be imported (checked without importing it)."""
    return importlib.util.find_spec("ray") is not None


def duration_text(seconds: Optional[float]) -> str:
    """"about 40 s", "about 3 min", "about 1.5 h"; "no measurement yet" for None."""
    if seconds is None:
        return "no measurement yet"
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"
