"""Sweeps: planning, resuming, the result tables and the time estimate, and the CLI.

The result tables are checked on a store written by hand, against means, stds
and paired t statistics computed here; the tiny real sweeps (digits, one epoch)
check the running, the resume and the command line end to end.
"""
import json
import math
import sqlite3
import sys
import threading
import time

import pytest
from scipy import stats as sps

from kd_core.cli import main
from kd_core.config import DistillConfig, ModelSpec, RunConfig, TrainConfig
from kd_core.errors import ConfigError, KDError
from kd_core.jobs import JobManager
from kd_core.store import Store
from kd_core.sweep import (SweepConfig, cell_key, create_sweep, load_sweep, pending, plan, run_sweep,
                           start_sweep)
from kd_core.sweep_results import baseline_results, estimate_seconds, sweep_grids, sweep_results
from sweep_fixtures import sweep_data, teacher_path, tiny_sweep  # noqa: F401  (fixtures)


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
    assert all(k[3] is None and k[4] is None for k in baselines)
    for i, (kind, size, seed, _, _) in enumerate(keys):
        if kind == "student":
            assert ("baseline", size, seed, None, None) in keys[:i]
    assert {c.config.sweep_id for c in cells} == {"sw1"}
    assert {c.config.teacher_id for c in cells if c.config.kind == "student"} == {"t"}
    assert [k[2] for k in keys][:10] == [0] * 10   # seed by seed: the whole grid gets n=1 first


@pytest.mark.parametrize("bad", [dict(alphas=()), dict(alphas=(0.5, 1.5)), dict(temperatures=(0.0,)),
                                 dict(sizes=(16, 16)), dict(teacher_id=""), dict(sizes=(0,))])
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
    from kd_core.sweep_ray import import_ray
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(KDError, match="requirements-ray.txt"):
        import_ray()


# ---------------------------------------------------------------- results from a hand-written store


def fake_run(store, sweep_id, kind, seed, value, t=None, a=None, size=16, status="finished", **metrics):
    cfg = RunConfig(kind=kind, model=ModelSpec("mlp", size, 1), train=TrainConfig(seed=seed), sweep_id=sweep_id,
                    distill=DistillConfig(t, a) if kind == "student" else None)
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
    fake_run(store, sweep_id, "student", 0, 0.10, 1.0, 0.5, status="stopped")   # superseded, not a result
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
    for (t, values) in ((1.0, t1), (4.0, t4)):
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
    assert df.loc[(1.0, 0.5), "text"] == "{:.4f} ± {:.4f} (n=3)".format(*hand_mean_std(list(t1.values())))
    assert df.loc[(1.0, 0.5), "significant"] is bool(df.loc[(1.0, 0.5), "p"] < 0.05)
    assert df["best"].tolist() == [True, False, False, False]   # T=1 λ=0.5 has the highest mean
    empty = df.loc[(4.0, 0.9)]
    assert empty["n"] == 0 and math.isnan(empty["mean"]) and empty["significant"] is None
    assert baseline_results(store, sweep_id).iloc[0][["n", "mean"]].tolist() == [3, pytest.approx(b_mean)]


def test_grids_are_temperature_by_lambda_per_size(filled):
    store, sweep_id, base, t1, t4 = filled
    grids = sweep_grids(store, sweep_id)
    assert list(grids) == [16]
    g = grids[16]
    assert g["mean"].index.tolist() == [1.0, 4.0] and g["mean"].columns.tolist() == [0.5, 0.9]
    assert g["n"].loc[1.0, 0.5] == 3 and g["n"].loc[4.0, 0.5] == 2 and g["n"].loc[4.0, 0.9] == 0
    assert g["gain_mean"].loc[4.0, 0.5] == pytest.approx((0.81 - 0.80 + 0.80 - 0.82) / 2)
    assert (g["best"]["temperature"], g["best"]["alpha"]) == (1.0, 0.5)
    assert g["baseline"]["n"] == 3


# ---------------------------------------------------------------- time estimate


def test_estimate_uses_the_closest_measured_throughput_and_overhead(tmp_path):
    store = Store(tmp_path)
    for kind, size, rate in (("student", 16, 1000.0), ("baseline", 16, 2000.0), ("student", 32, 500.0)):
        fake_run(store, None, kind, 0, 0.9, 1.0 if kind == "student" else None, 0.5 if kind == "student" else None,
                 size=size, train_samples_per_s=rate, seconds=2.0)
    with sqlite3.connect(store.db_path) as db:   # every run took 0.5 s more than its training
        db.execute("UPDATE runs SET created = finished - 2.5")
    sweep = SweepConfig(temperatures=(1.0,), alphas=(0.5,), sizes=(16, 64), seeds=(0,), teacher_id="t",
                        train=TrainConfig(epochs=2, batch_size=64))
    samples = math.ceil(1000 / 64) * 64 * 2
    # size 16 matches kind and size; size 64 was never measured: the family's median, 1000/s
    expected = samples / 2000 + samples / 1000 + samples / 1000 + samples / 1000 + 4 * 0.5
    assert estimate_seconds(store, sweep, n_train=1000) == pytest.approx(expected)
    assert estimate_seconds(store, sweep, 1000, plan(sweep)[:1]) == pytest.approx(samples / 2000 + 0.5)
    assert estimate_seconds(Store(tmp_path / "empty"), sweep, 1000) is None


# ---------------------------------------------------------------- real tiny sweeps


def test_resume_runs_only_the_cells_not_finished(tmp_path, sweep_data, teacher_path):
    store = Store(tmp_path)
    sweep_id = create_sweep(store, tiny_sweep(teacher_path, seeds=(0, 1)))
    stop, finished = threading.Event(), []

    def stop_after_three(rec):
        if rec.event == "end" and rec.status == "finished":
            finished.append(rec.run_id)
            if len(finished) == 3:
                stop.set()

    first = run_sweep(store, sweep_id, sweep_data, stop_after_three, stop)
    assert [o.status for o in first] == ["finished"] * 3
    assert len(pending(store, sweep_id)) == 10 - 3
    second = run_sweep(store, sweep_id, sweep_data)
    assert len(second) == 7 and all(o.status == "finished" for o in second)
    runs = store.list_runs(sweep_id=sweep_id)
    assert len(runs) == 10 and {r["status"] for r in runs} == {"finished"}
    assert sorted(cell_key(r["config"]) for r in runs) == sorted(c.key for c in plan(tiny_sweep(teacher_path, (0, 1))))
    assert {o.run_id for o in first} <= {r["id"] for r in runs}
    assert run_sweep(store, sweep_id, sweep_data) == []   # nothing left: nothing runs again


def test_a_sweep_job_fills_the_grid_and_publishes_progress(tmp_path, sweep_data, teacher_path):
    store, manager = Store(tmp_path), JobManager()
    job = start_sweep(manager, store, sweep_data, tiny_sweep(teacher_path))
    deadline = time.monotonic() + 300
    while job.live and time.monotonic() < deadline:
        time.sleep(0.05)
    snap = job.snapshot()
    assert snap["status"] == "finished", snap["message"]
    note = snap["notes"]["sweep"]
    assert (note["done"], note["total"], note["failed"], note["backend"]) == (5, 5, 0, "in-process")
    assert "seed 0" in snap["runs"][0]["label"] and any("T=4 λ=0.9" in r["label"] for r in snap["runs"])
    runs = {cell_key(r["config"]): r["metrics"]["best_val_acc"] for r in store.list_runs(sweep_id=note["id"])}
    g = sweep_grids(store, note["id"])[16]
    base = runs[("baseline", 16, 0, None, None)]
    for t in (1.0, 4.0):
        for a in (0.5, 0.9):
            assert g["mean"].loc[t, a] == runs[("student", 16, 0, t, a)]
            assert g["gain_mean"].loc[t, a] == pytest.approx(runs[("student", 16, 0, t, a)] - base)
    assert g["n"].values.tolist() == [[1, 1], [1, 1]]


def test_cli_sweep_json_end_to_end_and_resume(tmp_path, teacher_path, capsys):
    args = ["sweep", "--dataset", "digits", "--store", str(tmp_path), "--teacher", teacher_path,
            "--temperatures", "1,4", "--alphas", "0.5,0.9", "--sizes", "16", "--seeds", "2",
            "--epochs", "1", "--lr", "3e-3", "--threads", "1", "--quiet", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    store = Store(tmp_path)
    runs = store.list_runs(sweep_id=out["sweep_id"])
    assert len(out["runs"]) == len(runs) == 10
    values = {}
    for r in runs:
        values.setdefault(cell_key(r["config"])[:2] + cell_key(r["config"])[3:], []).append(r["metrics"]["best_val_acc"])
    g = out["grids"]["16"]
    assert (g["temperatures"], g["alphas"]) == ([1.0, 4.0], [0.5, 0.9])
    for i, t in enumerate(g["temperatures"]):
        for j, a in enumerate(g["alphas"]):
            mean, std = hand_mean_std(values[("student", 16, t, a)])
            assert g["n"][i][j] == 2
            assert g["mean"][i][j] == pytest.approx(mean) and g["std"][i][j] == pytest.approx(std)
    assert sum(c["best"] for c in out["cells"]) == 1
    assert main(["sweep", "--store", str(tmp_path), "--resume", out["sweep_id"], "--quiet", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["runs"] == [] and again["grids"] == out["grids"]
    assert len(store.list_runs(sweep_id=out["sweep_id"])) == 10
