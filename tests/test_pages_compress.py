"""AppTest: the Compress page on an empty store, a search started from the page (one that no
candidate can meet, one that finds a student), a stored study's fronts with its pruned trials,
and the one click to the Compare page's Deployment tab.

Real run stores in temporary folders (KD_RUNS), digits, latency under eager PyTorch, studies run
in kd_core's real worker thread.
"""

from __future__ import annotations

import urllib.parse

import pytest
from streamlit.testing.v1 import AppTest

from app_helpers import APP, chart_specs, stored_teacher, trace_numbers, wait_for_job
from kd_core.compress.config import Goal
from kd_core.compress.search import run_study
from kd_core.compress.study import create_study, read_study
from kd_core.store import Store
from kd_core.views import studio
from stores import SIZE_BUDGET_MB, tiny_config

PAGE = "app_pages/compress.py"


def open_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def small_search(at: AppTest, **goal) -> None:
    """Eager PyTorch, 2 trials of 1 epoch, MLP widths 8–32; the goal's fields as given."""
    at.selectbox(key="cs_runtime").set_value("eager")
    at.number_input(key="cs_drop").set_value(goal.get("drop", 50.0))
    at.number_input(key="cs_speedup").set_value(goal.get("speedup", 0.0))
    at.number_input(key="cs_latency").set_value(goal.get("latency", 0.0))
    at.slider(key="cs_trials").set_value(2)
    at.slider(key="cs_epochs").set_value(1)
    at.select_slider(key="cs_widths").set_value((8, 32))
    at.multiselect(key="cs_precisions").set_value(["float32"]).run()
    assert not at.exception, [e.value for e in at.exception]


def test_the_page_without_a_teacher_asks_for_one(runs_dir):
    at = open_page()
    assert at.title[0].value == "Compress"
    assert any("distils from a teacher" in i.value for i in at.info)
    assert any("No search in this store yet" in c.value for c in at.caption)


@pytest.mark.slow
def test_a_goal_no_candidate_can_meet_ends_with_a_clear_message(runs_dir):
    stored_teacher(runs_dir)
    at = open_page()
    small_search(at, latency=0.0001)
    at.button(key="cs_start").click().run()
    snap = wait_for_job(300)
    assert snap.status == "finished", snap.message
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    warnings = [w.value for w in at.warning]
    assert any(w.startswith("No candidate can meet the latency budget of 0.0001 ms") for w in warnings), warnings
    assert Store(runs_dir).list_runs(kind="student") == []


@pytest.mark.slow  # a study of two trials trained in the page's worker
def test_a_search_from_the_page_fills_the_fronts_and_opens_deployment(runs_dir):
    teacher = stored_teacher(runs_dir)
    at = open_page()
    small_search(at)
    at.button(key="cs_start").click().run()
    snap = wait_for_job(300)
    assert snap.status == "finished", snap.message
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    study_id = snap.notes["compress"]["id"]
    assert at.selectbox(key="cs_view").value == study_id
    assert any(s.value.startswith("Chosen: trial") for s in at.success)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Latency"].endswith(" ms") and metrics["Size"].endswith(" MB")
    figs = chart_specs(at)
    names = {t["name"] for t in figs["cs_front_latency"]["data"]}
    assert {"teacher", "chosen student"} <= names and names & {"meets the goal", "trained, misses the goal"}
    star = next(t for t in figs["cs_front_latency"]["data"] if t["name"] == "teacher")
    assert trace_numbers(star["y"])[0] == pytest.approx(snap_reference(runs_dir, study_id)["val_acc"])
    table = at.dataframe[0].value
    assert list(table["number"]) == [0, 1] and set(table["state"]) <= {"complete", "pruned"}
    student = next(r for r in table.to_dict("records") if r["run_id"])
    assert Store(runs_dir).get_run(student["run_id"]).config.study_id == study_id
    [link] = [e.proto for e in at.get("page_link") if "Open in Deployment" in e.proto.label]
    assert link.page.endswith("compare") or "compare" in link.page
    query = dict(urllib.parse.parse_qsl(link.query_string))
    assert query["dep_tab"] == "Deployment" and query["dep_run"] == query["cmp_runs"]
    run_id = query["dep_run"].rsplit(" · ", 1)[1]  # the Compare page's label of the run: "label · kind · id"
    assert run_id in set(table["run_id"]) and query["teacher"] == teacher.id
    picked = table.set_index("run_id").loc[run_id]
    assert query["dep_precision"] == picked["precision"] and picked["number"] == chosen_number(at)
    # that the Compare page opens on that run's Deployment tab is checked in the browser test (AppTest
    # does not follow a page link)


def chosen_number(at: AppTest) -> int:
    return int(next(s.value for s in at.success if s.value.startswith("Chosen: trial")).split()[2].rstrip(","))


def snap_reference(runs_dir, study_id: str) -> dict:
    return read_study(Store(runs_dir), study_id).user_attrs["reference"]


@pytest.mark.slow
def test_a_stored_study_shows_its_pruned_trials_as_such(runs_dir):
    teacher = stored_teacher(runs_dir, width=128)
    store = Store(runs_dir)
    study_id = create_study(store, tiny_config(teacher.id, goal=Goal(max_drop=50.0, max_size_mb=SIZE_BUDGET_MB)))
    report = run_study(store, study_id, studio.load_data("digits"))
    over = [r for r in report.rows if r["pruned_by"] == "budget"]
    assert over
    at = open_page()
    assert at.selectbox(key="cs_view").value == study_id
    figs = chart_specs(at)
    for key in ("cs_front_latency", "cs_front_size"):
        traces = {t["name"]: t for t in figs[key]["data"]}
        marked = traces["over budget (not trained)"]
        xs, ys = trace_numbers(marked["x"]), trace_numbers(marked["y"])
        assert len(xs) == len(over) and marked["marker"]["symbol"] == "triangle-down"
        trained_y = [
            y for name, t in traces.items() if name.startswith(("meets", "trained")) for y in trace_numbers(t["y"])
        ]
        assert max(ys) < min(trained_y)  # drawn below every trained trial, not as an accuracy
        if key == "cs_front_size":
            assert sorted(xs) == pytest.approx(sorted(r["size_mb"] for r in over))
    table = at.dataframe[0].value
    why = table.set_index("number")["why"]
    for r in over:
        assert "not trained" in why[r["number"]]
