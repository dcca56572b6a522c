"""The live view of the background job: progress, Stop, curves; polled about once a second.

The job runs in kd_core's worker thread; this module only reads `job.snapshot()`.
The job's id is kept in the URL (`?job=…`) so a refreshed or second tab finds it.
"""
from __future__ import annotations

from typing import Optional

import streamlit as st

from kd_core import studio
from kd_core.jobs import Job
from ui import charts, state

POLL_SECONDS = 1.0


def find_job(kinds: tuple[str, ...]) -> Optional[Job]:
    """The live job (whatever page started it: a second tab sees it too), else the
    finished job named in the URL or last started in this session, if of `kinds`."""
    manager = state.job_manager()
    job = manager.current()
    if job is None:
        job = manager.get(st.query_params.get("job", "")) or manager.get(st.session_state.get("last_job", ""))
        if job is None or job.kind not in kinds:
            return None
    st.query_params["job"] = job.id
    st.session_state["last_job"] = job.id
    return job


def show_job(job: Job, key: str) -> dict:
    """Draw the job; while it is live, redraw every POLL_SECONDS. Returns the snapshot."""
    was_live = job.live

    @st.fragment(run_every=POLL_SECONDS if was_live else None)
    def panel() -> None:
        snap = job.snapshot()
        _header(snap, key)
        _curves(snap, key)
        if was_live and snap["status"] != "running":
            st.rerun()   # the whole page: stop polling and show the final results

    panel()
    return job.snapshot()


def _header(snap: dict, key: str) -> None:
    status = snap["status"]
    if status == "running":
        prog = studio.progress_of(snap)
        cols = st.columns([5, 1])
        cols[0].progress(prog["fraction"], text=prog["text"])
        if cols[1].button("Stop", key=f"{key}_stop", disabled=snap["stopping"], type="primary"):
            state.job_manager().stop()
            st.toast("Stopping after the current step…")
        if snap["stopping"]:
            st.caption("Stopping after the current step…")
    elif status == "finished":
        st.success(f"Finished: {snap['title']}")
    elif status == "stopped":
        st.warning(f"Stopped: {snap['title']} — what was trained so far is kept.")
    else:
        st.error(f"Failed: {snap['title']} — {snap['message']}")
    for outcome in snap["outcomes"]:
        for w in outcome.get("warnings", []):
            st.warning(w)


def _curves(snap: dict, key: str) -> None:
    left, right = st.columns(2)
    left.plotly_chart(charts.loss_curves(studio.step_frame(snap)), key=f"{key}_loss", width="stretch")
    right.plotly_chart(charts.accuracy_curves(studio.epoch_frame(snap)), key=f"{key}_acc", width="stretch")
