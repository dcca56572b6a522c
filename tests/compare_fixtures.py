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


def run_config(kind: str, width: int, epochs: int, teacher_id: str | None = None) -> RunConfig:
    train = TrainConfig(epochs=epochs, lr=3e-3, device="cpu", threads=1)
    distill = DistillConfig(4.0, 0.9) if kind == "student" else None
    return RunConfig(
        kind=kind,
        data=DataConfig("digits"),
        model=ModelSpec("mlp", width, 1),
        train=train,
        distill=distill,
        teacher_id=teacher_id,
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
