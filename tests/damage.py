"""Damage done to a run store's SQLite file the ways disks and people do it, and a snapshot of
what the index says, to compare before and after (plain helpers for test_store_repair and
test_faults)."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

from kd_core.store import Store


def checkpointed(db_path: Path) -> None:
    """Fold the WAL into the main file, as the last connection's close does."""
    with closing(sqlite3.connect(db_path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def corrupt_page(db_path: Path, table: str) -> None:
    """Overwrite the root page of `table` with junk, as a torn write or a bad sector would."""
    checkpointed(db_path)
    with closing(sqlite3.connect(db_path)) as db:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    data = bytearray(db_path.read_bytes())
    data[(root - 1) * page_size : root * page_size] = b"\xa5" * page_size
    db_path.write_bytes(bytes(data))


def snapshot(store: Store) -> dict:
    """Everything the index says about each run, as JSON text (NaN-safe equality)."""
    return {
        r.id: json.dumps([r.status, r.error, r.config.to_dict(), r.metrics, store.epochs(r.id)], sort_keys=True)
        for r in store.list_runs()
    }
