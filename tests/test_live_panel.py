"""The live panel's figures: built once per change of the job, not once per poll."""

from __future__ import annotations

import time

from streamlit.testing.v1 import AppTest

from helpers import make_config
from kd_core.jobs import Job
from kd_core.store import Store
from kd_core.train.recorder import run_one


def draw(job):
    """One poll of the panel: the figures it would draw, kept per run for the test to compare."""
    import streamlit as st

    from ui import live

    snap = job.snapshot()
    st.session_state.setdefault("drawn", []).append((live.figures(snap, "k"), snap.version))


def test_the_panel_rebuilds_its_figures_only_when_the_job_changed(tmp_path, digits):
    job = Job("teacher", "teacher")
    run_one(Store(tmp_path), make_config(epochs=2), digits, emit=job.on_progress)  # a real engine run
    at = AppTest.from_function(draw, args=(job,), default_timeout=60)
    at.run()
    at.run()  # nothing new in the job: the same figure objects, no pandas or Plotly work
    job.end("finished")
    at.run()
    assert not at.exception
    (first, v1), (second, v2), (third, v3) = at.session_state["drawn"]
    assert v1 == v2 < v3
    assert second[0] is first[0] and second[1] is first[1]
    assert third[0] is not second[0] and third[1] is not second[1]
    # the figures are the job's: one validation point per epoch, the loss curve ends at the last step
    val = [t for t in third[1].data if t.name.endswith("validation")]
    assert [list(t.x) for t in val] == [[1, 2]]
    last_step = job.snapshot().runs[0].last["step"]
    assert max(max(t.x) for t in third[0].data) == last_step


def test_a_running_job_s_curves_are_redrawn_at_most_once_per_chart_interval(tmp_path, digits, monkeypatch):
    """The progress bar moves every poll; the charts, the browser's main cost per poll, only once
    per live.CHART_SECONDS while the job runs."""
    from ui import live

    monkeypatch.setattr(live, "CHART_SECONDS", 1.0)
    job = Job("teacher", "teacher")
    cfg = make_config(epochs=1)
    at = AppTest.from_function(draw, args=(job,), default_timeout=60)
    run_one(Store(tmp_path), cfg, digits, emit=job.on_progress)
    at.run()
    job.note(more="a change the snapshot shows")  # the job moved on ...
    at.run()  # ... within the interval: the same figures
    time.sleep(1.1)
    at.run()  # after it: rebuilt
    assert not at.exception
    (first, v1), (second, v2), (third, v3) = at.session_state["drawn"]
    assert v1 < v2 == v3
    assert second[0] is first[0] and second[1] is first[1]
    assert third[0] is not second[0] and third[1] is not second[1]
