"""The Ray backend gives the in-process backend's numbers, through the dashboard's job path.

One test, because starting a local Ray instance takes seconds (marked slow); skipped only
where Ray is not installed (CI installs it through requirements-dev.txt).
"""

import time
from pathlib import Path

import pytest

from kd_core.config import DataConfig, ModelSpec, RunConfig, TrainConfig
from kd_core.jobs import JobManager
from kd_core.store import Store
from kd_core.sweep.grid import cell_key, create_sweep
from kd_core.sweep.ray_executor import CLUSTER_RUNTIME_ENV, LOCAL_RUNTIME_ENV, train_cell
from kd_core.sweep.runner import run_sweep, start_sweep
from kd_core.train.engine import AUTO_THREADS_MIN_STEP_FLOPS
from kd_core.train.models import describe
from stores import tiny_sweep

COMPARED = (
    "best_val_acc",
    "final_val_acc",
    "best_epoch",
    "test_acc",
    "ece",
    "agreement",
    "per_class_accuracy",
    "confusion_matrix",
    "params",
)


def by_cell(store: Store, sweep_id: str) -> dict:
    return {cell_key(r.config): r for r in store.list_runs(sweep_id=sweep_id)}


@pytest.mark.slow
def test_ray_sweep_matches_in_process_at_the_same_seeds(tmp_path, digits, teacher_path, monkeypatch):
    ray = pytest.importorskip("ray")
    local, remote = Store(tmp_path / "local"), Store(tmp_path / "ray")
    local_id = create_sweep(local, tiny_sweep(teacher_path))
    assert len(run_sweep(local, local_id, digits)) == 5

    puts = []
    real_put = ray.put
    monkeypatch.setattr(ray, "put", lambda value, **kw: puts.append(type(value)) or real_put(value, **kw))
    manager = JobManager()
    job = start_sweep(manager, remote, digits, tiny_sweep(teacher_path), backend="ray")
    deadline = time.monotonic() + 300
    while job.live and time.monotonic() < deadline:
        time.sleep(0.1)
    snap = job.snapshot()
    assert snap.status == "finished", snap.message
    assert snap.notes["sweep"]["backend"] == "ray" and snap.notes["sweep"]["done"] == 5
    assert puts == [tuple]  # dataset, teacher and its logits went to the object store once
    assert not ray.is_initialized()  # the local instance the sweep started is shut down

    a, b = by_cell(local, local_id), by_cell(remote, snap.notes["sweep"]["id"])
    assert sorted(a) == sorted(b) and len(a) == 5
    for key in a:
        ra, rb = a[key], b[key]
        assert rb.status == "finished" and rb.weights
        assert {m: ra.metrics[m] for m in COMPARED if m in ra.metrics} == {
            m: rb.metrics[m] for m in COMPARED if m in ra.metrics
        }, key
        ea, eb = local.epochs(ra.id), remote.epochs(rb.id)
        assert [(e["loss"], e["val_acc"]) for e in ea] == [(e["loss"], e["val_acc"]) for e in eb], key


@pytest.mark.slow
def test_a_ray_task_trains_at_one_thread_under_auto_even_for_a_large_model(digits):
    """Each task holds one Ray CPU; "auto" must not give a large model every core in each task."""
    spec = ModelSpec("mlp", 1024, 2)
    assert 3 * describe(spec, digits.input_shape, digits.num_classes)["flops"] * 64 > AUTO_THREADS_MIN_STEP_FLOPS
    cfg = RunConfig(
        kind="baseline",
        data=DataConfig("digits"),
        model=spec,
        train=TrainConfig(epochs=1, batch_size=64, device="cpu", threads=0),
    )
    out = train_cell(cfg, (digits, None, None))
    assert out.status == "finished" and out.numbers["train_threads"] == 1 and out.measured["latency"]["threads"] == 1


def test_a_cluster_gets_the_whole_kd_core_package():
    # A remote worker must import kd_core.train, kd_core.methods, ... — not one sub-package.
    shipped = Path(CLUSTER_RUNTIME_ENV["py_modules"][0])
    assert shipped.name == "kd_core"
    assert {"train", "methods", "sweep", "store"} <= {p.name for p in shipped.iterdir() if p.is_dir()}
    assert "py_modules" not in LOCAL_RUNTIME_ENV
