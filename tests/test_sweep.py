"""Sweeps: planning, resuming, the result tables and the time estimate, and the CLI.

The result tables are checked on a store written by hand, against means, stds
and paired t statistics computed here; the tiny real sweeps (digits, one epoch)
check the running, the resume and the command line end to end.
"""

import json
import math
import re
import sqlite3
import sys
import threading
import time

import pytest
from scipy import stats as sps

from helpers import hand_bh
from kd_core.cli import main
from kd_core.config import DistillConfig, ModelSpec, RunConfig, TrainConfig
from kd_core.errors import ConfigError, KDError
from kd_core.jobs import JobManager
from kd_core.store import Store
from kd_core.sweep.grid import SweepConfig, cell_key, create_sweep, load_sweep, pending, plan
from kd_core.sweep.results import (
    STEP_FLOOR_S,
    Estimate,
    PlannedRun,
    Speed,
    baseline_results,
    estimate,
    plan_seconds,
    scaled_step,
    sweep_grids,
    sweep_results,
)
from kd_core.sweep.runner import run_sweep, start_sweep
from stores import tiny_sweep


def grid(**kw) -> SweepConfig:
    base = dict(temperatures=(1.0, 4.0), alphas=(0.5, 0.9), sizes=(16, 32), seeds=(0, 1, 2), teacher_id="t")
    return SweepConfig(**{**base, **kw})


# ---------------------------------------------------------------- planning


def test_plan_has_one_baseline_per_size_and_seed_before_its_cells():
    cells = plan(grid(), "sw1")
    keys = [c.key for c in cells]
    assert len(cells) == 3 * 2 * (1 + 2 * 2) and len(set(keys)) == len(keys)
    baselines = [k for k in keys if k[0] == "baseline"]
    assert sorted((k[1], k[2]) for k in baselines) == sorted((s, e) for s in (16, 32) for e in (0, 1, 2))
    assert all(k[3] is None and k[4] is None and k[6] is None for k in baselines)
    for i, (kind, size, seed, _, _, budget, method) in enumerate(keys):
        if kind == "student":
            assert ("baseline", size, seed, None, None, budget, None) in keys[:i] and method == "kd"
    assert {c.config.sweep_id for c in cells} == {"sw1"}
    assert {c.config.teacher_id for c in cells if c.config.kind == "student"} == {"t"}
    assert [k[2] for k in keys][:10] == [0] * 10  # seed by seed: the whole grid gets n=1 first


@pytest.mark.parametrize(
    "bad",
    [
        dict(alphas=()),
        dict(alphas=(0.5, 1.5)),
        dict(temperatures=(0.0,)),
        dict(sizes=(16, 16)),
        dict(teacher_id=""),
        dict(sizes=(0,)),
    ],
)
def test_a_bad_grid_is_refused_before_anything_runs(tmp_path, bad):
    store = Store(tmp_path)
    with pytest.raises(ConfigError):
        create_sweep(store, grid(**bad))
    assert store.list_sweeps() == []


def test_a_saved_sweep_loads_back_equal(tmp_path):
    store = Store(tmp_path)
    sweep = grid(train=TrainConfig(epochs=3, lr=0.01, seed=5), family="cnn", depth=1)
    sweep_id = create_sweep(store, sweep)
    assert load_sweep(store, sweep_id) == sweep
    assert [s["id"] for s in store.list_sweeps()] == [sweep_id]
    with pytest.raises(KDError, match="no sweep"):
        load_sweep(store, "sw-nope")


def test_without_ray_the_ray_backend_says_how_to_install_it(monkeypatch):
    from kd_core.sweep.ray_executor import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(KDError, match=re.escape("requirements-ray.txt")):
        import_ray()


# ---------------------------------------------------------------- results from a hand-written store


def fake_run(store, sweep_id, kind, seed, value, t=None, a=None, size=16, status="finished", **metrics):
    cfg = RunConfig(
        kind=kind,
        model=ModelSpec("mlp", size, 1),
        train=TrainConfig(seed=seed),
        sweep_id=sweep_id,
        distill=DistillConfig(t, a) if kind == "student" else None,
    )
    run_id = store.create_run(cfg)
    store.finish_run(run_id, status, {"best_val_acc": value, **metrics})
    return run_id


def hand_mean_std(xs):
    mean = sum(xs) / len(xs)
    return mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


@pytest.fixture
def filled(tmp_path):
    store = Store(tmp_path)
    sweep_id = create_sweep(store, grid(sizes=(16,), seeds=(0, 1, 2)))
    base = {0: 0.80, 1: 0.82, 2: 0.79}
    t1 = {0: 0.85, 1: 0.86, 2: 0.83}
    t4 = {0: 0.81, 1: 0.80}
    for seed, v in base.items():
        fake_run(store, sweep_id, "baseline", seed, v)
    fake_run(store, sweep_id, "student", 0, 0.10, 1.0, 0.5, status="stopped")  # superseded, not a result
    for seed, v in t1.items():
        fake_run(store, sweep_id, "student", seed, v, 1.0, 0.5)
    for seed, v in t4.items():
        fake_run(store, sweep_id, "student", seed, v, 4.0, 0.5)
    fake_run(store, sweep_id, "student", 2, 0.99, 4.0, 0.5, status="failed")
    fake_run(store, "another-sweep", "student", 0, 0.99, 4.0, 0.9)
    return store, sweep_id, base, t1, t4


def test_results_are_mean_std_and_paired_gain_over_seeds(filled):
    store, sweep_id, base, t1, t4 = filled
    df = sweep_results(store, sweep_id).set_index(["temperature", "alpha"])
    for t, values in ((1.0, t1), (4.0, t4)):
        row = df.loc[(t, 0.5)]
        mean, std = hand_mean_std(list(values.values()))
        d = [values[s] - base[s] for s in sorted(values)]
        d_mean, d_std = hand_mean_std(d)
        t_stat = d_mean / (d_std / math.sqrt(len(d)))
        assert (row["n"], row["gain_n"]) == (len(values), len(values))
        assert row["mean"] == pytest.approx(mean, abs=1e-12) and row["std"] == pytest.approx(std, abs=1e-12)
        assert row["gain_mean"] == pytest.approx(d_mean, abs=1e-12)
        assert row["gain_std"] == pytest.approx(d_std, abs=1e-12)
        assert row["t"] == pytest.approx(t_stat, rel=1e-9)
        assert row["p"] == pytest.approx(2 * sps.t.sf(abs(t_stat), len(d) - 1), rel=1e-9)
        assert row["seeds"] == sorted(values)
    b_mean, b_std = hand_mean_std(list(base.values()))
    assert df.loc[(1.0, 0.5), "baseline_mean"] == pytest.approx(b_mean)
    assert df.loc[(1.0, 0.5), "baseline_std"] == pytest.approx(b_std)
    assert df.loc[(1.0, 0.5), "text"] == "{:.4f} ± {:.4f} (n=3)".format(*hand_mean_std(list(t1.values())))
    assert df.loc[(1.0, 0.5), "significant"] is bool(df.loc[(1.0, 0.5), "p"] < 0.05)
    assert df["best"].tolist() == [True, False, False, False]  # T=1 λ=0.5 has the highest mean
    assert df["best_marked"].tolist() == [True, False, False, False]  # and it beats the baseline
    empty = df.loc[(4.0, 0.9)]
    assert empty["n"] == 0 and math.isnan(empty["mean"]) and empty["significant"] is None
    assert baseline_results(store, sweep_id).iloc[0][["n", "mean"]].tolist() == [3, pytest.approx(b_mean)]


def test_grids_are_temperature_by_lambda_per_size(filled):
    store, sweep_id, *_ = filled
    grids = sweep_grids(store, sweep_id)
    assert list(grids) == [16]
    g = grids[16]
    assert g["mean"].index.tolist() == [1.0, 4.0] and g["mean"].columns.tolist() == [0.5, 0.9]
    assert g["n"].loc[1.0, 0.5] == 3 and g["n"].loc[4.0, 0.5] == 2 and g["n"].loc[4.0, 0.9] == 0
    assert g["gain_mean"].loc[4.0, 0.5] == pytest.approx((0.81 - 0.80 + 0.80 - 0.82) / 2)
    assert [(b["temperature"], b["alpha"]) for b in g["best"]] == [(1.0, 0.5)]
    assert g["baseline"]["n"] == 3


def test_ties_are_all_best_and_only_a_gain_over_the_baseline_is_marked(tmp_path):
    """Every cell at the highest mean is best; none is marked while that mean does not beat the
    baseline (the digits validation grid: 8 cells tie with the baseline at 142/144)."""
    from kd_core.views.sweep_view import best_text

    store = Store(tmp_path)
    sweep_id = create_sweep(store, grid(sizes=(16,), seeds=(0, 1)))
    base = {0: 0.80, 1: 0.82}
    for seed, v in base.items():
        fake_run(store, sweep_id, "baseline", seed, v)
    for t, a, d in ((1.0, 0.5, 0.0), (1.0, 0.9, 0.0), (4.0, 0.5, -0.01), (4.0, 0.9, -0.02)):
        for seed, v in base.items():
            fake_run(store, sweep_id, "student", seed, v + d, t, a)
    df = sweep_results(store, sweep_id)
    assert df["best"].tolist() == [True, True, False, False] and not df["best_marked"].any()
    g = sweep_grids(store, sweep_id)[16]
    assert g["best"] == [] and len(g["top"]) == 2 and g["beats"] == 0
    words = best_text(g, "mlp 16")
    assert "no cell beats its baseline" in words and "T=1 λ=0.5, T=1 λ=0.9 (2 cells tie)" in words
    # two cells tie above the baseline: both are marked
    for t, a in ((4.0, 0.5), (4.0, 0.9)):
        for seed, v in base.items():
            fake_run(store, sweep_id, "student", seed, v + 0.03 + 0.01 * seed, t, a)
    df = sweep_results(store, sweep_id)
    assert df["best_marked"].tolist() == [False, False, True, True] == df["best"].tolist()
    g = sweep_grids(store, sweep_id)[16]
    assert [(b["temperature"], b["alpha"]) for b in g["best"]] == [(4.0, 0.5), (4.0, 0.9)] and g["beats"] == 2
    assert best_text(g, "mlp 16").startswith("Best for mlp 16: 2 cells tie at the highest mean, 0.8450")


def test_benjamini_hochberg_matches_the_step_up_written_here():
    from kd_core.sweep.results import bh_adjust

    ps = [0.001, 0.2, float("nan"), 0.03, 0.04, 0.5, 0.012, float("nan"), 0.049]
    got = bh_adjust(ps)
    tested = [p for p in ps if p == p]
    want = iter(hand_bh(tested))
    for p, adj in zip(ps, got):
        if p != p:
            assert math.isnan(adj)  # no test: not in the family
        else:
            assert adj == pytest.approx(next(want), abs=1e-12)
    assert math.isnan(bh_adjust([float("nan")])[0]) and len(bh_adjust([])) == 0


def test_multiple_tests_counts_chance_and_corrected_significance(filled):
    from kd_core.sweep.results import multiple_tests

    store, sweep_id, *_ = filled
    df = sweep_results(store, sweep_id)
    tested = df[df["p"].notna()]
    assert tested.index.tolist() == [0, 2]  # T=1 and T=4 at λ=0.5; the other two cells have no run
    adjusted = hand_bh(tested["p"].tolist())
    assert df.loc[tested.index, "p_bh"].tolist() == pytest.approx(adjusted, abs=1e-12)
    summary = multiple_tests(df, 0.05)
    assert summary == {
        "tested": 2,
        "significant": int((tested["p"] < 0.05).sum()),
        "expected": pytest.approx(0.1),
        "significant_bh": sum(a < 0.05 for a in adjusted),
        "level": 0.05,
    }
    assert [df["significant_bh"][i] for i in (1, 3)] == [None, None]  # no run: no test


# ---------------------------------------------------------------- time estimate


def test_estimate_uses_the_closest_measured_throughput_and_overhead(tmp_path):
    store = Store(tmp_path)
    for kind, size, rate in (("student", 16, 1000.0), ("baseline", 16, 2000.0), ("student", 32, 500.0)):
        fake_run(
            store,
            None,
            kind,
            0,
            0.9,
            1.0 if kind == "student" else None,
            0.5 if kind == "student" else None,
            size=size,
            train_samples_per_s=rate,
            seconds=2.0,
            flops=1000.0 * size,
        )
    with sqlite3.connect(store.db_path) as db:  # every run took 0.5 s more than its training
        db.execute("UPDATE runs SET created = finished - 2.5")
    sweep = SweepConfig(
        temperatures=(1.0,),
        alphas=(0.5,),
        sizes=(16,),
        seeds=(0,),
        teacher_id="t",
        train=TrainConfig(epochs=2, batch_size=64),
    )
    info = {"train": 1000, "input_shape": [1, 8, 8], "num_classes": 10}
    samples = math.ceil(1000 / 64) * 64 * 2
    # the same model and kind were measured: their speeds, at the measured batch size (64 as well)
    est = estimate(store, sweep, info)
    assert est.seconds == pytest.approx(samples / 2000 + 0.5 + samples / 1000 + 0.5)
    assert not est.scaled and est.basis[("mlp", 16, 1)][0] == "measured"
    assert estimate(store, sweep, info, plan(sweep)[:1]).seconds == pytest.approx(samples / 2000 + 0.5)
    assert estimate(Store(tmp_path / "empty"), sweep, info) is None


def speed(kind, size, rate, flops, batch=64, overhead=0.0, family="mlp", depth=1):
    return Speed(kind, (family, size, depth), flops, batch, rate, overhead)


def planned(kind, size, flops, samples, batch=32, family="mlp", depth=1):
    return PlannedRun(kind, (family, size, depth), flops, batch, samples)


def test_with_only_a_teacher_measured_its_step_is_scaled_by_flops_above_a_fixed_floor():
    """The issue's case: a 512×2 teacher at batch 64, a 16-wide student at batch 32."""
    teacher = speed("teacher", 512, 28321.0, 600064.0, batch=64, overhead=1.08, depth=2)
    run = planned("student", 16, 2368.0, 131200, batch=32)
    est = plan_seconds([teacher], [run] * 3)
    step_t = 64 / 28321.0
    ratio = 2368.0 * 32 / (600064.0 * 64)
    step = STEP_FLOOR_S + (step_t - STEP_FLOOR_S) * ratio
    per_run = 131200 / 32 * step + 1.08 * step / step_t
    assert est.seconds == pytest.approx(3 * per_run, rel=1e-12)
    assert est.scaled and est.basis[("mlp", 16, 1)] == ("scaled", ("mlp", 512, 2), "teacher", 1)
    unscaled = 3 * (131200 / 28321.0 + 1.08)  # the teacher's own throughput: what the page used before
    assert est.seconds < unscaled / 2
    # the same model at the same batch gives the measurement back, whatever the floor
    same = speed("student", 16, 70000.0, 2368.0, batch=32, overhead=0.04)
    assert plan_seconds([same], [run]).seconds == pytest.approx(131200 / 70000.0 + 0.04, rel=1e-12)


def test_student_runs_are_preferred_to_a_teacher_and_the_nearest_model_is_scaled():
    teacher = speed("teacher", 512, 30000.0, 600000.0)
    s8, s64 = speed("student", 8, 80000.0, 1000.0), speed("student", 64, 40000.0, 9000.0)
    run = planned("student", 16, 2000.0, 64000, batch=64)
    est = plan_seconds([teacher, s64, s8], [run])
    assert est.basis[("mlp", 16, 1)] == ("scaled", ("mlp", 8, 1), "student", 1)  # log-nearest in FLOPs
    step, overhead = scaled_step(s8, run)
    assert est.seconds == pytest.approx(64000 / 64 * step + overhead)
    assert plan_seconds([], [run]) is None


def test_ray_workers_divide_the_sum_but_not_below_the_longest_run():
    s = speed("student", 16, 1000.0, 100.0, batch=10)
    runs = [planned("student", 16, 100.0, 1000, batch=10)] * 4  # 1 s each
    assert plan_seconds([s], runs).seconds == pytest.approx(4.0)
    est = plan_seconds([s], runs, workers=2, start_s=5.0)
    assert est.seconds == pytest.approx(4.0 / 2 + 5.0) and est.workers == 2
    assert plan_seconds([s], runs[:1], workers=8).seconds == pytest.approx(1.0)
    assert plan_seconds([s], [], workers=2, start_s=5.0).seconds == 0.0


def test_the_page_words_for_an_estimate():
    from kd_core.views.sweep_view import estimate_note

    measured = Estimate(10.0, {("mlp", 16, 1): ("measured", ("mlp", 16, 1), "student", 3)})
    scaled = Estimate(10.0, {("mlp", 16, 1): ("scaled", ("mlp", 512, 2), "teacher", 1)}, workers=2)
    assert "same students" in estimate_note(measured, "digits") and "Ray" not in estimate_note(measured, "digits")
    note = estimate_note(scaled, "digits")
    assert "mlp 512×2 teacher" in note and "FLOPs" in note and "2 runs at once" in note
    assert "train anything on digits" in estimate_note(None, "digits")


# ---------------------------------------------------------------- real tiny sweeps


@pytest.mark.slow
def test_resume_runs_only_the_cells_not_finished(tmp_path, digits, teacher_path):
    store = Store(tmp_path)
    sweep_id = create_sweep(store, tiny_sweep(teacher_path, seeds=(0, 1)))
    stop, finished = threading.Event(), []

    def stop_after_three(rec):
        if rec.event == "end" and rec.status == "finished":
            finished.append(rec.run_id)
            if len(finished) == 3:
                stop.set()

    first = run_sweep(store, sweep_id, digits, stop_after_three, stop)
    assert [o.status for o in first] == ["finished"] * 3
    assert len(pending(store, sweep_id)) == 10 - 3
    second = run_sweep(store, sweep_id, digits)
    assert len(second) == 7 and all(o.status == "finished" for o in second)
    runs = store.list_runs(sweep_id=sweep_id)
    assert len(runs) == 10 and {r.status for r in runs} == {"finished"}
    assert sorted(cell_key(r.config) for r in runs) == sorted(c.key for c in plan(tiny_sweep(teacher_path, (0, 1))))
    assert {o.run_id for o in first} <= {r.id for r in runs}
    assert run_sweep(store, sweep_id, digits) == []  # nothing left: nothing runs again


def test_a_sweep_job_fills_the_grid_and_publishes_progress(tmp_path, digits, teacher_path):
    store, manager = Store(tmp_path), JobManager()
    job = start_sweep(manager, store, digits, tiny_sweep(teacher_path))
    deadline = time.monotonic() + 300
    while job.live and time.monotonic() < deadline:
        time.sleep(0.05)
    snap = job.snapshot()
    assert snap.status == "finished", snap.message
    note = snap.notes["sweep"]
    assert (note["done"], note["total"], note["failed"], note["backend"]) == (5, 5, 0, "in-process")
    assert "seed 0" in snap.runs[0].label and any("T=4 λ=0.9" in r.label for r in snap.runs)
    runs = {cell_key(r.config): r.metrics["best_val_acc"] for r in store.list_runs(sweep_id=note["id"])}
    g = sweep_grids(store, note["id"])[16]
    base = runs[("baseline", 16, 0, None, None, 0, None)]
    for t in (1.0, 4.0):
        for a in (0.5, 0.9):
            assert g["mean"].loc[t, a] == runs[("student", 16, 0, t, a, 0, "kd")]
            assert g["gain_mean"].loc[t, a] == pytest.approx(runs[("student", 16, 0, t, a, 0, "kd")] - base)
    assert g["n"].values.tolist() == [[1, 1], [1, 1]]


@pytest.mark.slow
def test_cli_sweep_json_end_to_end_and_resume(tmp_path, teacher_path, capsys):
    args = [
        "sweep",
        "--dataset",
        "digits",
        "--store",
        str(tmp_path),
        "--teacher",
        teacher_path,
        "--temperatures",
        "1,4",
        "--alphas",
        "0.5,0.9",
        "--sizes",
        "16",
        "--seeds",
        "2",
        "--epochs",
        "1",
        "--lr",
        "3e-3",
        "--threads",
        "1",
        "--quiet",
        "--json",
    ]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    store = Store(tmp_path)
    runs = store.list_runs(sweep_id=out["sweep_id"])
    assert len(out["runs"]) == len(runs) == 10
    values = {}
    for r in runs:
        values.setdefault(cell_key(r.config)[:2] + cell_key(r.config)[3:5], []).append(r.metrics["best_val_acc"])
    g = out["grids"]["16"]
    assert (g["temperatures"], g["alphas"]) == ([1.0, 4.0], [0.5, 0.9])
    for i, t in enumerate(g["temperatures"]):
        for j, a in enumerate(g["alphas"]):
            mean, std = hand_mean_std(values[("student", 16, t, a)])
            assert g["n"][i][j] == 2
            assert g["mean"][i][j] == pytest.approx(mean) and g["std"][i][j] == pytest.approx(std)
    marked = [c for c in out["cells"] if c["best_marked"]]  # every tie, and only above the baseline
    assert all(c["best"] and c["gain_mean"] > 0 for c in marked)
    assert [(b["temperature"], b["alpha"]) for b in g["best"]] == [(c["temperature"], c["alpha"]) for c in marked]
    assert out["tests"]["tested"] == sum(c["p"] is not None for c in out["cells"])
    assert main(["sweep", "--store", str(tmp_path), "--resume", out["sweep_id"], "--quiet", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["runs"] == [] and again["grids"] == out["grids"]
    assert len(store.list_runs(sweep_id=out["sweep_id"])) == 10


def test_cli_text_grid_stars_only_significance_and_marks_the_best_apart():
    from kd_core.cli.sweep import cell_text

    assert cell_text(0.97, 0.003, 3, 0.0046, 0.199, False, True) == "0.9700±0.0030 n=3 Δ+0.0046 p=0.2 ^"
    assert cell_text(0.97, 0.003, 3, 0.0083, 0.035, True, False) == "0.9700±0.0030 n=3 Δ+0.0083 p=0.035 *"
    assert cell_text(0.97, 0.0, 3, 0.0028, None, None, False) == "0.9700±0.0000 n=3 Δ+0.0028 p=–"
    assert cell_text(None, None, 0, None, None, None, False) == "—"


def test_cli_prints_the_grid_with_its_legend(filled, capsys):
    from kd_core.cli.sweep import _print_grids, grid_payload

    store, sweep_id, *_ = filled
    _print_grids(grid_payload(store, sweep_id, "best_val_acc"))
    out = capsys.readouterr().out
    assert "^ best mean" in out and "* p < 0.05" in out and "Best for size 16: T=1, λ=0.5" in out
    rows = out.splitlines()[2:4]  # T=1, T=4
    assert rows[0].count("^") == 1 and "^" not in rows[1] and "Benjamini–Hochberg" in out
