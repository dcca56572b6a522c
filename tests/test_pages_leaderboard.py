"""The Methods page (AppTest): a two-method leaderboard runs as a background job, then its table
and bar chart match mean ± std computed here from the stored runs; a method the models cannot
serve is refused before anything is stored; past leaderboards stay selectable."""

from __future__ import annotations

import json
import math

import pytest

from app_helpers import assert_clean, open_app, trace_numbers, wait_for_job
from kd_core.config import TrainConfig
from kd_core.store import Store
from kd_core.sweep.grid import cell_key, create_sweep
from kd_core.views.leaderboard import make_leaderboard

PAGE = "app_pages/methods.py"


def set_small(at, methods):
    at.multiselect(key="mt_methods").set_value(methods)
    at.number_input(key="mt_size").set_value(8)
    at.number_input(key="mt_seeds").set_value(2)
    at.slider(key="mt_epochs").set_value(1).run()


def hand_mean_std(xs):
    m = math.fsum(xs) / len(xs)
    return m, math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1))


@pytest.mark.slow
def test_methods_page_runs_a_leaderboard_and_shows_table_and_bars(populated):
    store = Store(populated["root"])
    at = open_app(PAGE)
    assert not at.error
    set_small(at, ["dkd"])
    assert any("6 runs: kd, dkd and the baseline" in c.value for c in at.caption)
    at.button(key="mt_start").click().run()
    assert_clean(at)
    snap = wait_for_job(240)
    assert snap.status == "finished", snap.message
    at.run()
    assert_clean(at)
    sweep_id = snap.notes["sweep"]["id"]
    assert at.selectbox(key="mt_view").value == sweep_id
    assert f"Finished: leaderboard {sweep_id}" in [m.value for m in at.success]  # not "sweep …"
    acc: dict = {}
    for r in store.list_runs(sweep_id=sweep_id, status="finished"):
        acc.setdefault(cell_key(r.config)[6] or "no KD (baseline)", []).append(r.metrics["test_acc"])
    assert {k: len(v) for k, v in acc.items()} == {"no KD (baseline)": 2, "kd": 2, "dkd": 2}
    bars = json.loads(next(c for c in at.get("plotly_chart") if c.key == "mt_bars").proto.spec)["data"][0]
    means, errs = trace_numbers(bars["y"]), trace_numbers(bars["error_y"]["array"])
    assert len(means) == len(errs) == 3
    for name, mean, err in zip(trace_numbers(bars["x"]), means, errs):
        m, s = hand_mean_std(acc[name])
        assert mean == pytest.approx(m, abs=1e-12) and err == pytest.approx(s, rel=1e-9, abs=1e-12)
    assert trace_numbers(bars["x"]) == ["no KD (baseline)", "kd", "dkd"]
    verdict = [m.value for m in (*at.success, *at.info)]
    assert any(v.startswith(("Best:", "Within noise", "No test yet")) for v in verdict)


def test_methods_page_refuses_at_on_an_mlp_before_storing(populated):
    store = Store(populated["root"])
    before = store.list_sweeps()
    at = open_app(PAGE)
    set_small(at, ["at"])
    at.button(key="mt_start").click().run()
    assert any("spatial" in e.value for e in at.error)
    assert store.list_sweeps() == before
    assert any("No leaderboard in this store yet" in c.value for c in at.caption)


@pytest.mark.slow
def test_methods_page_resumes_a_stopped_leaderboard(populated):
    store = Store(populated["root"])
    cfg = make_leaderboard(populated["teacher_id"], ("dist",), 2, "mlp", 8, train=TrainConfig(epochs=1, threads=1))
    sweep_id = create_sweep(store, cfg)
    at = open_app(PAGE)
    assert at.selectbox(key="mt_view").value == sweep_id
    assert any("6 runs of this leaderboard have not finished" in c.value for c in at.caption)
    at.button(key="mt_resume").click().run()
    assert_clean(at)
    snap = wait_for_job(240)
    assert snap.status == "finished", snap.message
    at.run()
    assert len(store.list_runs(sweep_id=sweep_id, status="finished")) == 6
    assert not [b for b in at.button if b.key == "mt_resume"]  # nothing left to resume
