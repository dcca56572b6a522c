"""The one recorder: every stored model (trained here, on Ray, or uploaded) is measured alike."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import make_config
from kd_core.config import timing_threads
from kd_core.store import Store
from kd_core.train.recorder import Trained, record, train_teacher
from kd_core.views import studio


@pytest.mark.parametrize(("threads", "torch_before_upload"), [(0, 3), pytest.param(2, 1, marks=pytest.mark.slow)])
def test_an_uploaded_teacher_and_a_trained_one_are_timed_at_the_same_thread_count(
    tmp_path, digits, threads, torch_before_upload
):
    """The upload goes through the real page path (`studio.import_checkpoint`) with the sidebar's
    thread setting. torch's thread count is set to another number first: an upload timed at
    whatever count was in force (as it once was) stores that number instead of the fixed one."""
    store = Store(tmp_path / "runs")
    trained = train_teacher(store, make_config("teacher", epochs=1, threads=threads), digits)
    assert trained.status == "finished", trained.message
    payload = Path(store.get_run(trained.run_id).weights).read_bytes()

    before = torch.get_num_threads()
    torch.set_num_threads(torch_before_upload)
    try:
        uploaded = studio.import_checkpoint(store, payload, digits, "teacher.pt", threads=threads)
    finally:
        torch.set_num_threads(before)

    fixed = timing_threads(threads)
    assert fixed != torch_before_upload
    t_lat = store.get_run(trained.run_id).metrics["latency"]
    u_run = store.get_run(uploaded)
    assert u_run.status == "finished" and u_run.metrics["uploaded"] == "teacher.pt"
    assert t_lat["threads"] == u_run.metrics["latency"]["threads"] == fixed
    assert set(t_lat["batches"]) == set(u_run.metrics["latency"]["batches"]) == {"1", "256"}
    # the same weights measured on the same split: the same test accuracy, size and FLOPs
    for key in ("test_acc", "params", "bytes", "flops"):
        assert u_run.metrics[key] == store.get_run(trained.run_id).metrics[key], key


def test_a_measurement_that_raises_leaves_the_run_failed_with_its_reason(tmp_path, digits):
    """A run must never stay 'running' because recording it failed: the error is stored, then raised."""
    store = Store(tmp_path / "runs")
    cfg = make_config("teacher")
    run_id = store.create_run(cfg)
    wrong = torch.nn.Linear(3, 2)  # not a model for 1×8×8 digits: evaluating it raises
    with pytest.raises(RuntimeError):
        record(store, run_id, cfg, digits, Trained("finished", model=wrong, numbers={"seconds": 1.5}))
    run = store.get_run(run_id)
    assert run.status == "failed" and run.error.startswith("RuntimeError:")
    assert run.metrics == {"seconds": 1.5} and run.weights is None


def test_a_run_with_nothing_trained_is_stored_without_weights_or_measurement(tmp_path, digits):
    store = Store(tmp_path / "runs")
    cfg = make_config("teacher")
    run_id = store.create_run(cfg)
    outcome = record(store, run_id, cfg, digits, Trained("stopped", "stopped by request", numbers={"seconds": 0.25}))
    run = store.get_run(run_id)
    assert (outcome.status, run.status, run.error) == ("stopped", "stopped", "stopped by request")
    assert run.metrics == {"seconds": 0.25} and run.weights is None
