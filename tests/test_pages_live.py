"""AppTest: a job that is not training (a deployment measurement, as the Compare page's
Deployment tab starts) is named on the training pages, not drawn as a training run that
stays at "starting…" with curves that never fill.

The job runs in the process's real JobManager (the one the pages use), with the deploy
job kind and the note a measurement publishes; it holds the worker until the test ends it.
"""

from __future__ import annotations

import threading

import pytest
from streamlit.testing.v1 import AppTest

from app_helpers import APP, open_app, stored_teacher, wait_for_job
from helpers import CrashingTeacher, make_config
from kd_core.events import Progress
from kd_core.store import Store
from kd_core.train.recorder import run_one
from kd_core.views import deploy as dep
from kd_core.views import studio
from ui import state

TITLE = "measure mlp 16 · student across runtimes"
PHASE = "timing student under ONNX Runtime"


@pytest.fixture
def measuring(runs_dir):
    """A live deploy job: its title, and its phase in the note, until the test is done."""
    release = threading.Event()

    def work(emit, stop, job):
        job.note(**{f"{dep.NOTE}_run": "s-1", dep.NOTE: {"phase": PHASE, "steps_done": 2, "steps_total": 7}})
        while not (stop.is_set() or release.is_set()):
            stop.wait(0.05)
        return []

    job = state.job_manager().start(TITLE, dep.JOB_KIND, work)
    yield job
    release.set()
    snap = wait_for_job(30)
    assert snap.id == job.id and snap.status == "finished"


def page_text(at) -> str:
    """Every text the page shows: alerts, captions, markdown and progress bars."""
    parts = [el.value for kind in ("info", "warning", "error", "success", "caption", "markdown") for el in at.get(kind)]
    parts += [el.proto.text for el in at.get("progress")]
    return "\n".join(str(p) for p in parts)


@pytest.mark.parametrize(
    "page, button, chart",
    [("app_pages/distill.py", "distill", "distill_loss"), ("app_pages/teacher.py", "train_teacher", "teacher_loss")],
)
@pytest.mark.slow
def test_a_measure_job_is_named_on_the_training_pages(runs_dir, measuring, page, button, chart):
    if page == "app_pages/distill.py":
        stored_teacher(runs_dir, width=32)  # the Distill page draws jobs only once it has a teacher
    assert measuring.live
    at = open_app(page)
    text = page_text(at)
    assert "starting…" not in text and not at.get("progress")
    assert TITLE in text and PHASE in text
    assert chart not in {el.key for el in at.get("plotly_chart")}
    assert at.button(key=button).disabled  # the single worker is busy
    assert at.query_params.get("job") != [measuring.id]


@pytest.fixture
def quick_training_teacher(runs_dir):
    """A live quick-start job that is still in its teacher phase (one step emitted)."""
    release = threading.Event()

    def work(emit, stop, job):
        emit(
            Progress(
                event="step",
                epoch=1,
                step=1,
                total_steps=100,
                run_id="t-quick",
                kind="teacher",
                loss=2.3,
                terms={"ce": 2.3},
            )
        )
        while not (stop.is_set() or release.is_set()):
            stop.wait(0.05)
        return []

    job = state.job_manager().start("quick start: teacher, student and baseline on digits", "quick", work)
    yield job
    release.set()
    wait_for_job(30)


def test_distill_without_a_teacher_shows_the_quick_start_training_one(runs_dir, quick_training_teacher):
    at = open_app("app_pages/distill.py")
    text = page_text(at)
    assert "needs a teacher" in text  # no teacher yet: the page says so …
    assert "distill_loss" in {el.key for el in at.get("plotly_chart")}  # … and shows the one being trained
    assert at.get("progress") and "step 1/100" in at.get("progress")[0].proto.text


def test_a_job_that_crashes_shows_its_error_on_the_page_and_fails_its_run(runs_dir):
    """An exception the worker thread hits (not bad input: a crashing model) reaches the store and
    the page that started the job."""
    store, data = Store(runs_dir), studio.load_data("digits")

    def work(emit, stop, job):
        return [run_one(store, make_config("student", epochs=1), data, CrashingTeacher(), emit, stop)]

    job = state.job_manager().start("teacher that crashes", "teacher", work)
    snap = wait_for_job(60)
    assert snap.id == job.id and snap.status == "failed"
    [run] = store.list_runs()
    assert run.status == "failed" and run.error == "RuntimeError: teacher crashed"
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["job"] = job.id  # as the tab that started it has in its URL
    at.switch_page("app_pages/teacher.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Failed: teacher that crashes — RuntimeError: teacher crashed" in [e.value for e in at.error]


@pytest.fixture
def distilling(runs_dir):
    """A live distill job that has emitted one step of its student, until the test is done."""
    release = threading.Event()

    def work(emit, stop, job):
        emit(Progress("step", 1, 1, 100, run_id="s-live", kind="student", loss=1.5, terms={"ce": 1.0, "kd": 0.5}))
        while not (stop.is_set() or release.is_set()):
            stop.wait(0.05)
        return []

    job = state.job_manager().start("distill mlp 32 from the teacher", "distill", work)
    yield job
    release.set()
    wait_for_job(30)


def test_the_distill_page_draws_a_live_distill_job_once(runs_dir, distilling):
    """Once: the Multi-model methods section draws only pipeline jobs. Drawn there too, every poll
    ran two fragments (two progress bars, four charts), which slowed the training thread."""
    stored_teacher(runs_dir, width=32)
    at = open_app("app_pages/distill.py")
    assert [el.key for el in at.get("plotly_chart")] == ["distill_loss", "distill_acc"]
    assert len(at.get("progress")) == 1 and "step 1/100" in at.get("progress")[0].proto.text
    assert at.query_params.get("job") == distilling.id
