"""kd_core's side of the Runs and Sweep pages: the runs table, seeds folded by configuration,
curves, CSV, the reproduce command (run for real) and the Sweep page's parsing and counts."""

import dataclasses
import io
import shlex
import subprocess
import sys
from dataclasses import replace

import pandas as pd
import pytest

from helpers import REPO, cli_env
from kd_core.config import DataConfig, LabelConfig, ModelSpec, RunConfig, TrainConfig
from kd_core.errors import ConfigError
from kd_core.stats import summarize
from kd_core.store import Store
from kd_core.views import runs_table, sweep_view
from stores import N_RUNS


def test_runs_frame_has_a_row_per_run_with_its_numbers(template_store):
    store = Store(template_store["root"])
    frame = runs_table.runs_frame(store)
    assert len(frame) == N_RUNS and list(frame.columns) == runs_table.COLUMNS
    assert frame["kind"].value_counts().to_dict() == {"student": 8, "baseline": 2, "teacher": 1}
    for record in store.list_runs():
        row = frame.set_index("id").loc[record.id]
        m = record.metrics
        assert row["test_acc"] == pytest.approx(m["test_acc"]) and row["params"] == m["params"]
        assert row["best_val_acc"] == pytest.approx(m["best_val_acc"])
        assert row["latency_b1_ms"] == pytest.approx(m["latency"]["batches"]["1"]["median_ms"])
        assert row["val_acc_curve"] == [e["val_acc"] for e in store.epochs(record.id)]
        assert row["duration_s"] == pytest.approx(record.finished - record.created)
        if record.kind == "student":
            assert (row["T"], row["λ"]) == (
                record.config.distill.temperature,
                record.config.distill.alpha,
            )
        else:
            assert pd.isna(row["T"]) and pd.isna(row["λ"])
    # a sweep's baseline is listed under the teacher its students are compared against
    baselines = frame[frame["kind"] == "baseline"]
    assert set(baselines["teacher"]) == {template_store["teacher_id"]}
    assert set(baselines["sweep"]) == {template_store["sweep_id"]}


def test_runs_frame_filters(template_store):
    store = Store(template_store["root"])
    assert len(runs_table.runs_frame(store, {"kind": ["student"]})) == 8
    assert len(runs_table.runs_frame(store, {"kind": ["student", "baseline"], "status": ["finished"]})) == 10
    assert runs_table.runs_frame(store, {"sweep": [None]})["kind"].tolist() == ["teacher"]
    assert len(runs_table.runs_frame(store, {"teacher": [template_store["teacher_id"]]})) == 10
    assert runs_table.runs_frame(store, {"dataset": ["mnist"]}).empty
    assert len(runs_table.runs_frame(store, {"kind": []})) == N_RUNS  # empty: no filter
    with pytest.raises(ValueError, match="unknown filters"):
        runs_table.runs_frame(store, {"colour": ["red"]})
    options = runs_table.filter_options(store)
    assert options["sweep"] == [template_store["sweep_id"], None]
    assert options["kind"] == ["baseline", "student", "teacher"]


def test_group_by_config_folds_seeds_into_mean_std_n(template_store):
    store = Store(template_store["root"])
    frame = runs_table.runs_frame(store)
    groups = runs_table.group_by_config(frame)
    assert len(groups) == 1 + 1 + 4  # teacher, baseline, T × λ
    students = groups[groups["kind"] == "student"]
    assert set(students["n"]) == {2} and set(students["seeds"]) == {"0, 1"}
    for _, g in students.iterrows():
        accs = frame[frame["id"].isin(g["ids"])]["test_acc"].tolist()
        s = summarize(accs)
        assert g["test_acc"] == s.text() and "±" in g["test_acc"] and "(n=2)" in g["test_acc"]
        assert g["test_acc_mean"] == pytest.approx(s.mean) and g["test_acc_std"] == pytest.approx(s.std)
    # a stopped run is not a result: left out of the groups
    stopped = frame.copy()
    stopped.loc[stopped["id"] == students.iloc[0]["ids"][0], "status"] = "stopped"
    regrouped = runs_table.group_by_config(stopped)
    assert sorted(regrouped[regrouped["kind"] == "student"]["n"]) == [1, 2, 2, 2]


def test_curves_frame_and_csv_match_the_store(template_store):
    store = Store(template_store["root"])
    frame = runs_table.runs_frame(store)
    ids = frame["id"].tolist()[:3]
    curves = runs_table.curves_frame(store, ids)
    assert list(curves.columns) == ["run", "label", "kind", "epoch", "loss", "train_acc", "val_acc"]
    for run_id in ids:
        stored = store.epochs(run_id)
        part = curves[curves["run"] == run_id]
        assert set(part["kind"]) <= {store.get_run(run_id).kind}  # the role its colour comes from
        assert part["val_acc"].tolist() == [e["val_acc"] for e in stored]
        assert part["loss"].tolist() == [e["loss"] for e in stored]
    csv = pd.read_csv(io.StringIO(runs_table.to_csv(frame)))
    assert "val_acc_curve" not in csv.columns and "config_key" not in csv.columns
    assert csv["id"].tolist() == [r.id for r in store.list_runs()]
    by_id = csv.set_index("id")
    for r in store.list_runs():
        assert by_id.loc[r.id, "test_acc"] == pytest.approx(r.metrics["test_acc"])
        assert by_id.loc[r.id, "status"] == r.status
    grouped = pd.read_csv(io.StringIO(runs_table.to_csv(runs_table.group_by_config(frame))))
    assert sorted(" ".join(grouped["ids"]).split()) == sorted(frame["id"])


def test_command_for_uploaded_and_sweep_baseline(template_store):
    store = Store(template_store["root"])
    baseline = store.list_runs(kind="baseline")[0]
    assert baseline.config.teacher_id is None
    command = runs_table.command_for(baseline, store)
    assert f"--teacher {template_store['teacher_id']}" in command and "--baseline" in command
    assert f"--store {store.root}" in command
    uploaded = dataclasses.replace(baseline, metrics={"uploaded": "t.pt"})
    assert runs_table.command_for(uploaded, store) is None


def _without(config: dict, *keys: str) -> dict:
    return {k: v for k, v in config.items() if k not in keys}


@pytest.mark.slow
def test_the_reproduce_command_makes_the_same_run_again(populated):
    """Run the command of a sweep's student and of its baseline: the store gets runs with the same
    config (but for the sweep id; the baseline now names the teacher it was made beside), and,
    with the same seed and one thread, the same validation curve."""
    store = Store(populated["root"])
    student = store.list_runs(kind="student")[0]
    seed = student.config.train.seed
    baseline = next(r for r in store.list_runs(kind="baseline") if r.config.train.seed == seed)
    before = {r.id for r in store.list_runs()}
    for run in (student, baseline):
        argv = shlex.split(runs_table.command_for(run, store))
        assert argv[:3] == ["python", "-m", "kd_core"]
        proc = subprocess.run(
            [sys.executable, *argv[1:], "--quiet"], cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr
    new = [r for r in store.list_runs() if r.id not in before]
    assert sorted(r.kind for r in new) == ["baseline", "student", "student"]
    for original in (student, baseline):
        again = next(r for r in new if r.kind == original.kind and r.config.distill == original.config.distill)
        assert again.config.sweep_id is None
        assert _without(again.config.to_dict(), "sweep_id", "teacher_id") == _without(
            original.config.to_dict(), "sweep_id", "teacher_id"
        )
        assert again.config.teacher_id == populated["teacher_id"]
        assert [e["val_acc"] for e in store.epochs(again.id)] == pytest.approx(
            [e["val_acc"] for e in store.epochs(original.id)]
        )


# ---------------------------------------------------------------- the Sweep page's helpers


def test_parse_values():
    assert sweep_view.parse_values("1, 2,4") == (1.0, 2.0, 4.0)
    assert sweep_view.parse_values(" 16 32 ", int) == (16, 32)
    for text, phrase in (
        ("", "at least one"),
        ("1, a", "'a' is not a number"),
        ("1, 1", "repeated"),
        ("inf", "finite"),
    ):
        with pytest.raises(ConfigError, match=phrase):
            sweep_view.parse_values(text, float, "T")
    with pytest.raises(ConfigError, match="whole number"):
        sweep_view.parse_values("16.5", int, "sizes")


def test_make_sweep_and_run_counts():
    cfg = sweep_view.make_sweep(
        "1, 2, 4", "0.5, 0.9", "16, 32", 3, 5, "t1", "mlp", 1, DataConfig("digits"), TrainConfig(epochs=2)
    )
    assert cfg.seeds == (5, 6, 7) and cfg.sizes == (16, 32) and cfg.train.epochs == 2
    assert sweep_view.run_counts(cfg) == {"cells": 36, "baselines": 6, "total": 42, "configs": 12}
    for t, a, s, phrase in (
        ("0", "0.5", "16", "above 0"),
        ("1", "1.5", "16", r"outside \[0, 1\]"),
        ("1", "0.5", "0", "at least 1"),
    ):
        with pytest.raises(ConfigError, match=phrase):
            sweep_view.make_sweep(t, a, s, 1, 0, "t1", "mlp", 1, DataConfig("digits"), TrainConfig())


def test_sweep_list_counts_done_runs(populated):
    store = Store(populated["root"])
    [info] = sweep_view.sweep_list(store)
    assert (info["id"], info["total"], info["done"], info["left"]) == (populated["sweep_id"], 10, 10, 0)
    store.delete_run(store.list_runs(kind="student")[0].id)
    [info] = sweep_view.sweep_list(store)
    assert (info["done"], info["left"]) == (9, 1) and info["label"].startswith(f"{populated['sweep_id']} · T 1/4")


def test_duration_text():
    assert sweep_view.duration_text(None) == "no measurement yet"
    assert sweep_view.duration_text(42.4) == "about 42 s"
    assert sweep_view.duration_text(600) == "about 10 min"
    assert sweep_view.duration_text(3 * 3600) == "about 3.0 h"


def test_a_students_methods_are_a_column_and_old_kd_students_group_with_new_ones(tmp_path):
    """A student stored before methods existed (no `methods` in its JSON) was KD: it shows
    as "kd" and folds with a KD student stored now; a DKD student is its own configuration."""
    import json
    import sqlite3

    from kd_core.config import DistillConfig, MethodSpec, ModelSpec, RunConfig

    store = Store(tmp_path)
    base = RunConfig(kind="student", model=ModelSpec("mlp", 16, 1), teacher_id="t", distill=DistillConfig())
    new_kd = store.create_run(base)
    old_kd = store.create_run(base)
    old_json = json.loads(base.to_json())
    old_json["distill"].pop("methods")
    old_json["train"]["seed"] = 1  # another seed of the same configuration
    with sqlite3.connect(store.db_path) as db:  # as an older version wrote it
        db.execute("UPDATE runs SET config = ? WHERE id = ?", (json.dumps(old_json), old_kd))
    dkd = store.create_run(
        RunConfig(kind="student", model=base.model, teacher_id="t",
                  distill=DistillConfig(methods=(MethodSpec("dkd", 1.0, (("beta", 4.0),)),)))
    )  # fmt: skip
    for run_id in (new_kd, old_kd, dkd):
        store.finish_run(run_id, "finished", {"test_acc": 0.9})
    frame = runs_table.runs_frame(store).set_index("id")
    assert frame.loc[new_kd, "method"] == frame.loc[old_kd, "method"] == "kd"
    assert frame.loc[dkd, "method"] == "dkd (dkd.beta=4.0)"
    assert frame.loc[new_kd, "config_key"] == frame.loc[old_kd, "config_key"] != frame.loc[dkd, "config_key"]
    groups = runs_table.group_by_config(frame.reset_index())
    assert sorted(groups["n"]) == [1, 2] and set(groups["method"]) == {"kd", "dkd (dkd.beta=4.0)"}
    label = runs_table.run_label(frame.reset_index().set_index("id", drop=False).loc[dkd])
    assert "dkd (dkd.beta=4.0) T=4 λ=0.9" in label


def test_the_label_budget_is_a_column_and_budgets_fold_apart(tmp_path):
    """Runs that differ only by their label budget are told apart in the table and never folded
    together; replicates of one budget (each seed its own subset) fold into one row."""
    store = Store(tmp_path)
    base = RunConfig(kind="baseline", model=ModelSpec("mlp", 16, 1))
    runs = {
        "few0": replace(base, labels=LabelConfig(per_class=5, label_seed=0)),
        "few1": replace(base, labels=LabelConfig(per_class=5, label_seed=1), train=TrainConfig(seed=1)),
        "500": replace(base, labels=LabelConfig(labels=500, transfer="rest+folder:/x")),
        "all": base,
    }
    ids = {name: store.create_run(cfg) for name, cfg in runs.items()}
    for name, run_id in ids.items():
        store.finish_run(run_id, "finished", {"test_acc": 0.5 + 0.1 * len(name)})
    frame = runs_table.runs_frame(store).set_index("id")
    assert {name: frame.loc[i, "labels"] for name, i in ids.items()} == {
        "few0": "5 labels per class",
        "few1": "5 labels per class",
        "500": "500 labels + unlabelled folder",
        "all": "all labels",
    }
    groups = runs_table.group_by_config(frame.reset_index())
    assert sorted(zip(groups["labels"], groups["n"])) == [
        ("5 labels per class", 2),
        ("500 labels + unlabelled folder", 1),
        ("all labels", 1),
    ]
