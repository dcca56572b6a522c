"""Quick start: the few-labels and all-labels regimes over seeds, the teacher reused on a repeat,
and the Overview's gain statement checked against the stored runs with an independent t-test."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from scipy import stats
from streamlit.testing.v1 import AppTest

from app_helpers import APP
from kd_core.config import experiment_key
from kd_core.jobs import JobManager
from kd_core.store import Store
from kd_core.views import quick, studio


def run_quick(manager: JobManager, store: Store, data, seeds: int) -> dict:
    job = quick.start_quick(manager, store, data, device="cpu", threads=1, seeds=seeds)
    deadline = time.monotonic() + 600
    while job.live and time.monotonic() < deadline:
        time.sleep(0.2)
    snap = job.snapshot()
    assert snap.status == "finished", snap.message
    return snap


def stored_pairs(store: Store, run_ids: list[str]) -> dict:
    """{regime: (student accs, baseline accs)} paired by seed, read straight from the store."""
    runs = [store.get_run(i) for i in run_ids]
    out = {}
    for regime, budgeted in (("few", True), ("all", False)):
        by = {"student": {}, "baseline": {}}
        for r in runs:
            if r.kind in by and (r.config.labels.per_class > 0) == budgeted:
                by[r.kind][r.config.train.seed] = r.metrics["test_acc"]
        seeds = sorted(by["student"])
        assert seeds == sorted(by["baseline"])
        out[regime] = (np.array([by["student"][s] for s in seeds]), np.array([by["baseline"][s] for s in seeds]))
    return out


@pytest.mark.slow
def test_a_second_quick_start_reuses_the_teacher_and_replicates_with_new_seeds(tmp_path, digits):
    store, manager = Store(tmp_path / "runs"), JobManager()
    try:
        first = run_quick(manager, store, digits, seeds=2)
        second = run_quick(manager, store, digits, seeds=2)
    finally:
        manager.shutdown()
    assert [o["kind"] for o in first.outcomes] == ["teacher"] + ["student", "baseline"] * 4
    assert [o["kind"] for o in second.outcomes] == ["student", "baseline"] * 4
    teachers = studio.teachers(store, digits)
    assert [t["id"] for t in teachers] == [first.notes["teacher_id"]] == [second.notes["teacher_id"]]
    assert (first.notes["teacher_reused"], second.notes["teacher_reused"]) == (False, True)
    assert (first.notes["seeds"], second.notes["seeds"]) == ([0, 1], [2, 3])
    for r in store.list_runs(kind="student"):
        labels = r.config.labels
        assert labels.per_class in (0, quick.QUICK_LABELS)
        if labels.per_class:  # each seed draws its own labelled subset
            assert labels.label_seed == r.config.train.seed
            assert r.metrics["labels"]["labelled"] == 10 * quick.QUICK_LABELS


def test_quick_start_teacher_key_ignores_the_machine_but_not_what_is_learned():
    t, _ = quick.quick_configs("digits", device="cpu", threads=1)
    same_elsewhere, _ = quick.quick_configs("digits", device="auto", threads=0)
    other_seed = studio.make_config(
        "teacher", "digits", "data", 32, "mlp", 512, 2, quick.QUICK_EPOCHS, 1e-3, 64, seed=1
    )
    assert experiment_key(t.to_dict()) == experiment_key(same_elsewhere.to_dict())
    assert experiment_key(t.to_dict()) != experiment_key(other_seed.to_dict())
    assert t.model == other_seed.model  # the preset this test assumes
    assert experiment_key(t.to_dict(), drop=("seed",)) == experiment_key(other_seed.to_dict(), drop=("seed",))


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def p_words(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


@pytest.mark.slow
def test_overview_quick_start_states_a_gain_that_matches_the_stored_runs(tmp_path, monkeypatch):
    """Press Quick start on the Overview, wait, and read the statements: every number in them
    (means, gain, seeds, p) is recomputed here from the store with scipy's paired t-test."""
    monkeypatch.setenv("KD_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("KD_DATA", str(tmp_path / "data"))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.button(key="quick_start").click().run()
    from ui import state

    manager = state.job_manager()
    deadline = time.monotonic() + 900
    while manager.current() is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    snap = manager.latest().snapshot()
    assert snap.status == "finished", snap.message
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    text = " ".join(m.value for m in at.markdown)
    pairs = stored_pairs(Store(tmp_path / "runs"), [o["run_id"] for o in snap.outcomes])
    for regime in ("few", "all"):
        s, b = pairs[regime]
        assert len(s) == quick.QUICK_SEEDS
        p = stats.ttest_rel(s, b).pvalue
        gain = f"{100 * (s.mean() - b.mean()):+.1f} points"
        for piece in (pct(s.mean()), pct(b.mean()), gain, p_words(p), f"{len(s)} seeds"):
            assert piece in text, (regime, piece, text)
    s, b = pairs["few"]
    # the regime Quick start is for: a clear, significant gain with few labels
    assert s.mean() - b.mean() > 0.03 and stats.ttest_rel(s, b).pvalue < 0.05
    gains = {m.label: m.value for m in at.metric if m.label.startswith("Gain from distillation")}
    assert (
        gains[f"Gain from distillation · {10 * quick.QUICK_LABELS} labels"]
        == f"{100 * (s.mean() - b.mean()):+.1f} points"
    )
    assert re.search(r"With all [\d,]+ labels", text)
