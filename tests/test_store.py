"""The run store on a real SQLite file, and the experiment layer that writes to it."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from dataclasses import replace

import pytest

from helpers import STUDENT_SPEC, TEACHER_SPEC, make_config, run_cli
from kd_core.errors import CheckpointError
from kd_core.events import Progress
from kd_core.store import Store, StoreError
from kd_core.train.checkpoint import load_checkpoint
from kd_core.train.metrics import accuracy, predict_logits
from kd_core.train.recorder import distill, load_teacher, train_teacher


def raw(store: Store, sql: str, *args) -> list[tuple]:
    """Query the SQLite file directly, bypassing the Store."""
    with sqlite3.connect(store.db_path) as db:
        return db.execute(sql, args).fetchall()


def epoch_record(run_id: str, epoch: int, **kw) -> Progress:
    return Progress(
        "epoch",
        epoch,
        epoch * 10,
        30,
        loss=1.0 / epoch,
        terms={"ce": 0.5 / epoch, "kd": 0.25 / epoch},
        train_acc=0.5 + epoch / 10,
        val_acc=0.4 + epoch / 10,
        elapsed_s=float(epoch),
        run_id=run_id,
        **kw,
    )


def test_create_run_is_written_to_the_sqlite_file(tmp_path):
    store = Store(tmp_path / "store")
    cfg = replace(make_config("student"), teacher_id="t-1", sweep_id="sweep-a")
    run_id = store.create_run(cfg)
    assert store.db_path == tmp_path / "store" / "runs.db" and store.db_path.is_file()
    assert raw(store, "SELECT kind, dataset, status, pid FROM runs WHERE id = ?", run_id) == [
        ("student", "digits", "running", os.getpid())
    ]
    run = store.get_run(run_id)
    assert run.label == STUDENT_SPEC.label() and run.teacher_id == "t-1" and run.sweep_id == "sweep-a"
    assert run.config == cfg  # the config round-trips through JSON, typed
    assert run.metrics == {} and run.weights is None
    assert store.get_run("no-such-run") is None


def test_a_stored_run_as_a_dict_is_the_row_as_sqlite_keeps_it(tmp_path):
    """`to_dict` (what `runs --json` prints) has every column of the runs table, the config and
    the metrics as the JSON stored there, and the weights path read back absolute."""
    store = Store(tmp_path / "store")
    cfg = make_config("teacher")
    run_id = store.create_run(cfg)
    store.finish_run(run_id, "finished", {"test_acc": 0.5}, weights=store.weights_path(run_id))
    row = raw(store, "SELECT * FROM runs WHERE id = ?", run_id)[0]
    with sqlite3.connect(store.db_path) as db:
        columns = [c[1] for c in db.execute("PRAGMA table_info(runs)")]
    d = store.get_run(run_id).to_dict()
    assert list(d) == columns
    expected = dict(zip(columns, row))
    expected.update(config=json.loads(expected["config"]), metrics=json.loads(expected["metrics"]))
    expected["weights"] = str(store.root / expected["weights"])
    assert d == expected and d["config"] == cfg.to_dict()
    assert json.loads(json.dumps(d)) == d


def test_epochs_keep_only_epoch_records_of_known_runs(tmp_path):
    store = Store(tmp_path)
    run_id = store.create_run(make_config())
    for e in (2, 1):
        store.add_epoch(epoch_record(run_id, e))
    store.add_epoch(Progress("step", 1, 5, 30, loss=9.0, run_id=run_id))  # not an epoch
    store.add_epoch(epoch_record("", 3))  # no run id
    rows = store.epochs(run_id)
    assert [r["epoch"] for r in rows] == [1, 2]
    rec = epoch_record(run_id, 2)
    assert rows[1] == {
        "run_id": run_id,
        "epoch": 2,
        "loss": rec.loss,
        "ce": 0.25,
        "kd": 0.125,
        "terms": {"ce": 0.25, "kd": 0.125},
        "train_acc": rec.train_acc,
        "val_acc": rec.val_acc,
        "seconds": rec.elapsed_s,
    }
    store.add_epoch(epoch_record(run_id, 2, lr=0.1))  # the same epoch again replaces it
    assert len(store.epochs(run_id)) == 2


OLD_EPOCHS_SCHEMA = """
CREATE TABLE runs (id TEXT PRIMARY KEY, kind TEXT NOT NULL, dataset TEXT NOT NULL, status TEXT NOT NULL,
    error TEXT DEFAULT '', label TEXT DEFAULT '', config TEXT NOT NULL, metrics TEXT DEFAULT '{}',
    teacher_id TEXT, sweep_id TEXT, created REAL NOT NULL, finished REAL, pid INTEGER, weights TEXT);
CREATE TABLE epochs (run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE, epoch INTEGER NOT NULL,
    loss REAL, ce REAL, kd REAL, train_acc REAL, val_acc REAL, seconds REAL, PRIMARY KEY (run_id, epoch));
"""


def test_a_store_from_before_loss_terms_is_migrated_and_its_rows_still_read(tmp_path):
    """A runs.db written before the `terms` column: opening adds it; the old rows read with
    terms from ce and kd (kd only for the student: it is 0 without a teacher)."""
    tmp_path.mkdir(exist_ok=True)
    old_config = (
        '{"kind": "student", "distill": {"temperature": 4.0, "alpha": 0.9, '
        '"cache_teacher_logits": true}, "model": {"family": "mlp", "size": 16, "depth": 1}}'
    )
    with sqlite3.connect(tmp_path / "runs.db") as db:
        db.executescript(OLD_EPOCHS_SCHEMA)
        for rid, kind in (("s-old", "student"), ("b-old", "baseline")):
            db.execute(
                "INSERT INTO runs (id, kind, dataset, status, config, created) VALUES (?, ?, 'digits', "
                "'finished', ?, 0)",
                (rid, kind, old_config),
            )
        db.execute("INSERT INTO epochs VALUES ('s-old', 1, 1.5, 1.0, 2.0, 0.5, 0.6, 3.0)")
        db.execute("INSERT INTO epochs VALUES ('b-old', 1, 1.0, 1.0, 0.0, 0.5, 0.6, 3.0)")
    store = Store(tmp_path)
    assert "terms" in [r[1] for r in raw(store, "PRAGMA table_info(epochs)")]
    (row,) = store.epochs("s-old")
    assert row["terms"] == {"ce": 1.0, "kd": 2.0} and row["loss"] == 1.5 and row["val_acc"] == 0.6
    assert store.epochs_of(["b-old"])["b-old"][0]["terms"] == {"ce": 1.0}
    cfg = store.get_run("s-old").config
    assert [m.name for m in cfg.distill.methods] == ["kd"]  # an old student was KD
    store.add_epoch(epoch_record("s-old", 2))  # new rows go in beside them
    assert [r["terms"] for r in store.epochs("s-old")][1] == {"ce": 0.25, "kd": 0.125}
    Store(tmp_path)  # a second open migrates nothing


def test_finish_run(tmp_path):
    store = Store(tmp_path)
    run_id = store.create_run(make_config())
    weights = store.weights_path(run_id)
    store.finish_run(run_id, "finished", {"test_acc": 0.9, "latency": {"1": 0.5}}, weights=weights)
    run = store.get_run(run_id)
    assert run.status == "finished" and run.error == ""
    assert run.metrics == {"test_acc": 0.9, "latency": {"1": 0.5}}
    assert run.weights == str(weights) and run.finished >= run.created
    store.finish_run(run_id, "failed", {}, error="boom")
    assert store.get_run(run_id).error == "boom"


def test_list_and_filter(tmp_path):
    store = Store(tmp_path)
    ids = {}
    for name, kind, dataset, sweep in [
        ("a", "teacher", "digits", None),
        ("b", "student", "digits", "s1"),
        ("c", "baseline", "digits", "s1"),
        ("d", "student", "mnist", None),
    ]:
        cfg = replace(make_config(kind, dataset=dataset), sweep_id=sweep)
        ids[name] = store.create_run(cfg)
    store.finish_run(ids["b"], "finished", {})
    assert [r.id for r in store.list_runs()] == [ids[n] for n in "dcba"]  # newest first
    assert {r.id for r in store.list_runs(kind="student")} == {ids["b"], ids["d"]}
    assert {r.id for r in store.list_runs(dataset="digits")} == {ids["a"], ids["b"], ids["c"]}
    assert [r.id for r in store.list_runs(status="finished")] == [ids["b"]]
    assert {r.id for r in store.list_runs(sweep_id="s1")} == {ids["b"], ids["c"]}
    assert [r.id for r in store.list_runs(kind="student", dataset="mnist")] == [ids["d"]]
    assert store.list_runs(kind="student", status="failed") == []
    assert [r.id for r in store.list_runs(limit=2)] == [ids["d"], ids["c"]]  # the newest, after the filters
    assert [r.id for r in store.list_runs(kind="student", dataset="digits", limit=1)] == [ids["b"]]


def test_delete_removes_row_epochs_and_weights(tmp_path):
    store = Store(tmp_path)
    keep, gone = store.create_run(make_config()), store.create_run(make_config())
    for rid in (keep, gone):
        store.add_epoch(epoch_record(rid, 1))
        store.weights_path(rid).write_bytes(b"weights")
        store.finish_run(rid, "finished", {}, weights=store.weights_path(rid))
    store.delete_run(gone)
    assert store.get_run(gone) is None and not store.weights_path(gone).exists()
    assert raw(store, "SELECT COUNT(*) FROM epochs WHERE run_id = ?", gone) == [(0,)]
    assert store.get_run(keep) is not None and store.weights_path(keep).exists()
    assert len(store.epochs(keep)) == 1


def test_runs_of_dead_processes_are_marked_failed_on_open(tmp_path):
    store = Store(tmp_path)
    exited = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    dead_pid = int(exited.stdout)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        orphan, mine, other_live, done = (store.create_run(make_config()) for _ in range(4))
        with sqlite3.connect(store.db_path) as db:
            db.execute("UPDATE runs SET pid = ? WHERE id IN (?, ?)", (dead_pid, orphan, done))
            db.execute("UPDATE runs SET pid = ? WHERE id = ?", (sleeper.pid, other_live))
        store.finish_run(done, "finished", {})
        reopened = Store(tmp_path)
        failed = reopened.get_run(orphan)
        assert failed.status == "failed" and "ended" in failed.error and failed.finished is not None
        assert reopened.get_run(mine).status == "running"  # this process is alive
        assert reopened.get_run(other_live).status == "running"  # so is the sleeper
        assert reopened.get_run(done).status == "finished"  # finished runs are left alone
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path):
    (tmp_path / "runs.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open the run store"):
        Store(tmp_path)


# ---------------------------------------------------------------- through the experiment layer


def test_train_teacher_stores_epochs_metrics_and_loadable_weights(tmp_path, digits):
    store = Store(tmp_path)
    outcome = train_teacher(store, make_config("teacher", TEACHER_SPEC, epochs=2), digits)
    assert outcome.status == "finished" and outcome.kind == "teacher"
    run = store.get_run(outcome.run_id)
    assert run.status == "finished" and run.kind == "teacher"
    assert [e["epoch"] for e in store.epochs(outcome.run_id)] == [1, 2]
    assert store.epochs(outcome.run_id)[-1]["val_acc"] == pytest.approx(run.metrics["final_val_acc"], abs=1e-12)
    model = load_teacher(store, outcome.run_id, digits)  # by run id, through the stored weights file
    test_acc = accuracy(predict_logits(model, digits.test_x), digits.test_y)
    assert run.metrics["test_acc"] == pytest.approx(test_acc, abs=1e-9)
    assert run.metrics["best_val_acc"] == pytest.approx(
        max(e["val_acc"] for e in store.epochs(outcome.run_id)), abs=1e-12
    )
    assert run.metrics["params"] == sum(p.numel() for p in model.parameters())
    _, meta = load_checkpoint(run.weights)
    assert meta["spec"] == TEACHER_SPEC and meta["dataset"] == "digits"


def test_distill_stores_student_and_baseline(tmp_path, digits, teacher):
    store = Store(tmp_path)
    cfg = replace(make_config("student", epochs=1), teacher_id="some-teacher")
    outcomes = distill(store, cfg, digits, teacher, with_baseline=True)
    assert [o.kind for o in outcomes] == ["student", "baseline"]
    student, baseline = (store.get_run(o.run_id) for o in outcomes)
    assert student.config.distill.temperature == 4.0 and student.teacher_id == "some-teacher"
    assert baseline.config.distill is None and baseline.config.kind == "baseline"
    assert baseline.config.train == student.config.train  # same budget and seed
    assert baseline.config.model == student.config.model
    for run in (student, baseline):
        assert run.status == "finished"
        assert 0.0 <= run.metrics["agreement"] <= 1.0


def test_failed_and_stopped_runs_are_stored_with_their_reason(tmp_path, digits):
    store = Store(tmp_path)
    failed = train_teacher(store, make_config("teacher", TEACHER_SPEC, lr=1e6), digits)
    assert failed.status == "failed" and "learning rate" in failed.message
    run = store.get_run(failed.run_id)
    assert run.status == "failed" and "learning rate" in run.error and run.weights is None
    stop = threading.Event()
    stop.set()
    stopped = train_teacher(store, make_config("teacher"), digits, stop=stop)
    assert store.get_run(stopped.run_id).status == "stopped"
    stored = len(store.list_runs())
    bad = train_teacher(store, make_config("teacher", epochs=0), digits)  # refused before it is stored
    assert bad.status == "failed" and bad.message.startswith("epochs must be") and bad.run_id == ""
    assert len(store.list_runs()) == stored
    with pytest.raises(CheckpointError, match="no saved weights"):
        load_teacher(store, failed.run_id, digits)
    with pytest.raises(CheckpointError, match="neither a checkpoint file nor a stored run id"):
        load_teacher(store, "no-such-run", digits)


# ---------------------------------------------------------------- paths: relative roots, moved stores


@pytest.mark.slow
def test_a_store_opened_by_a_relative_path_finds_its_weights_from_any_directory(tmp_path, monkeypatch, digits):
    """A teacher trained into `--store kd_runs` from one directory is loaded again, by run id,
    from another (as the library and as a CLI command), and after the store folder moved."""
    first, other = tmp_path / "first", tmp_path / "other"
    first.mkdir()
    other.mkdir()
    monkeypatch.chdir(first)
    store = Store("kd_runs")
    assert store.root.is_absolute() and store.root == (first / "kd_runs").resolve()
    outcome = train_teacher(store, make_config("teacher", epochs=1), digits)
    assert outcome.status == "finished"
    run_id = outcome.run_id
    # kept relative to the store's root, read back absolute
    assert raw(store, "SELECT weights FROM runs WHERE id = ?", run_id) == [(f"weights/{run_id}.pt",)]
    assert store.get_run(run_id).weights == str(store.weights_path(run_id))

    monkeypatch.chdir(other)
    again = Store("../first/kd_runs")
    assert again.root == store.root
    weights = again.get_run(run_id).weights
    assert weights == str((first / "kd_runs" / "weights" / f"{run_id}.pt").resolve())
    load_teacher(again, run_id, digits)
    proc = run_cli(
        other,
        "distill",
        "--teacher",
        run_id,
        "--store",
        "../first/kd_runs",
        "--size",
        "8",
        "--epochs",
        "1",
        "--threads",
        "1",
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    assert [r.kind for r in again.list_runs()] == ["student", "teacher"]

    moved = tmp_path / "elsewhere" / "runs"
    moved.parent.mkdir()
    (first / "kd_runs").rename(moved)
    monkeypatch.chdir(tmp_path)
    there = Store(moved)
    assert there.get_run(run_id).weights == str(moved.resolve() / "weights" / f"{run_id}.pt")
    load_teacher(there, run_id, digits)


def test_older_rows_with_absolute_or_working_directory_paths_still_load(tmp_path, monkeypatch, digits):
    store = Store(tmp_path / "runs")
    outcome = train_teacher(store, make_config("teacher", epochs=1), digits)
    run_id, path = outcome.run_id, store.weights_path(outcome.run_id)
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(other)
    for old in (
        str(path),  # absolute, as rows held before
        f"runs/weights/{run_id}.pt",  # relative to the working directory that wrote it
        f"/gone/kd_runs/weights/{run_id}.pt",
    ):  # absolute, in a store since moved
        with sqlite3.connect(store.db_path) as db:
            db.execute("UPDATE runs SET weights = ? WHERE id = ?", (old, run_id))
        assert store.get_run(run_id).weights == str(path), old
        load_teacher(store, run_id, digits)
    outside = tmp_path / "teacher.pt"  # a weights file outside the store stays absolute
    outside.write_bytes(path.read_bytes())
    store.finish_run(run_id, "finished", {}, weights=outside)
    assert raw(store, "SELECT weights FROM runs WHERE id = ?", run_id) == [(str(outside),)]
    assert store.get_run(run_id).weights == str(outside)
