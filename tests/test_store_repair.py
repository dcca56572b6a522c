"""The run store as a rebuildable index: WAL, a JSON record beside every ended run, the check on
open, and `store check` / `store repair` on real SQLite files damaged the ways disks damage them."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import closing

import pytest

from damage import checkpointed, corrupt_page, snapshot
from helpers import STUDENT_SPEC, make_config
from kd_core.config import ModelSpec
from kd_core.store import Store, StoreError
from kd_core.store.repair import FROM_WEIGHTS_ONLY, check, repair
from kd_core.train.recorder import load_teacher, train_teacher


@pytest.fixture
def filled(tmp_path, digits):
    """A store with three runs (a trained teacher with weights and epochs, a failed and a stopped run) and a sweep."""
    root = tmp_path / "store"
    store = Store(root)
    outcome = train_teacher(store, make_config("teacher", STUDENT_SPEC, epochs=2), digits)
    assert outcome.status == "finished"
    failed = store.create_run(make_config("student"))
    store.finish_run(failed, "failed", {}, error="the loss became nan")
    stopped = store.create_run(make_config("baseline"))
    store.finish_run(stopped, "stopped", {"seconds": 1.5})
    store.save_sweep("sw-1", {"temperatures": [1.0, 4.0]})
    return root, snapshot(store), outcome.run_id


def test_the_index_runs_in_wal_mode(filled):
    root, _, _ = filled
    with closing(sqlite3.connect(root / "runs.db")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_every_ended_run_has_a_record_that_matches_the_index(filled):
    root, before, teacher_id = filled
    store = Store(root)
    for run_id in before:
        rec = json.loads((root / "weights" / f"{run_id}.json").read_text())
        run = store.get_run(run_id)
        assert rec["format"] == "kd-studio-run/1" and rec["run"]["id"] == run_id
        assert (rec["run"]["status"], rec["run"]["config"], rec["run"]["metrics"]) == (
            run.status,
            json.loads(run.config.to_json()),  # as JSON: tuples (the methods, the params) are lists
            run.metrics,
        )
        assert [e["epoch"] for e in rec["epochs"]] == [e["epoch"] for e in store.epochs(run_id)]
    assert len(json.loads((root / "weights" / f"{teacher_id}.json").read_text())["epochs"]) == 2
    assert json.loads((root / "sweeps" / "sw-1.json").read_text())["config"] == {"temperatures": [1.0, 4.0]}


@pytest.mark.parametrize("table", ["runs", "epochs"])
def test_a_corrupt_page_is_refused_on_open_and_repair_brings_every_run_back(filled, table, digits):
    root, before, teacher_id = filled
    corrupt_page(root / "runs.db", table)
    with pytest.raises(StoreError) as err:
        Store(root)
    message = str(err.value)
    assert str(root / "runs.db") in message and f"kd-studio store repair --store {root}" in message
    assert "damaged" in message and "\n" not in message
    report = check(root)
    assert not report.ok and any("damaged" in line for line in report.lines)

    done = repair(root)
    assert any("moved it aside" in line for line in done.lines)
    assert len(list(root.glob("runs.db.damaged-*"))) >= 1  # kept, not deleted
    store = Store(root)
    assert snapshot(store) == before
    assert store.get_sweep("sw-1")["config"] == {"temperatures": [1.0, 4.0]}
    assert load_teacher(store, teacher_id, digits) is not None
    assert check(root).ok


@pytest.mark.parametrize("how", ["zero bytes", "missing"])
def test_a_lost_index_is_never_taken_for_an_empty_store(filled, how):
    root, before, _ = filled
    db = root / "runs.db"
    checkpointed(db)
    if how == "zero bytes":
        db.write_bytes(b"")
    else:
        db.unlink()
    with pytest.raises(StoreError, match=r"holds the files of 3 earlier run\(s\).*store repair"):
        Store(root)
    assert not db.exists() or db.stat().st_size == 0  # the refusal changed nothing
    repair(root)
    assert snapshot(Store(root)) == before


def test_another_programs_database_is_refused_untouched(tmp_path):
    db = tmp_path / "runs.db"
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("CREATE TABLE photos (path TEXT)")
        conn.execute("INSERT INTO photos VALUES ('cat.jpg')")
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    with pytest.raises(StoreError, match=r"another program.*photos"):
        Store(tmp_path)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest
    assert not check(tmp_path).ok


def test_a_new_or_empty_store_still_opens(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "runs.db").write_bytes(b"")  # empty, and no runs anywhere: nothing to lose
    assert Store(tmp_path / "a").list_runs() == []
    assert Store(tmp_path / "b").list_runs() == []


def test_an_older_store_without_records_gets_them_from_repair_then_survives_its_index(filled):
    root, before, _ = filled
    for rec in (root / "weights").glob("*.json"):
        rec.unlink()
    report = check(root)
    assert not report.ok and any("no JSON record" in line for line in report.lines)
    assert any("wrote 3 missing JSON record" in line for line in repair(root).lines)
    assert check(root).ok
    checkpointed(root / "runs.db")
    (root / "runs.db").write_bytes(b"")
    repair(root)
    assert snapshot(Store(root)) == before


def test_weights_alone_are_indexed_from_their_checkpoint(filled, digits):
    root, _, teacher_id = filled
    for path in [root / "runs.db", *root.glob("weights/*.json"), *root.glob("runs.db-*")]:
        path.unlink()
    lines = repair(root).lines
    assert any("1 from weights files alone" in line for line in lines), lines
    store = Store(root)
    run = store.get_run(teacher_id)
    assert (run.kind, run.dataset, run.status) == ("teacher", "digits", "finished")
    assert run.config.model == ModelSpec("mlp", 16, 1, 1.0)
    assert run.error == FROM_WEIGHTS_ONLY
    assert load_teacher(store, teacher_id, digits) is not None  # the weights are usable again


def test_repair_of_a_healthy_store_changes_nothing(filled):
    root, before, _ = filled
    lines = repair(root).lines
    assert any("added 0" in line for line in lines) and not list(root.glob("runs.db.damaged-*"))
    assert snapshot(Store(root)) == before


def test_a_store_damaged_while_open_raises_a_store_error_not_sqlite(filled):
    root, _, _ = filled
    store = Store(root)
    corrupt_page(root / "runs.db", "runs")
    with pytest.raises(StoreError, match="store repair"):
        store.list_runs()


def test_a_deleted_run_is_not_brought_back_by_repair(filled):
    root, before, teacher_id = filled
    Store(root).delete_run(teacher_id)
    checkpointed(root / "runs.db")
    (root / "runs.db").write_bytes(b"")
    repair(root)
    assert set(snapshot(Store(root))) == set(before) - {teacher_id}
