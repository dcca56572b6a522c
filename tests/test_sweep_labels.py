"""The label-budget axis of a sweep and its gain-versus-labels curve, on real runs on digits."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from app_helpers import chart_specs, open_app
from helpers import assert_clean_failure, run_cli
from kd_core.config import LabelConfig
from kd_core.errors import ConfigError, KDError
from kd_core.store import Store
from kd_core.sweep.grid import SweepConfig, cell_key, create_sweep, plan
from kd_core.sweep.results import gain_curve, planned_steps, sweep_results
from kd_core.sweep.runner import run_sweep
from kd_core.train.labels import step_plan
from stores import TINY_TRAIN


def budget_sweep(teacher: str, budgets=(30, 0), seeds=(0, 1)) -> SweepConfig:
    return SweepConfig(
        temperatures=(4.0,),
        alphas=(0.9,),
        sizes=(16,),
        seeds=seeds,
        teacher_id=teacher,
        train=TINY_TRAIN,
        label_budgets=budgets,
    )


def test_plan_crosses_budgets_with_seeds_and_each_seed_draws_its_own_subset():
    cells = plan(budget_sweep("t", budgets=(30, 100, 0), seeds=(0, 1, 2)))
    keys = [c.key for c in cells]
    assert len(keys) == len(set(keys)) == 3 * 3 * 2
    for i, (kind, size, seed, _, _, budget, _) in enumerate(keys):
        labels = cells[i].config.labels
        assert (labels.labels, labels.label_seed, labels.transfer) == (budget, seed if budget else 0, "rest")
        if kind == "student":
            assert ("baseline", size, seed, None, None, budget, None) in keys[:i]
    assert "30 labels" in cells[0].label


def test_a_sweep_without_budgets_loads_as_all_labels_and_bad_budgets_are_refused(tmp_path):
    old = budget_sweep("t").to_dict()
    del old["label_budgets"], old["labels"]
    assert SweepConfig.from_dict(old).label_budgets == (0,)
    store = Store(tmp_path)
    for bad in ((-5,), (30, 30)):
        with pytest.raises(ConfigError):
            create_sweep(store, budget_sweep("t", budgets=bad))
    with pytest.raises(ConfigError, match="transfer ratio"):
        create_sweep(store, replace(budget_sweep("t"), labels=LabelConfig(transfer_ratio=0)))


@pytest.mark.parametrize(
    "budgets, phrase",
    [((5000, 0), "exceeds the 1,293 training images"), ((30, 5), "cannot cover 10 classes")],
)
def test_a_budget_the_dataset_cannot_give_is_refused_before_the_sweep_is_stored(tmp_path, digits, budgets, phrase):
    store = Store(tmp_path)
    with pytest.raises(ConfigError, match=phrase):
        create_sweep(store, budget_sweep("t", budgets=budgets), digits)
    assert store.list_sweeps() == [] and store.list_runs() == []
    create_sweep(store, budget_sweep("t", budgets=(30, 0)), digits)  # the same grid within the data is kept
    assert len(store.list_sweeps()) == 1


def test_sweep_transfer_folder_without_images_is_refused_before_the_sweep_is_stored(tmp_path, digits):
    (tmp_path / "unlabelled").mkdir()
    (tmp_path / "unlabelled" / "broken.png").write_bytes(b"not a png")
    store = Store(tmp_path / "runs")
    sweep = replace(budget_sweep("t"), labels=LabelConfig(transfer=f"folder:{tmp_path / 'unlabelled'}"))
    with pytest.raises(KDError, match=r"broken\.png"):
        create_sweep(store, sweep, digits)
    assert store.list_sweeps() == []


@pytest.mark.slow
def test_cli_sweep_refuses_a_budget_over_the_training_split_with_one_error_line(tmp_path, teacher_path):
    proc = run_cli(
        tmp_path,
        "sweep",
        "--dataset", "digits",
        "--data-root", tmp_path / "data",
        "--store", tmp_path / "runs",
        "--teacher", teacher_path,
        "--temperatures", "4", "--alphas", "0.5", "--sizes", "16", "--epochs", "1",
        "--label-budgets", "5000,0",
        "--quiet",
    )  # fmt: skip
    assert proc.returncode == 2
    assert_clean_failure(proc, "error: a budget of 5,000 labels exceeds the 1,293 training images")
    assert not (tmp_path / "runs").exists()  # refused before the store was opened


@pytest.mark.slow
def test_sweep_page_refuses_a_budget_the_dataset_cannot_give(populated):
    at = open_app("app_pages/sweep.py")
    assert not at.button(key="sw_start").disabled
    at.text_input(key="sw_budgets").set_value("100, 5000, all").run()
    assert any("exceeds the 1,293 training images" in e.value for e in at.error)
    assert at.button(key="sw_start").disabled


def test_planned_steps_follow_the_step_plan():
    cfg = plan(budget_sweep("t"))[0].config  # a baseline at 30 labels
    n = 1293
    assert planned_steps(cfg, n) == step_plan(30, n - 30, TINY_TRAIN.batch_size, 1.0).steps_per_epoch * cfg.train.epochs
    full = replace(cfg, labels=LabelConfig())
    assert planned_steps(full, n) == -(-n // TINY_TRAIN.batch_size) * cfg.train.epochs


@pytest.mark.slow
def test_gain_curve_matches_the_stored_runs(tmp_path, digits, teacher_path):
    store = Store(tmp_path)
    sweep_id = create_sweep(store, budget_sweep(teacher_path))
    outcomes = run_sweep(store, sweep_id, digits)
    assert [o.status for o in outcomes] == ["finished"] * 8
    runs = {cell_key(r.config): r for r in store.list_runs(sweep_id=sweep_id)}
    curve = gain_curve(store, sweep_id, "test_acc")
    assert curve["budget"].tolist() == [30, 0]  # budgets ascending, "all" last
    for _, row in curve.iterrows():
        b = row["budget"]
        s = np.array(
            [runs[("student", 16, k, 4.0, 0.9, b, "kd")].metrics["test_acc"] for k in (0, 1)], dtype=np.float64
        )
        base = np.array([runs[("baseline", 16, k, None, None, b, None)].metrics["test_acc"] for k in (0, 1)])
        assert row["mean"] == pytest.approx(s.mean()) and row["baseline_mean"] == pytest.approx(base.mean())
        assert row["gain_mean"] == pytest.approx((s - base).mean())
        if np.std(s - base) > 1e-6:
            assert row["p"] == pytest.approx(stats.ttest_rel(s, base).pvalue)
        labels = runs[("student", 16, 0, 4.0, 0.9, b, "kd")].metrics["labels"]
        assert labels["labelled"] == (30 if b else len(digits.train_y))
    # the grid of a budgeted sweep shows one budget at a time, the first by default
    assert sweep_results(store, sweep_id, "test_acc")["mean"].iloc[0] == pytest.approx(curve["mean"].iloc[0])
    assert runs[("baseline", 16, 1, None, None, 30, None)].config.labels.label_seed == 1


@pytest.mark.slow
def test_sweep_page_draws_the_gain_curve_of_a_budget_sweep(tmp_path, monkeypatch, digits, teacher_path):
    store = Store(tmp_path / "runs")
    sweep_id = create_sweep(store, budget_sweep(teacher_path, seeds=(0,)))
    run_sweep(store, sweep_id, digits)
    monkeypatch.setenv("KD_RUNS", str(tmp_path / "runs"))
    at = open_app("app_pages/sweep.py", timeout=120)
    curve = chart_specs(at)["sw_curve"]
    xs = [t["x"] for t in curve["data"]]
    assert xs and all(x == ["30", "all"] for x in xs)  # one point per budget, "all" last
    tables = [d.value for d in at.dataframe if "budget" in d.value.columns]
    assert [t["budget"].tolist() for t in tables] == [[30, 0]]
    assert at.selectbox(key="sw_budget_view").value == 30


def test_runs_table_folds_replicates_of_a_budget_but_not_budgets():
    from kd_core.views.runs_table import config_key

    cells = [c.config for c in plan(budget_sweep("t", budgets=(30, 100), seeds=(0, 1))) if c.config.kind == "student"]
    keys = {(c.labels.labels, c.train.seed): config_key(c) for c in cells}
    assert keys[(30, 0)] == keys[(30, 1)] and keys[(100, 0)] == keys[(100, 1)]
    assert keys[(30, 0)] != keys[(100, 0)]
