"""Shared by the Compare tests: a real run store on digits with two teachers and their students.

Imported by the test modules (pytest puts tests/ on sys.path). Everything is
trained for real by kd_core.train.recorder (tiny MLPs, one or two epochs, seconds).

The store, in order of creation (so teacher A is the newest teacher, the one
the sidebar picks first):
  teacher B (mlp 32) and a student of B (mlp 8, no baseline);
  teacher A (mlp 64), a student of A (mlp 8) and its no-KD baseline;
  a failed student of A (no metrics).
"""

from __future__ import annotations

import pytest

from kd_core.config import DataConfig, DistillConfig, ModelSpec, RunConfig, TrainConfig
from kd_core.store import Store
from kd_core.train import recorder as experiment


def run_config(
    kind: str,
    width: int,
    epochs: int,
    teacher_id: str | None = None,
    temperature: float = 4.0,
    seed: int = 0,
    sweep_id: str | None = None,
) -> RunConfig:
    train = TrainConfig(epochs=epochs, lr=3e-3, device="cpu", threads=1, seed=seed)
    distill = DistillConfig(temperature, 0.9) if kind == "student" else None
    return RunConfig(
        kind=kind,
        data=DataConfig("digits"),
        model=ModelSpec("mlp", width, 1),
        train=train,
        distill=distill,
        teacher_id=teacher_id,
        sweep_id=sweep_id,
    )


def fill_store(root, data) -> dict:
    """Train the runs above into a Store at `root`; returns the store and the run ids by role."""
    store = Store(root)
    b = experiment.train_teacher(store, run_config("teacher", 32, 1), data)
    [b_student] = experiment.distill(store, run_config("student", 8, 1, b.run_id), data, b.model, False)
    a = experiment.train_teacher(store, run_config("teacher", 64, 2), data)
    a_student, a_baseline = experiment.distill(store, run_config("student", 8, 2, a.run_id), data, a.model, True)
    outcomes = (b, b_student, a, a_student, a_baseline)
    assert all(o.status == "finished" for o in outcomes), [o.message for o in outcomes]
    failed = store.create_run(run_config("student", 8, 1, a.run_id))
    store.finish_run(failed, "failed", {}, error="diverged")
    return {
        "store": store,
        "teacher": a.run_id,
        "student": a_student.run_id,
        "baseline": a_baseline.run_id,
        "other_teacher": b.run_id,
        "other_student": b_student.run_id,
        "failed": failed,
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory, digits) -> dict:
    return fill_store(tmp_path_factory.mktemp("runs"), digits)


def add_scale_runs(store: Store, data, ids: dict) -> dict:
    """Around teacher A's student and baseline, what a store at scale holds: an older student
    of A (T=2, no baseline), a newer one of a sweep, a stopped one (newest of all: partly
    trained, with metrics) and a seed-1 repeat of A's student and baseline, which is then the
    newest finished student outside a sweep (Compare's default), with 2 seeds for its headline.
    Returns `ids` with "older_student", "sweep_student", "stopped", "student_seed1", "baseline_seed1"."""
    a = ids["teacher"]
    teacher = experiment.load_teacher(store, a, data)
    [older] = experiment.distill(store, run_config("student", 8, 1, a, temperature=2.0), data, teacher, False)
    seed1, base1 = experiment.distill(store, run_config("student", 8, 2, a, seed=1), data, teacher, True)
    [swept] = experiment.distill(store, run_config("student", 8, 1, a, sweep_id="sw-test"), data, teacher, False)
    stopped = store.create_run(run_config("student", 8, 2, a, temperature=8.0))
    store.finish_run(stopped, "stopped", store.get_run(ids["student"])["metrics"])
    assert all(o.status == "finished" for o in (older, seed1, base1, swept))
    return {
        **ids,
        "older_student": older.run_id,
        "student_seed1": seed1.run_id,
        "baseline_seed1": base1.run_id,
        "sweep_student": swept.run_id,
        "stopped": stopped,
    }


@pytest.fixture(scope="module")
def scaled_runs(tmp_path_factory, digits) -> dict:
    store_ids = fill_store(tmp_path_factory.mktemp("runs"), digits)
    return add_scale_runs(store_ids["store"], digits, store_ids)
