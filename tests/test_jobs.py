"""Background jobs: one at a time, stoppable, observable through plain-data snapshots."""

from __future__ import annotations

import dataclasses
import json
import threading
import time

import pytest

from helpers import TEACHER_SPEC, CrashingTeacher, make_config
from kd_core.events import Progress
from kd_core.jobs import MAX_POINTS, STEP_EVERY_S, Job, JobBusy, JobManager, downsample
from kd_core.store import Store
from kd_core.train.recorder import distill, run_one, train_teacher


def wait_for(predicate, timeout: float = 60.0) -> None:
    """Poll until `predicate()` holds; fail (not hang) if it never does."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.02)


def assert_plain(value) -> None:
    """Only JSON-like builtins all the way down: safe to hand to any UI thread."""
    if isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, str)
            assert_plain(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            assert_plain(v)
    else:
        assert value is None or isinstance(value, (str, int, float, bool)), type(value)


def worker_alive(job: Job) -> bool:
    return any(t.name == f"kd-job-{job.id}" and t.is_alive() for t in threading.enumerate())


def distill_job(store, data, teacher, cfg):
    def fn(emit, stop, job):
        outcomes = distill(store, cfg, data, teacher, with_baseline=True, emit=emit, stop=stop)
        for o in outcomes:
            job.add_outcome(o)
        return outcomes

    return fn


def teacher_job(store, data, cfg):
    def fn(emit, stop, job):
        outcome = train_teacher(store, cfg, data, emit=emit, stop=stop)
        job.add_outcome(outcome)
        return [outcome]

    return fn


@pytest.fixture
def manager():
    m = JobManager()
    yield m
    m.shutdown(timeout=60)


def test_one_job_at_a_time_and_stop_ends_a_running_distillation(tmp_path, digits, teacher, manager):
    store = Store(tmp_path)
    long_cfg = make_config("student", epochs=10_000)  # would take hours: it must be stopped
    job = manager.start("distil digits", "distill", distill_job(store, digits, teacher, long_cfg))
    wait_for(lambda: job.snapshot().runs and len(job.snapshot().runs[0].steps) >= 3)

    with pytest.raises(JobBusy, match="distil digits"):
        manager.start("another", "teacher", teacher_job(store, digits, make_config()))
    assert manager.current() is job and job.live

    manager.stop()
    wait_for(lambda: not job.live)
    manager.shutdown(timeout=60)
    assert not worker_alive(job)

    snap = job.snapshot()
    assert snap.status == "stopped" and snap.stopping and not job.live
    assert_plain(snap.to_dict())
    json.dumps(snap.to_dict())
    (run,) = snap.runs  # the baseline never started
    steps = [s[0] for s in run.steps]
    assert steps == sorted(steps) and len(steps) >= 3
    assert run.last["event"] == "end" and run.last["status"] == "stopped"
    assert [o["status"] for o in snap.outcomes] == ["stopped"]
    assert store.get_run(run.run_id).status == "stopped"
    assert len(store.list_runs()) == 1
    assert manager.current() is None and manager.latest() is job and manager.get(job.id) is job


def test_shutdown_stops_the_live_job_and_joins_its_worker(tmp_path, digits):
    manager = JobManager()
    job = manager.start("endless", "teacher", teacher_job(Store(tmp_path), digits, make_config(epochs=10_000)))
    wait_for(lambda: job.snapshot().runs and job.snapshot().runs[0].steps)
    manager.shutdown(timeout=60)
    assert not worker_alive(job)
    assert job.snapshot().status == "stopped"
    manager.shutdown()  # a second call has nothing left to do


def test_finished_job_snapshot_has_curves(tmp_path, digits, manager):
    store = Store(tmp_path)
    cfg = make_config("teacher", TEACHER_SPEC, epochs=2, batch_size=128)
    job = manager.start("teacher", "teacher", teacher_job(store, digits, cfg))
    wait_for(lambda: not job.live, timeout=120)
    snap = job.snapshot()
    assert snap.status == "finished", snap.message
    assert_plain(snap.to_dict())
    (run,) = snap.runs
    steps_per_epoch = -(-len(digits.train_y) // 128)
    kept = [s[0] for s in run.steps]  # thinned in time (STEP_EVERY_S), never the epoch's last
    assert kept == sorted(set(kept)) and set(kept) <= set(range(1, 2 * steps_per_epoch + 1))
    assert kept[0] == 1 and {steps_per_epoch, 2 * steps_per_epoch} <= set(kept)
    assert [e["epoch"] for e in run.epochs] == [1, 2]
    stored = store.epochs(run.run_id)
    assert [e["val_acc"] for e in run.epochs] == [e["val_acc"] for e in stored]
    assert snap.outcomes[0]["status"] == "finished" and "test_acc" in snap.outcomes[0]
    assert run.label == "teacher"
    # A snapshot is a frozen copy: it cannot be rebound, and changing what it holds leaves the job alone.
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.status = "running"
    run.steps.clear()
    snap.outcomes[0].clear()
    snap.notes["x"] = 1
    again = job.snapshot()
    assert again.runs[0].steps and again.outcomes[0]["status"] == "finished" and "x" not in again.notes


def test_a_new_job_can_start_once_the_last_one_ended(tmp_path, digits, manager):
    store = Store(tmp_path)
    first = manager.start("one", "teacher", teacher_job(store, digits, make_config(epochs=1)))
    wait_for(lambda: not first.live)
    second = manager.start("two", "teacher", teacher_job(store, digits, make_config(epochs=1)))
    wait_for(lambda: not second.live)
    assert first.id != second.id and manager.latest() is second
    assert first.snapshot().status == second.snapshot().status == "finished"


def test_diverging_job_fails_with_the_runs_message(tmp_path, digits, manager):
    store = Store(tmp_path)
    job = manager.start("bad lr", "teacher", teacher_job(store, digits, make_config(lr=1e6)))
    wait_for(lambda: not job.live)
    snap = job.snapshot()
    assert snap.status == "failed" and "learning rate" in snap.message


def test_an_exception_in_the_job_is_reported_not_lost(manager, caplog):
    def broken(emit, stop, job):
        raise RuntimeError("disk on fire")

    job = manager.start("broken", "teacher", broken)
    manager.shutdown(timeout=60)  # joins the worker, which logs the traceback last
    assert job.snapshot().status == "failed"
    assert job.snapshot().message == "RuntimeError: disk on fire"
    [logged] = [r for r in caplog.records if r.name == "kd_core.jobs"]
    assert logged.levelname == "ERROR" and "broken" in logged.getMessage()
    assert logged.exc_info[0] is RuntimeError and str(logged.exc_info[1]) == "disk on fire"


def test_an_exception_inside_a_run_fails_the_stored_run_and_the_job_with_its_message(tmp_path, digits, manager, caplog):
    """The run was created before the error: it must not stay 'running' in the store (this process
    lives on, so nothing would ever mark it failed), and the page gets the message."""
    store = Store(tmp_path)

    def work(emit, stop, job):
        return [run_one(store, make_config("student"), digits, CrashingTeacher(), emit, stop)]

    job = manager.start("distil from a broken teacher", "distill", work)
    wait_for(lambda: not job.live)
    snap = job.snapshot()
    assert snap.status == "failed" and snap.message == "RuntimeError: teacher crashed"
    [run] = store.list_runs()
    assert (run.kind, run.status, run.error) == ("student", "failed", "RuntimeError: teacher crashed")
    assert run.weights is None and run.finished is not None
    assert any(r.name == "kd_core.jobs" and r.exc_info and "broken teacher" in r.getMessage() for r in caplog.records)


def test_snapshot_downsamples_long_curves(monkeypatch):
    monkeypatch.setattr("kd_core.jobs.STEP_EVERY_S", 0.0)  # every step kept: the downsampling alone
    job = Job("long", "teacher")
    n = 3 * MAX_POINTS + 7
    for step in range(1, n + 1):
        job.on_progress(Progress("step", 1, step, n, loss=1.0 / step, run_id="r1", kind="teacher"))
    steps = job.snapshot().runs[0].steps
    assert len(steps) == MAX_POINTS
    assert steps[0][0] == 1 and steps[-1][0] == n
    assert [s[0] for s in steps] == sorted({s[0] for s in steps})


@pytest.mark.parametrize("n", [0, 5, MAX_POINTS, MAX_POINTS + 1, 10_000])
def test_downsample(n):
    points = list(range(n))
    out = downsample(points)
    assert len(out) == min(n, MAX_POINTS)
    assert out == sorted(set(out)) and set(out) <= set(points)
    if n:
        assert out[0] == 0 and out[-1] == n - 1


def test_runs_with_the_same_label_are_told_apart():
    job = Job("sweep", "sweep")
    for rid in ("r1", "r2"):
        job.on_progress(Progress("step", 1, 1, 10, loss=1.0, run_id=rid, kind="student"))
    labels = [r.label for r in job.snapshot().runs]
    assert len(set(labels)) == 2 and labels[0] == "student"


def test_steps_are_thinned_in_time_but_each_epochs_last_and_the_end_go_through():
    """Records fed as fast as Python allows (well under STEP_EVERY_S for all of them): the first
    step is kept, the others only as the held-back newest step before each epoch record and the end."""
    job = Job("fast", "teacher")
    per_epoch, epochs = 50, 3
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        for i in range(1, per_epoch + 1):
            step = (epoch - 1) * per_epoch + i
            job.on_progress(
                Progress("step", epoch, step, per_epoch * epochs, loss=1.0 / step, run_id="r", kind="teacher")
            )
        job.on_progress(Progress("epoch", epoch, epoch * per_epoch, per_epoch * epochs, loss=0.5, run_id="r"))
    assert time.perf_counter() - start < STEP_EVERY_S, "too slow a machine for this test's premise"
    run = job.snapshot().runs[0]
    assert [s[0] for s in run.steps] == [1, 50, 100, 150]
    assert run.last["event"] == "epoch" and run.last["step"] == 150
    # a step left held with no record after it goes in when the job ends
    job.on_progress(Progress("step", 4, 151, 200, loss=0.1, run_id="r"))
    job.on_progress(Progress("step", 4, 152, 200, loss=0.1, run_id="r"))
    before = job.snapshot().version
    job.end("stopped")
    snap = job.snapshot()
    assert snap.runs[0].steps[-1][0] == 152 and snap.version > before


def test_a_real_run_keeps_few_steps_yet_every_epochs_last(tmp_path, digits, manager):
    """digits at batch 16 (90 steps an epoch, well under a millisecond each): the job keeps far
    fewer step points than steps, and still every epoch's last step and the run's end."""
    store = Store(tmp_path)
    cfg = make_config(epochs=3, batch_size=16)
    job = manager.start("many steps", "teacher", teacher_job(store, digits, cfg))
    wait_for(lambda: not job.live, timeout=120)
    snap = job.snapshot()
    assert snap.status == "finished", snap.message
    (run,) = snap.runs
    per_epoch = -(-len(digits.train_y) // 16)
    kept = [s[0] for s in run.steps]
    assert {per_epoch, 2 * per_epoch, 3 * per_epoch} <= set(kept)
    assert len(kept) < 3 * per_epoch / 2, f"{len(kept)} of {3 * per_epoch} steps kept"
    assert run.last["event"] == "end" and run.last["step"] == 3 * per_epoch
