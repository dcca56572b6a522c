"""AppTest: the Runs and Sweep pages, on an empty store and on a store with a finished sweep.

The pages run against real run stores in temporary folders (KD_RUNS); sweeps started
from the Sweep page run in kd_core's real worker thread, on digits, for one epoch.
"""
from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import pytest
from streamlit.runtime.state.common import user_key_from_element_id
from streamlit.testing.v1 import AppTest

from experiments_fixtures import N_RUNS, populated, template_store  # noqa: F401  (fixtures)
from kd_core import studio, sweep_view
from kd_core.store import Store
from kd_core.sweep import pending
from test_pages import APP, wait_for_job


@pytest.fixture
def empty(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("KD_DATA", str(tmp_path / "data"))
    return tmp_path / "runs"


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page(page).run()
    assert_clean(at)
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def charts(at: AppTest) -> dict[str, go.Figure]:
    """The page's Plotly figures by key."""
    return {user_key_from_element_id(c.proto.id): pio.from_json(c.proto.spec) for c in at.get("plotly_chart")}


def numbers(values) -> list[float]:
    """A trace's numbers; plotly's JSON packs arrays as {"dtype", "bdata": base64}."""
    if isinstance(values, dict) and "bdata" in values:
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"]).tolist()
    return list(values)


def heat_text(fig: go.Figure) -> list[str]:
    return [t for row in fig.data[0].text for t in row]


def metric_values(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


# ---------------------------------------------------------------- empty store


def test_runs_page_on_an_empty_store(empty):
    at = open_page("pages/runs.py")
    assert at.title[0].value == "Runs"
    assert any("No runs" in i.value for i in at.info)
    assert not at.dataframe


def test_sweep_page_on_an_empty_store_asks_for_a_teacher(empty):
    at = open_page("pages/sweep.py")
    assert at.title[0].value == "Sweep"
    assert any("needs a teacher" in i.value or "distils from a teacher" in i.value for i in at.info)
    assert any("No sweep" in c.value for c in at.caption)


def test_sweep_page_without_measurements_says_so(empty, template_store):
    """An uploaded teacher has no training speed to go by: the estimate says there is none yet."""
    store = Store(empty)
    data = studio.load_data("digits")
    weights = Store(template_store["root"]).weights_path(template_store["teacher_id"]).read_bytes()
    studio.import_checkpoint(store, weights, data, "teacher.pt")
    at = open_page("pages/sweep.py")
    assert metric_values(at)["Estimated time"] == "no measurement yet"
    assert metric_values(at)["Runs"] == "42"      # 3 T × 2 λ × 2 sizes × 3 seeds + 2 × 3 baselines


# ---------------------------------------------------------------- Runs


def test_runs_page_lists_filters_and_groups(populated):
    store = Store(populated["root"])
    at = open_page("pages/runs.py")
    table = at.dataframe[0].value
    assert len(table) == N_RUNS and set(table["id"]) == {r["id"] for r in store.list_runs()}
    for key in ("runs_f_dataset", "runs_f_teacher", "runs_f_kind", "runs_f_status", "runs_f_sweep"):
        assert at.multiselect(key=key) is not None
    at.multiselect(key="runs_f_kind").set_value(["student"]).run()
    assert_clean(at)
    assert set(at.dataframe[0].value["kind"]) == {"student"} and len(at.dataframe[0].value) == 8
    at.toggle(key="runs_group").set_value(True).run()
    assert_clean(at)
    groups = at.dataframe[0].value
    assert len(groups) == 4 and set(groups["n"]) == {2}
    assert all("±" in t and "(n=2)" in t for t in groups["test_acc"])


def test_runs_page_picked_runs_get_curves_and_commands(populated):
    store = Store(populated["root"])
    at = open_page("pages/runs.py")
    ids = at.dataframe[0].value["id"].tolist()
    at.session_state["runs_table_0"] = {"selection": {"rows": [0, 1], "columns": [], "cells": []}}
    at.run()
    assert_clean(at)
    fig = charts(at)["runs_curves"]
    assert len(fig.data) == 4      # val acc and loss of each of the two runs
    assert {t.name.split(" · ")[0] for t in fig.data} == set(ids[:2])
    assert [numbers(t.y) for t in fig.data[::2]] == [[e["val_acc"] for e in store.epochs(i)] for i in ids[:2]]
    codes = [c.value for c in at.code]
    assert len(codes) == 2 and all(c.startswith("python -m kd_core distill") for c in codes)
    from kd_core.runs_table import command_for
    assert codes == [command_for(store.get_run(i), store) for i in ids[:2]]


def test_runs_page_deletes_picked_runs_and_their_files(populated):
    store = Store(populated["root"])
    at = open_page("pages/runs.py")
    victim = at.dataframe[0].value["id"].iloc[2]
    weights = store.weights_path(victim)
    assert weights.is_file()
    at.session_state["runs_table_0"] = {"selection": {"rows": [2], "columns": [], "cells": []}}
    at.run()
    assert at.button(key="runs_delete").disabled    # not before it is confirmed
    at.checkbox(key="runs_confirm_0").check().run()
    at.button(key="runs_delete").click().run()
    assert_clean(at)
    assert store.get_run(victim) is None and not weights.exists() and store.epochs(victim) == []
    assert len(store.list_runs()) == N_RUNS - 1
    assert any("Deleted 1 run" in s.value for s in at.success)
    assert len(at.dataframe[0].value) == N_RUNS - 1 and not at.code      # the selection is cleared


def test_runs_page_csv_is_the_filtered_store(populated, monkeypatch):
    """The bytes the Download CSV button serves (captured from AppTest's media storage)."""
    import streamlit.testing.v1.app_test as app_test
    stores = []

    class Capture(app_test.MemoryMediaFileStorage):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            stores.append(self)
    monkeypatch.setattr(app_test, "MemoryMediaFileStorage", Capture)
    store = Store(populated["root"])
    at = open_page("pages/runs.py")
    at.multiselect(key="runs_f_kind").set_value(["baseline", "teacher"]).run()
    [button] = [b for b in at.get("download_button") if "runs_csv" in b.proto.id]
    file_id = button.proto.url.rsplit("/", 1)[-1]
    csv = pd.read_csv(io.BytesIO(stores[-1].get_file(file_id).content))
    expected = [r for r in store.list_runs() if r["kind"] in ("baseline", "teacher")]
    assert csv["id"].tolist() == [r["id"] for r in expected]
    for row, r in zip(csv.to_dict("records"), expected):
        assert row["kind"] == r["kind"] and row["status"] == r["status"]
        assert row["test_acc"] == pytest.approx(r["metrics"]["test_acc"])
        assert row["params"] == r["metrics"]["params"]


# ---------------------------------------------------------------- Sweep


def test_sweep_page_shows_the_past_sweep_as_heatmaps(populated):
    at = open_page("pages/sweep.py")
    for key in ("sw_T", "sw_lam", "sw_sizes"):
        assert at.text_input(key=key) is not None
    assert at.number_input(key="sw_seeds").value == 3
    assert at.button(key="sw_start").label == "Start sweep"
    values = metric_values(at)
    assert values["Runs"] == "42" and values["Estimated time"].startswith("about ")
    assert at.selectbox(key="sw_view").value == populated["sweep_id"]
    figs = charts(at)
    acc, gain = figs["sw_acc_16"], figs["sw_gain_16"]
    assert all("±" in t and "(n=2)" in t for t in heat_text(acc))
    assert all(t.startswith(("+", "-")) and "(n=2)" in t for t in heat_text(gain))
    assert any(tr.name == "best mean" for tr in acc.data) and acc.layout.shapes
    assert "paired t-test" in " ".join(c.value for c in at.caption)
    [pvalues] = [d.value for d in at.dataframe]
    assert len(pvalues) == 4 and "p" in pvalues.columns


def test_sweep_page_counts_runs_as_the_axes_change(populated):
    at = open_page("pages/sweep.py")
    at.text_input(key="sw_T").set_value("1, 4").run()
    at.text_input(key="sw_sizes").set_value("16").run()
    at.number_input(key="sw_seeds").set_value(2).run()
    assert metric_values(at)["Runs"] == "10"
    at.text_input(key="sw_lam").set_value("0.5, x").run()
    assert any("'x' is not a number" in e.value for e in at.error)
    assert at.button(key="sw_start").disabled


def test_sweep_page_ray_missing_is_explained(populated, monkeypatch):
    monkeypatch.setattr(sweep_view, "ray_available", lambda: False)
    at = open_page("pages/sweep.py")
    at.radio(key="sw_backend").set_value("ray").run()
    assert_clean(at)
    assert any("requirements-ray.txt" in w.value for w in at.warning)
    assert at.button(key="sw_start").disabled


def test_sweep_page_runs_a_sweep_and_fills_the_grid(populated):
    store = Store(populated["root"])
    at = open_page("pages/sweep.py")
    at.text_input(key="sw_T").set_value("2, 8")
    at.text_input(key="sw_lam").set_value("0.3")
    at.text_input(key="sw_sizes").set_value("8")
    at.number_input(key="sw_seeds").set_value(2)
    at.slider(key="sw_epochs").set_value(1).run()
    assert metric_values(at)["Runs"] == "6"
    at.button(key="sw_start").click().run()
    assert_clean(at)
    snap = wait_for_job()
    assert snap["status"] == "finished" and snap["notes"]["sweep"]["done"] == 6
    at.run()
    assert_clean(at)
    new_id = snap["notes"]["sweep"]["id"]
    assert at.selectbox(key="sw_view").value == new_id
    assert any(f"Finished: sweep {new_id}" in s.value for s in at.success)
    texts = heat_text(charts(at)["sw_acc_8"])
    assert len(texts) == 2 and all("(n=2)" in t for t in texts)
    assert len(store.list_runs(sweep_id=new_id, status="finished")) == 6
    # with that sweep's results now first on the page, a second sweep starts and is shown instead
    at.text_input(key="sw_T").set_value("3").run()
    at.number_input(key="sw_seeds").set_value(1).run()
    at.button(key="sw_start").click().run()
    assert_clean(at)
    second = wait_for_job()["notes"]["sweep"]["id"]
    at.run()
    assert_clean(at)
    assert second != new_id and at.selectbox(key="sw_view").value == second
    assert len(heat_text(charts(at)["sw_acc_8"])) == 1


def test_sweep_page_resumes_without_repeating_finished_cells(populated):
    store = Store(populated["root"])
    sweep_id = populated["sweep_id"]
    runs = store.list_runs(sweep_id=sweep_id)
    gone = [runs[0]["id"], runs[3]["id"]]
    for run_id in gone:
        store.delete_run(run_id)
    kept = {r["id"] for r in store.list_runs(sweep_id=sweep_id)}
    at = open_page("pages/sweep.py")
    assert at.selectbox(key="sw_resume_pick").value == sweep_id
    assert any("2 runs left" in c.value for c in at.caption)
    at.button(key="sw_resume").click().run()
    assert_clean(at)
    snap = wait_for_job()
    assert snap["status"] == "finished"
    note = snap["notes"]["sweep"]
    assert (note["skipped"], note["done"], note["total"]) == (8, 10, 10)
    after = store.list_runs(sweep_id=sweep_id)
    assert len(after) == N_RUNS - 1 and kept <= {r["id"] for r in after}
    assert pending(store, sweep_id) == []
    at.run()
    assert_clean(at)
    assert "Resume a sweep" not in [h.value for h in at.subheader]    # nothing left to resume


def test_gain_heatmap_marks_significant_cells_and_the_best():
    from ui import experiment_charts
    idx, cols = pd.Index([1.0, 4.0], name="temperature"), pd.Index([0.5, 0.9], name="alpha")

    def grid(values):
        return pd.DataFrame(values, index=idx, columns=cols)
    g = {"gain_mean": grid([[0.02, float("nan")], [-0.01, 0.0]]), "gain_std": grid([[0.004, float("nan")],
                                                                                    [0.02, float("nan")]]),
         "gain_n": grid([[3, 0], [3, 1]]), "significant": grid([[True, None], [False, None]]),
         "mean": grid([[0.95, float("nan")], [0.93, 0.9]]), "std": grid([[0.01, float("nan")], [0.02, float("nan")]]),
         "n": grid([[3, 0], [3, 1]]), "baseline": {"n": 3, "text": "0.9300 ± 0.0100 (n=3)"},
         "best": {"temperature": 1.0, "alpha": 0.5}}
    gain = experiment_charts.sweep_gain_heatmap(g, "mlp 16")
    assert [list(r) for r in gain.data[0].text] == [["+0.0200 ± 0.0040<br>(n=3) *", "—"],
                                                    ["-0.0100 ± 0.0200<br>(n=3)", "+0.0000<br>(n=1)"]]
    assert "baseline 0.9300 ± 0.0100 (n=3)" in gain.layout.title.text
    acc = experiment_charts.sweep_accuracy_heatmap(g, "mlp 16")
    assert acc.layout.shapes[0].x0 == -0.5 and acc.layout.shapes[0].y0 == -0.5     # the best: T=1, λ=0.5
    assert [t.name for t in acc.data] == [None, "best mean"]
