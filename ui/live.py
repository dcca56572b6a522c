"""The live view of the background job: progress, Stop, curves; polled about once a second.

The job runs in kd_core's worker thread; this module only reads `job.snapshot()`.
The job's id is kept in the URL (`?job=…`) so a refreshed or second tab finds it.

Only training jobs (TRAINING_KINDS) have the curves drawn here. Another kind of job,
such as a measurement started from the Compare page's Deployment tab, holds the single
worker too; a training page names it in one line instead of showing it as a training
run that never starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import streamlit as st

from kd_core.jobs import Job, JobSnapshot
from kd_core.views import studio
from ui import charts, state

# Every tick costs the training thread GIL time (pandas, Plotly, the browser's redraw on the same
# cores): at one torch thread a 1 s poll made a digits run ~15 % slower than the CLI, so 2 s.
POLL_SECONDS = 2.0
# Redrawing the two Plotly charts is most of what a poll costs the browser, on the same cores as the
# training (its main thread ~3x busier than with unchanged figures): while a job runs its curves are
# rebuilt at most this often; the progress bar still moves every poll.
CHART_SECONDS = 6.0
TRAINING_KINDS = ("teacher", "distill", "quick", "sweep")  # jobs whose runs emit training progress


def find_job(kinds: tuple[str, ...]) -> Job | None:
    """The live training job (whatever page started it: a second tab sees it too), else the
    finished job named in the URL or last started in this session, if of `kinds`. A live job
    of another kind is named in one line (`other_job`) and not returned."""
    manager = state.job_manager()
    job = manager.current()
    if job is not None and job.kind not in TRAINING_KINDS and job.kind not in kinds:
        other_job(job)
        job = None
    if job is None:
        job = manager.get(st.query_params.get("job", "")) or manager.get(st.session_state.get("last_job", ""))
        if job is None or job.kind not in kinds:
            return None
    st.query_params["job"] = job.id
    st.session_state["last_job"] = job.id
    return job


def other_job(job: Job) -> None:
    """One line for a live job this page does not draw: its title and how far it is; polled
    while it runs, and the whole page is rerun when it ends (its buttons come back)."""

    def line(snap: JobSnapshot | None) -> None:
        elapsed = max(0.0, time.time() - snap.started)
        st.info(
            f"Busy: {snap.title} ({job_text(snap)}, running for {elapsed:.0f} s). "
            "Training can start here once it ends.",
            icon=":material/hourglass_top:",
        )

    poll(job, line)


def job_text(snap: JobSnapshot) -> str:
    """A job's progress in words: its training progress, else the phase it publishes, else its kind."""
    if snap.runs:
        return studio.progress_of(snap)["text"]
    phase = next((n["phase"] for n in snap.notes.values() if isinstance(n, dict) and n.get("phase")), None)
    return phase or f"a {snap.kind} job"


def poll(job: Job | None, draw: Callable[[JobSnapshot | None], None]) -> None:
    """The one job-polling panel: `draw(snapshot)` (None without a job) in a fragment that is
    redrawn every POLL_SECONDS while the job is live, and only then; when it ends, the whole page
    is rerun once, so that polling stops and the page's buttons and final results come back."""
    was_live = job is not None and job.live

    @st.fragment(run_every=POLL_SECONDS if was_live else None)
    def panel() -> None:
        snap = job.snapshot() if job is not None else None
        draw(snap)
        if was_live and snap.status != "running":
            st.rerun()

    panel()


def progress_row(job: Job, snap: JobSnapshot, fraction: float, text: str, key: str, stopping: str) -> None:
    """A running job's progress bar and its Stop button, which sets the job's own stop event
    (the worker checks it between steps); `stopping` says what happens then."""
    cols = st.columns([5, 1], vertical_alignment="center")
    cols[0].progress(min(1.0, fraction), text=text)
    if cols[1].button("Stop", key=key, disabled=snap.stopping, type="primary", icon=":material/stop:"):
        job.stop_event.set()
        st.toast(stopping)
    if snap.stopping:
        st.caption(stopping)


def show_job(job: Job, key: str) -> JobSnapshot:
    """Draw a training job's progress, Stop and curves, polled while it is live. Returns the snapshot."""

    def draw(snap: JobSnapshot | None) -> None:
        _header(job, snap, key)
        _curves(snap, key)

    poll(job, draw)
    return job.snapshot()


def _header(job: Job, snap: JobSnapshot, key: str) -> None:
    status = snap.status
    if status == "running":
        prog = studio.progress_of(snap)
        progress_row(job, snap, prog["fraction"], prog["text"], f"{key}_stop", "Stopping after the current step…")
    elif status == "finished":
        st.success(f"Finished: {snap.title}")
    elif status == "stopped":
        st.warning(f"Stopped: {snap.title} — what was trained so far is kept.")
    else:
        st.error(f"Failed: {snap.title} — {snap.message}")
    for outcome in snap.outcomes:
        for w in outcome.get("warnings", []):
            st.warning(w)


def _curves(snap: JobSnapshot, key: str) -> None:
    loss, acc = figures(snap, key)
    left, right = st.columns(2)
    left.plotly_chart(loss, key=f"{key}_loss", width="stretch")
    right.plotly_chart(acc, key=f"{key}_acc", width="stretch")


def figures(snap: JobSnapshot, key: str) -> tuple:
    """The loss and accuracy figures of a snapshot, rebuilt only when the job changed since this
    panel's last tick (its `version`): a tick with nothing new (a long validation, a data load)
    costs no pandas or Plotly work. While the job runs, at most once per CHART_SECONDS; its end
    (or another job) is drawn at once. One pair per panel key, in the session."""
    cache = st.session_state.setdefault("_live_figures", {})
    stamp = (snap.id, snap.version, snap.status)
    hit = cache.get(key)
    if hit is not None and (hit[0] == stamp or _recent_enough(hit[0], stamp, hit[2])):
        return hit[1]
    pair = (
        charts.loss_curves(studio.step_frame(snap)),
        charts.accuracy_curves(studio.epoch_frame(snap), snap.status),
    )
    cache[key] = (stamp, pair, time.monotonic())
    return pair


def _recent_enough(drawn: tuple, now: tuple, built_at: float) -> bool:
    """The figures drawn (stamp `drawn`) still stand for the job (stamp `now`): the same running job,
    built under CHART_SECONDS ago."""
    same_running_job = drawn[0] == now[0] and drawn[2] == now[2] == "running"
    return same_running_job and time.monotonic() - built_at < CHART_SECONDS
