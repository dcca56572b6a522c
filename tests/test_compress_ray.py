"""A compress study on Ray: trials run as Ray tasks, the driver writes both databases, and the
numbers are the in-process backend's for the same candidates.

Slow: starting a local Ray instance takes seconds. Skipped only where Ray is not installed.
"""

import os

import pytest

from kd_core.compress.config import Goal
from kd_core.compress.search import run_study
from kd_core.compress.study import create_study, read_study
from kd_core.jobs import Job
from kd_core.store import Store
from stores import tiny_config

pytestmark = pytest.mark.slow

CANDIDATES = [
    dict(family="mlp", mlp_width=24, mlp_depth=1, temperature=2.0, alpha=0.5, precision="float32"),
    dict(family="mlp", mlp_width=40, mlp_depth=1, temperature=4.0, alpha=0.8, precision="int8"),
]


def study_with(store: Store, teacher: str) -> str:
    study_id = create_study(store, tiny_config(teacher, goal=Goal(max_drop=50.0), trials=2))
    study = read_study(store, study_id)
    for c in CANDIDATES:
        study.enqueue_trial(c)
    return study_id


def test_ray_trials_match_in_process_and_the_driver_writes_every_run(tmp_path, digits, cteacher):
    ray = pytest.importorskip("ray")
    local, remote = Store(tmp_path / "local"), Store(tmp_path / "ray")
    a = run_study(local, study_with(local, cteacher), digits)
    job = Job("compress on ray", "compress")
    b = run_study(remote, study_with(remote, cteacher), digits, job=job, backend="ray", ray_cpus=2)
    assert not ray.is_initialized()  # the local instance the study started is shut down
    assert job.snapshot().notes["compress"]["backend"] == "ray"
    rows_a, rows_b = sorted(a.rows, key=lambda r: r["width"]), sorted(b.rows, key=lambda r: r["width"])
    assert [r["state"] for r in rows_b] == ["complete", "complete"]
    for ra, rb in zip(rows_a, rows_b):
        assert (ra["width"], ra["precision"]) == (rb["width"], rb["precision"])
        assert ra["val_acc"] == rb["val_acc"] and ra["test_acc"] == rb["test_acc"]
        run_a, run_b = local.get_run(ra["run_id"]), remote.get_run(rb["run_id"])
        assert run_b.pid == os.getpid()  # recorded by the driver, not by a Ray worker
        assert run_b.config.study_id == b.study_id
        assert run_a.metrics["best_val_acc"] == run_b.metrics["best_val_acc"]
        ea, eb = local.epochs(ra["run_id"]), remote.epochs(rb["run_id"])
        assert [(e["loss"], e["val_acc"]) for e in ea] == [(e["loss"], e["val_acc"]) for e in eb]
    # the pruner still learns each remote trial's epochs (reported by the driver after the task)
    for t in read_study(remote, b.study_id).get_trials():
        assert sorted(t.intermediate_values) == [1, 2]
