"""AppTest: the Compare and Soft targets pages, on an empty run store and on a real one.

KD_RUNS points the sidebar at a store in a temporary folder; the filled store is
trained for real (see stores.compare_store and stores.add_scale_runs). The sidebar picks the newest teacher,
teacher A, whose student and baseline the Compare page selects by default.
"""

from __future__ import annotations

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from app_helpers import chart_specs, open_app, trace_numbers
from kd_core.store import Store
from kd_core.train import recorder
from stores import compare_config

COMPARE, SOFT = "app_pages/compare.py", "app_pages/soft_targets.py"


def page_links(at: AppTest) -> list[str]:
    """The url paths the page links to (e.g. "teacher" for app_pages/teacher.py)."""
    return [el.proto.page for el in at.get("page_link")]


# ---------------------------------------------------------------- empty store


@pytest.mark.parametrize("page", [COMPARE, SOFT])
def test_without_a_teacher_the_page_points_to_the_teacher_page(runs_dir, page):
    at = open_app(page)
    assert any("No teacher" in el.value for el in at.info)
    assert "teacher" in page_links(at)
    assert not at.get("plotly_chart") and not at.dataframe


@pytest.mark.slow
def test_with_a_teacher_but_no_students_compare_points_to_distill(runs_dir, digits):
    recorder.train_teacher(Store(runs_dir), compare_config("teacher", 16, 1), digits)
    at = open_app(COMPARE)
    assert any("No students" in el.value for el in at.info)
    assert "distill" in page_links(at)
    assert len(at.dataframe[0].value) == 1  # the teacher alone
    soft = open_app(SOFT)
    assert "distill" in page_links(soft)
    assert chart_specs(soft)["st_bars"]["data"][0]["name"].startswith("teacher")


# ---------------------------------------------------------------- Compare


def test_compare_defaults_to_the_latest_student_and_its_baseline(scaled_store):
    at = open_app(COMPARE)
    assert at.sidebar.selectbox(key="teacher_pick").value == scaled_store["teacher"]
    picked = at.multiselect(key="cmp_runs")
    # the newest finished student of this teacher outside a sweep, and the baseline trained beside it
    assert picked.value == [scaled_store["student_seed1"], scaled_store["baseline_seed1"]]
    table = at.dataframe[0].value
    assert table["id"].tolist() == [
        scaled_store["teacher"],
        scaled_store["student_seed1"],
        scaled_store["baseline_seed1"],
    ]
    assert table["title"].tolist()[1:] == [
        "student · mlp 8 · KD T=4 λ=0.9 · seed 1",
        "baseline · mlp 8 · no KD · seed 1",
    ]
    figs = chart_specs(at)
    assert set(figs) == {
        "cmp_bar_acc",
        "cmp_bar_size",
        "cmp_bar_latency",
        "cmp_pareto_size",
        "cmp_pareto_latency",
        "cmp_cm_teacher",
        "cmp_cm_student_fig",
        "cmp_per_class",
    }
    bars = figs["cmp_bar_acc"]["data"]
    assert sorted(x for t in bars for x in t["x"]) == ["baseline", "student", "teacher"]  # short names, no ids
    front = [t for t in figs["cmp_pareto_size"]["data"] if t.get("name") == "Pareto front"]
    assert len(front) == 1
    plotted = sum(
        len(trace_numbers(t["x"]))
        for t in figs["cmp_pareto_size"]["data"]
        if t.get("name") in ("teacher", "student", "baseline")
    )
    assert plotted == 9  # the finished runs of digits: 2 teachers, B's student, A's 6 (no stopped, no failed)
    assert at.selectbox(key="cmp_cm_student").value == scaled_store["student_seed1"]  # the student, not the baseline
    assert figs["cmp_cm_student_fig"]["layout"]["title"]["text"].startswith("Student: ")


@pytest.mark.slow
def test_compare_key_columns_come_first(scaled_store):
    at = open_app(COMPARE)
    order = list(at.dataframe[0].proto.column_order)
    assert order[:4] == ["title", "test_acc", "acc_vs_teacher", "images_vs_teacher"]
    assert order.index("id") == len(order) - 1


@pytest.mark.slow
def test_compare_picker_filters_by_kind_sweep_teacher_and_status(scaled_store):
    at = open_app(COMPARE)
    f = scaled_store

    def offered() -> list[str]:  # the picker's options: their titles
        return at.multiselect(key="cmp_runs").options

    assert len(offered()) == 6  # A's finished students and baselines: seed 0 pair, seed 1 pair, T=2, the sweep's
    assert not any("stopped" in o or "failed" in o for o in offered())
    at.toggle(key="cmp_all").set_value(True).run()
    assert sum("(stopped)" in o for o in offered()) == 1 and sum("(failed)" in o for o in offered()) == 1
    at.toggle(key="cmp_all").set_value(False).run()
    at.selectbox(key="cmp_sweep").set_value("sw-test").run()
    assert len(offered()) == 3  # the sweep's student, plus the two picked (picks stay whatever the filters)
    at.selectbox(key="cmp_sweep").set_value("none").run()
    assert len(offered()) == 5
    at.pills(key="cmp_kinds").set_value(["baseline"]).run()
    assert {o.split(" · ")[0] for o in offered()} == {"baseline", "student"}  # the picked student stays
    at.toggle(key="cmp_mine").set_value(False).run()
    at.pills(key="cmp_kinds").set_value(["student"]).run()
    assert len(offered()) == 3 + 1 + 1  # A's 3 students outside sweeps, B's, and the picked baseline
    assert len(set(offered())) == len(offered())  # two alike (A's and B's seed 0) told apart by their ids
    assert at.multiselect(key="cmp_runs").value == [f["student_seed1"], f["baseline_seed1"]]
    assert not at.exception, [e.value for e in at.exception]


@pytest.mark.slow
def test_compare_headline_states_images_seeds_and_noise(scaled_store):
    at = open_app(COMPARE)
    text = " ".join(m.value for m in at.markdown)
    store = scaled_store["store"]
    s1, s0 = store.get_run(scaled_store["student_seed1"]), store.get_run(scaled_store["student"])
    b1, b0 = store.get_run(scaled_store["baseline_seed1"]), store.get_run(scaled_store["baseline"])
    gain = np.mean([s1.metrics["test_acc"] - b1.metrics["test_acc"], s0.metrics["test_acc"] - b0.metrics["test_acc"]])
    images = round(gain * 360)
    assert f"against its no-KD baseline: {gain:+.4f} ({images:+d} of 360 test images) · 2 seeds ·" in text
    assert "against the teacher:" in text and "· 1 seed ·" in text
    assert ("within noise" in text) or ("beyond noise" in text)


@pytest.mark.slow
def test_compare_follows_the_selection(scaled_store):
    at = open_app(COMPARE)
    at.toggle(key="cmp_mine").set_value(False).run()
    at.multiselect(key="cmp_runs").set_value([scaled_store["other_student"]]).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert table["id"].tolist() == [scaled_store["teacher"], scaled_store["other_student"]]
    assert table["agreement"].isna().tolist() == [False, True]  # a student of another teacher
    assert at.selectbox(key="cmp_cm_student").value == scaled_store["other_student"]

    at.multiselect(key="cmp_runs").set_value([]).run()
    assert not at.exception
    assert any("Pick one or more" in el.value for el in at.info)
    assert len(at.dataframe[0].value) == 1
    assert "cmp_cm_teacher" not in chart_specs(at)  # nothing to set beside the teacher


@pytest.mark.slow
def test_a_failed_run_picked_is_named_not_silently_dropped(scaled_store):
    at = open_app(COMPARE)
    at.toggle(key="cmp_all").set_value(True).run()
    at.multiselect(key="cmp_runs").set_value([scaled_store["failed"], scaled_store["stopped"]]).run()
    assert not at.exception
    assert any(
        "Not compared: student · mlp 8 · KD T=4 λ=0.9 · seed 0 (failed) — diverged" in c.value for c in at.caption
    )
    assert at.dataframe[0].value["id"].tolist() == [scaled_store["teacher"], scaled_store["stopped"]]


@pytest.mark.slow
def test_another_teacher_brings_its_own_students(scaled_store):
    at = open_app(COMPARE)
    at.sidebar.selectbox(key="teacher_pick").set_value(scaled_store["other_teacher"]).run()
    assert not at.exception
    assert at.multiselect(key="cmp_runs").value == [scaled_store["other_student"]]  # it has no baseline
    assert at.dataframe[0].value["id"].tolist() == [scaled_store["other_teacher"], scaled_store["other_student"]]


# ---------------------------------------------------------------- Soft targets


def entropies(at: AppTest) -> list[float]:
    return [float(m.value.split()[0]) for m in at.metric]


def test_soft_targets_show_teacher_and_student(scaled_store, digits):
    at = open_app(SOFT)
    assert at.selectbox(key="st_student").value == scaled_store["student_seed1"]  # as Compare's default
    assert at.slider(key="st_T").value == 4.0 and at.number_input(key="st_index").value == 0
    assert len(at.get("image")) == 1
    bars = chart_specs(at)["st_bars"]["data"]
    assert [t["name"].split(":")[0] for t in bars] == ["teacher", "student"]
    for trace in bars:
        assert len(trace_numbers(trace["y"])) == 10 and sum(trace_numbers(trace["y"])) == pytest.approx(1.0, abs=1e-5)
    assert len(entropies(at)) == 2

    at.slider(key="st_T").set_value(1.0).run()
    cold = entropies(at)
    at.slider(key="st_T").set_value(20.0).run()
    hot = entropies(at)
    assert not at.exception
    assert all(h > c for h, c in zip(hot, cold))  # a higher T is softer
    assert all(h <= 2.302586 for h in hot)  # never above ln 10


@pytest.mark.slow
def test_soft_targets_image_picker(scaled_store, digits):
    at = open_app(SOFT)
    at.number_input(key="st_index").set_value(7).run()
    label = str(digits.classes[int(digits.test_y[7])])
    assert all(f"{label} ★" in t["x"] for t in chart_specs(at)["st_bars"]["data"])  # the true class is starred
    seen = set()
    for _ in range(5):  # 5 random draws of 360 all being 7: ~0
        at.button(key="st_random").click().run()
        assert not at.exception
        seen.add(at.number_input(key="st_index").value)
    assert seen - {7} and all(0 <= i < len(digits.test_y) for i in seen)
