"""Runs related to a stored run: the other seeds of its experiment, and the no-KD baseline
trained beside a student. Found by config (kd_core.config.experiment_key), so they hold for
runs made by hand, by Quick start, by a sweep or by the CLI alike."""

from __future__ import annotations

import numpy as np

from kd_core.config import experiment_key
from kd_core.records import StoredRun
from kd_core.stats import Difference, accuracy_difference
from kd_core.store.db import Store


def _measured(run: StoredRun | None) -> bool:
    return run is not None and run.status == "finished" and run.metrics.get("test_acc") is not None


def baseline_of(store: Store, student: StoredRun) -> StoredRun | None:
    """The no-KD baseline of a student: the newest finished baseline with the same teacher,
    data, model and budget (seed included). None if there is none."""
    want = experiment_key(student.config.to_dict(), drop=("kind", "distill"))
    for r in store.list_runs(kind="baseline", dataset=student.dataset, status="finished"):
        same = r.teacher_id == student.teacher_id and _measured(r)
        if same and experiment_key(r.config.to_dict(), drop=("kind", "distill")) == want:
            return r
    return None


def seed_accuracies(store: Store, run: StoredRun) -> dict[int, float]:
    """Test accuracy by seed of every finished run of `run`'s experiment (the same config but
    for the seed), `run` itself included when it is finished."""
    want = experiment_key(run.config.to_dict(), drop=("seed",))
    out: dict[int, float] = {}
    for r in store.list_runs(kind=run.kind, dataset=run.dataset, status="finished"):
        if (
            r.teacher_id == run.teacher_id
            and _measured(r)
            and experiment_key(r.config.to_dict(), drop=("seed",)) == want
        ):
            out.setdefault(r.config.train.seed, r.metrics["test_acc"])
    return out


def test_size(run: StoredRun) -> int:
    """Test images the run was evaluated on (its confusion matrix's total), 0 if unknown."""
    cm = run.metrics.get("confusion_matrix")
    return int(np.asarray(cm).sum()) if cm is not None else 0


def gain_over_baseline(store: Store, student: StoredRun) -> tuple[StoredRun, Difference] | None:
    """(baseline, student − baseline with its noise), over every seed both experiments have
    in the store (paired by seed) when there are two or more, else the pair itself judged by
    the test set's sampling noise. None without a baseline."""
    base = baseline_of(store, student)
    if base is None or student.metrics.get("test_acc") is None:
        return None
    mine, theirs = seed_accuracies(store, student), seed_accuracies(store, base)
    if len(mine.keys() & theirs.keys()) < 2:  # one pair: the two runs shown, not an average
        mine = {student.config.train.seed: student.metrics["test_acc"]}
        theirs = {base.config.train.seed: base.metrics["test_acc"]}
    return base, accuracy_difference(mine, theirs, test_size(student))
