"""Where a compress study lives: Optuna's embedded SQLite database beside the run store.

`kd_runs/compress.db` holds Optuna's studies (trials, parameters, intermediate values, user
attributes); `kd_runs/runs.db` holds the study's row (its CompressConfig) and every trained
trial as a normal run whose config carries the study id. The study id is Optuna's study name.

A study reopened later gets a sampler seeded by the study's seed plus the trials it already
has, so that a resumed random search does not replay the candidates it began with.
"""

from __future__ import annotations

import os
import secrets
import time
from functools import lru_cache
from typing import Literal

import numpy as np
import optuna
from optuna.trial import TrialState

from kd_core.compress.config import CompressConfig, validate_compress
from kd_core.errors import KDError
from kd_core.store import Store
from kd_core.store.db import _pid_alive as pid_alive

STORAGE_FILE = "compress.db"
# Optuna logs every trial at INFO; kd_core reports through progress records and its own results.
optuna.logging.set_verbosity(optuna.logging.WARNING)


class StudyBusy(KDError):
    """Another process is running this study now."""


def storage_path(store: Store):
    return store.root / STORAGE_FILE


@lru_cache(maxsize=8)
def _storage(url: str) -> optuna.storages.RDBStorage:
    """One RDBStorage (an SQLAlchemy engine) per database: opening one checks its schema, which
    a page polling once a second should not pay each time."""
    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 30}})


def storage(store: Store) -> optuna.storages.RDBStorage:
    return _storage(f"sqlite:///{storage_path(store)}")


def directions(mode: str) -> list[Literal["maximize", "minimize"]]:
    """constrained: validation accuracy; pareto: accuracy, latency (ms) and size (MB)."""
    return ["maximize"] if mode == "constrained" else ["maximize", "minimize", "minimize"]


def make_sampler(cfg: CompressConfig, offset: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded from (the study's seed, trials it already has): a resumed study
    draws afresh, and studies of neighbouring seeds do not share streams (seed + offset would)."""
    seed = int(np.random.SeedSequence([cfg.seed, offset]).generate_state(1)[0])
    if cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(cfg: CompressConfig) -> optuna.pruners.BasePruner:
    """Optuna's pruners compare one objective across trials: a Pareto search prunes only by budget."""
    if cfg.mode != "constrained" or cfg.pruner == "none":
        return optuna.pruners.NopPruner()
    if cfg.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, cfg.train.epochs))
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)


def create_study(store: Store, cfg: CompressConfig) -> str:
    """Validate, then create the Optuna study and the study row; returns the study id."""
    validate_compress(cfg)
    study_id = f"cs{time.strftime('%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    optuna.create_study(storage=storage(store), study_name=study_id, directions=directions(cfg.mode))
    store.save_study(study_id, cfg.to_dict())
    return study_id


def load_config(store: Store, study_id: str) -> CompressConfig:
    row = store.get_study(study_id)
    if row is None:
        raise KDError(
            f"no compress study '{study_id}' in the store at {store.root}; `kd-studio compress --list` lists them."
        )
    return CompressConfig.from_dict(row["config"])


def open_study(store: Store, study_id: str, cfg: CompressConfig | None = None) -> optuna.Study:
    """The Optuna study, with a sampler and pruner for running it (reading needs neither)."""
    cfg = cfg or load_config(store, study_id)
    try:
        summary = optuna.load_study(study_name=study_id, storage=storage(store))
    except KeyError as err:
        raise KDError(f"study '{study_id}' has a row in runs.db but no trials database in {STORAGE_FILE}.") from err
    offset = len(summary.get_trials(deepcopy=False))
    return optuna.load_study(
        study_name=study_id, storage=storage(store), sampler=make_sampler(cfg, offset), pruner=make_pruner(cfg)
    )


def read_study(store: Store, study_id: str) -> optuna.Study:
    """The study for reading its trials (no sampler state)."""
    try:
        return optuna.load_study(study_name=study_id, storage=storage(store))
    except KeyError as err:
        raise KDError(f"no trials database for study '{study_id}' in {storage_path(store)}.") from err


def recover(study: optuna.Study) -> int:
    """Trials left running by a process that ended (killed, crashed) are marked failed and their
    candidates queued again, so that a resume runs them; returns how many. A trial running in
    another live process means the study is busy: StudyBusy."""
    stale = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if pid and pid != os.getpid() and pid_alive(pid):
            raise StudyBusy(f"study '{study.study_name}' is running in process {pid}; stop it first.")
        retry(study, t.number, t.params)
        stale += 1
    return stale


def retry(study: optuna.Study, number: int, params: dict) -> None:
    """Mark an unfinished trial failed and queue its candidate to run again (`retry_of` links the
    two: the failed one then counts neither as done nor against the budget)."""
    study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
    study.enqueue_trial(dict(params), user_attrs={"retry_of": number})


def counted(study: optuna.Study) -> int:
    """Trials that count against the budget: finished ones (complete, pruned, or failed for a
    reason of their own); an interrupted trial is queued again instead."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return sum(1 for t in trials if t.state in finished and t.number not in retried)
