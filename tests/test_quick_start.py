"""Quick start, run twice on one store: the second reuses the first's teacher (no duplicate in
the teacher picker) and distils its student with the next seed (a repeat adds a seed)."""

from __future__ import annotations

import time

import pytest

from kd_core.config import experiment_key
from kd_core.jobs import JobManager
from kd_core.store import Store
from kd_core.views import studio


def run_quick(manager: JobManager, store: Store, data) -> dict:
    job = studio.start_quick(manager, store, data, device="cpu", threads=1)
    deadline = time.monotonic() + 300
    while job.live and time.monotonic() < deadline:
        time.sleep(0.2)
    snap = job.snapshot()
    assert snap.status == "finished", snap.message
    return snap


@pytest.mark.slow
def test_a_second_quick_start_reuses_the_teacher_and_adds_a_seed(tmp_path, digits):
    store, manager = Store(tmp_path / "runs"), JobManager()
    try:
        first = run_quick(manager, store, digits)
        second = run_quick(manager, store, digits)
    finally:
        manager.shutdown()
    assert [o["kind"] for o in first.outcomes] == ["teacher", "student", "baseline"]
    assert [o["kind"] for o in second.outcomes] == ["student", "baseline"]
    teachers = studio.teachers(store, digits)
    assert [t["id"] for t in teachers] == [first.notes["teacher_id"]] == [second.notes["teacher_id"]]
    assert (first.notes["teacher_reused"], second.notes["teacher_reused"]) == (False, True)
    seeds = {(r.kind, r.config.train.seed) for r in store.list_runs() if r.kind in ("student", "baseline")}
    assert seeds == {("student", 0), ("student", 1), ("baseline", 0), ("baseline", 1)}


def test_experiment_key_ignores_the_machine_but_not_what_is_learned():
    t, _ = studio.quick_configs("digits", device="cpu", threads=1)
    same_elsewhere, _ = studio.quick_configs("digits", device="auto", threads=0)
    other_seed = studio.make_config("teacher", "digits", "data", 32, "mlp", 512, 2, 15, 1e-3, 64, seed=1)
    assert experiment_key(t.to_dict()) == experiment_key(same_elsewhere.to_dict())
    assert experiment_key(t.to_dict()) != experiment_key(other_seed.to_dict())
    assert t.model == other_seed.model  # the preset this test assumes
    assert experiment_key(t.to_dict(), drop=("seed",)) == experiment_key(other_seed.to_dict(), drop=("seed",))
