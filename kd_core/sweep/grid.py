"""Sweeps over method × temperature × λ × student size (× label budget), each repeated over seeds.

A method is a mix as `--method` reads it ("kd", "0.5*kd+1*at"), a grid of its own compared
with the same baselines; a leaderboard (kind "leaderboard") is a sweep over methods only.

A sweep is a frozen `SweepConfig` saved in the store under a sweep id. It is
planned as cells: one no-KD baseline per (student size, seed), which every
T/λ cell of that size and seed is compared with, and one distillation per
(size, T, λ, seed). Every run is stored with the sweep id, so the store alone
says which cells are done: resuming runs only the others.

Cells run through an executor (`executors.py`: in-process or Ray); `runner.py`
runs a sweep's pending cells as a job. The results are read back from the store
as pandas tables (`results.py`).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from kd_core.config import (
    DataConfig,
    DistillConfig,
    LabelConfig,
    MethodSpec,
    ModelSpec,
    RunConfig,
    TrainConfig,
    format_methods,
)
from kd_core.errors import ConfigError, KDError
from kd_core.events import Progress
from kd_core.methods import parse_methods
from kd_core.records import StoredRun
from kd_core.store import Store
from kd_core.train.data import Dataset
from kd_core.train.engine import check_run, validate_config
from kd_core.train.labels import check_labels, validate_labels
from kd_core.train.models import validate_spec
from kd_core.train.recorder import RunOutcome, load_teacher

SWEEP_METRICS = ("best_val_acc", "final_val_acc", "test_acc")
SWEEP_KINDS = ("sweep", "leaderboard")


@dataclass(frozen=True)
class SweepConfig:
    """The grid: every T × λ × size, each over every seed, distilled from one teacher."""

    temperatures: tuple[float, ...]
    alphas: tuple[float, ...]  # λ, the soft-target weight
    sizes: tuple[int, ...]  # student width (MLP) or channels (CNN)
    seeds: tuple[int, ...] = (0,)
    teacher_id: str = ""  # teacher run id or checkpoint path
    family: str = "mlp"
    depth: int = 1
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)  # its seed is replaced by each seed
    cache_teacher_logits: bool = True
    # The gain-versus-labels axis: total label budgets (0 = all labels). Each seed draws its own
    # labelled subset (label_seed = seed), shared by that seed's students and baseline.
    label_budgets: tuple[int, ...] = (0,)
    labels: LabelConfig = field(default_factory=LabelConfig)  # transfer source and ratio of every cell
    methods: tuple[str, ...] = ("kd",)  # method mixes as text: "kd", "dkd", "0.5*kd+1*at"
    kind: str = "sweep"  # or "leaderboard": methods compared at one T, λ and size (views/leaderboard.py)

    @property
    def method_texts(self) -> tuple[str, ...]:
        """The methods in canonical form (`method_text`), as the cells and results name them."""
        return tuple(method_text(parse_methods(m)) for m in self.methods)

    @staticmethod
    def seed_range(n: int, first: int = 0) -> tuple[int, ...]:
        return tuple(range(first, first + n))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> SweepConfig:
        return SweepConfig(
            temperatures=tuple(float(t) for t in d["temperatures"]),
            alphas=tuple(float(a) for a in d["alphas"]),
            sizes=tuple(int(s) for s in d["sizes"]),
            seeds=tuple(int(s) for s in d["seeds"]),
            teacher_id=d.get("teacher_id", ""),
            family=d.get("family", "mlp"),
            depth=int(d.get("depth", 1)),
            data=DataConfig(**d.get("data", {})),
            train=TrainConfig(**d.get("train", {})),
            cache_teacher_logits=bool(d.get("cache_teacher_logits", True)),
            label_budgets=tuple(int(b) for b in d.get("label_budgets", (0,))),
            labels=LabelConfig(**d.get("labels") or {}),
            methods=tuple(str(m) for m in d.get("methods", ("kd",))),  # sweeps stored before methods were KD
            kind=str(d.get("kind", "sweep")),
        )


def method_text(specs: tuple[MethodSpec, ...]) -> str:
    """A mix's canonical name: "KD" and "1*kd" are both "kd"; parameter overrides follow in brackets."""
    params = [f"{s.name}.{k}={v}" for s in specs for k, v in s.params]
    return format_methods(specs) + (f" [{', '.join(params)}]" if params else "")


def validate_sweep(sweep: SweepConfig) -> None:
    """Reject a grid before anything runs, so a bad value never costs a half sweep."""
    if sweep.kind not in SWEEP_KINDS:
        raise ConfigError(f"unknown sweep kind '{sweep.kind}'; use {' or '.join(SWEEP_KINDS)}.")
    for name in ("methods", "temperatures", "alphas", "sizes", "seeds", "label_budgets"):
        values = getattr(sweep, name)
        if not values:
            raise ConfigError(f"the sweep needs at least one value in {name}.")
        if len(set(values)) != len(values):
            raise ConfigError(f"{name} has repeated values: {', '.join(map(str, values))}.")
    if not sweep.teacher_id:
        raise ConfigError("the sweep needs a teacher (a run id or a checkpoint path).")
    if any(b < 0 for b in sweep.label_budgets):
        raise ConfigError("label budgets must be 0 (all labels) or positive.")
    validate_labels(sweep.labels)
    mixes = [parse_methods(m) for m in sweep.methods]  # ConfigError names the bad method
    texts = [method_text(m) for m in mixes]
    if len(set(texts)) != len(texts):
        raise ConfigError(f"methods has the same mix twice: {', '.join(texts)}.")
    for size in sweep.sizes:
        validate_spec(ModelSpec(sweep.family, size, sweep.depth))
    for t in sweep.temperatures:
        for a in sweep.alphas:
            validate_config(RunConfig(kind="student", data=sweep.data, train=sweep.train, distill=DistillConfig(t, a)))


# ---------------------------------------------------------------- cells


@dataclass(frozen=True)
class Cell:
    """One run of a sweep; its key is what the store's copy is recognised by."""

    config: RunConfig

    @property
    def key(self) -> tuple:
        return cell_key(self.config)

    @property
    def label(self) -> str:
        kind, size, seed, t, a, budget, method = self.key
        what = "baseline" if kind == "baseline" else f"{method} T={t:g} λ={a:g}"
        labels = f" · {budget:,} labels" if budget else ""
        return f"{self.config.model.family} {size} · {what}{labels} · seed {seed}"


def cell_key(cfg: RunConfig) -> tuple:
    """(kind, size, seed, T, λ, label budget, method); T, λ and the method are None for a baseline,
    the budget 0 for all labels (every run stored before budgets existed). Runs stored before
    methods existed load as KD (DistillConfig.from_dict), so old sweeps resume."""
    d = cfg.distill if cfg.kind == "student" else None
    t, a, m = (d.temperature, d.alpha, method_text(d.methods)) if d else (None, None, None)
    return (cfg.kind, cfg.model.size, cfg.train.seed, t, a, cfg.labels.labels, m)


def plan(sweep: SweepConfig, sweep_id: str | None = None) -> list[Cell]:
    """Every cell, seed by seed: the whole grid fills in at n=1 before any cell has n=2,
    and each (size, seed) baseline comes before the cells compared with it."""
    mixes = [parse_methods(m) for m in sweep.methods]
    cells = []
    for seed in sweep.seeds:
        for budget, size in ((b, s) for b in sweep.label_budgets for s in sweep.sizes):
            base = RunConfig(
                kind="baseline",
                data=sweep.data,
                model=ModelSpec(sweep.family, size, sweep.depth),
                train=replace(sweep.train, seed=seed),
                # a budget's subset is drawn per seed; with every label there is nothing to draw
                labels=replace(sweep.labels, labels=budget, per_class=0, label_seed=seed if budget else 0),
                sweep_id=sweep_id,
            )
            cells.append(Cell(base))
            for mix in mixes:
                for t in sweep.temperatures:
                    for a in sweep.alphas:
                        distill = DistillConfig(t, a, sweep.cache_teacher_logits, mix)
                        cells.append(Cell(replace(base, kind="student", teacher_id=sweep.teacher_id, distill=distill)))
    return cells


def finished_runs(store: Store, sweep_id: str) -> dict[tuple, StoredRun]:
    """The sweep's finished runs by cell key (the newest, should a cell have two)."""
    runs: dict[tuple, StoredRun] = {}
    for r in store.list_runs(sweep_id=sweep_id, status="finished"):  # newest first
        runs.setdefault(cell_key(r.config), r)
    return runs


def pending(store: Store, sweep_id: str, sweep: SweepConfig | None = None) -> list[Cell]:
    """The cells without a finished run; stopped and failed ones are run again."""
    sweep = sweep or load_sweep(store, sweep_id)
    done = finished_runs(store, sweep_id)
    return [c for c in plan(sweep, sweep_id) if c.key not in done]


def check_sweep_data(sweep: SweepConfig, data: Dataset) -> None:
    """Refuse a label budget `data` cannot give (more labels than images, or fewer than its
    classes) or a transfer folder with a bad image, before the sweep is stored: otherwise every
    run of that budget would be stored as failed, one after the other."""
    for budget in sweep.label_budgets:  # which images a seed draws does not change whether it can
        check_labels(data, replace(sweep.labels, labels=budget, per_class=0, label_seed=sweep.seeds[0]))


def check_sweep_models(sweep: SweepConfig, data: Dataset, teacher: Any) -> None:
    """ConfigError where the teacher or a student cannot serve a method of the sweep (AT on an MLP
    has no spatial maps...): one planned run per method and student size is checked."""
    seen: set[tuple] = set()
    for cell in plan(sweep):
        what = (cell.key[1], cell.key[6])
        if cell.config.kind == "student" and what not in seen:
            seen.add(what)
            check_run(cell.config, data, teacher)


def create_sweep(store: Store, sweep: SweepConfig, data: Dataset | None = None) -> str:
    """Validate and save the grid (with `data`, also whether it can give every label budget and,
    when the methods are not plain KD, whether the teacher and students can serve them); the id
    is what runs are stored under and resumed by."""
    validate_sweep(sweep)
    if data is not None:
        check_sweep_data(sweep, data)
        if sweep.method_texts != ("kd",):  # KD serves any pair of models: no teacher to load
            check_sweep_models(sweep, data, load_teacher(store, sweep.teacher_id, data))
    sweep_id = f"sw{time.strftime('%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    store.save_sweep(sweep_id, sweep.to_dict())
    return sweep_id


def load_sweep(store: Store, sweep_id: str) -> SweepConfig:
    row = store.get_sweep(sweep_id)
    if row is None:
        raise KDError(
            f"no sweep '{sweep_id}' in the store at {store.root}; "
            "`python -m kd_core runs` lists the runs, and their sweep ids."
        )
    return SweepConfig.from_dict(row["config"])


# ---------------------------------------------------------------- running


@dataclass
class CellContext:
    """What every cell needs besides its config: shared, never copied per cell in-process."""

    store: Store
    data: Dataset
    teacher: Any  # nn.Module on the CPU
    teacher_test_logits: Any  # (N_test, K) tensor: agreement metrics of students and baselines


class Listener(Protocol):
    def emit(self, cell: Cell, rec: Progress) -> None: ...
    def done(self, cell: Cell, outcome: RunOutcome) -> None: ...


class Executor(Protocol):
    """Runs cells and reports each outcome to the listener once it is in the store."""

    name: str

    def run(self, cells: Sequence[Cell], ctx: CellContext, listener: Listener, stop: threading.Event) -> None: ...
