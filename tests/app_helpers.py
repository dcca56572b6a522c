"""Plain helpers for the AppTest page tests: open the app on a page, wait for the process's
job, read Plotly charts. The pages run in-process against the store that KD_RUNS names
(see the runs_dir / filled_store / populated fixtures in conftest.py).
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from helpers import REPO
from kd_core.records import JobSnapshot, StoredRun
from kd_core.store import Store
from kd_core.train import recorder
from kd_core.views import studio
from ui import state

APP = str(REPO / "app.py")


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def open_app(page: str | None = None, timeout: float = 90) -> AppTest:
    """The app, run once on the Overview and then (if given) switched to `page`."""
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.run()
    if page:
        at.switch_page(page).run()
    assert_clean(at)
    return at


def wait_for_job(timeout: float = 120.0) -> JobSnapshot:
    """Wait for the process's job to end (the same JobManager the pages use)."""
    manager = state.job_manager()
    deadline = time.monotonic() + timeout
    while manager.current() is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    job = manager.latest()
    assert job is not None and not job.live, "the job did not finish in time"
    return job.snapshot()


def stored_teacher(runs_dir: Path, width: int = 64) -> StoredRun:
    """A 2-epoch MLP teacher on digits, trained into the store at `runs_dir`."""
    store = Store(runs_dir)
    data = studio.load_data("digits")
    cfg = studio.make_config("teacher", "digits", "data", 32, "mlp", width, 1, epochs=2, lr=1e-3, batch_size=64)
    outcome = recorder.train_teacher(store, cfg, data)
    return store.get_run(outcome.run_id)


def downloaded(at: AppTest, stores: list, key: str) -> bytes:
    """The bytes the download button with widget key `key` serves (`stores`: the media fixture)."""
    [button] = [b for b in at.get("download_button") if b.proto.id.endswith(key)]
    file_id = button.proto.url.rsplit("/", 1)[-1]
    return stores[-1].get_file(file_id).content


def chart_specs(at: AppTest) -> dict:
    """Plotly charts on the page by key: the figure's JSON."""
    return {el.key: json.loads(el.proto.spec) for el in at.get("plotly_chart")}


def trace_numbers(data) -> list:
    """A trace's x or y as a list: Plotly's JSON packs numeric arrays as {"dtype", "bdata": base64}."""
    if isinstance(data, dict) and "bdata" in data:
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"]).tolist()
    return list(data)
