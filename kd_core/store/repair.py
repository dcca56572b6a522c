"""`kd-studio store check` and `store repair`: the runs index checked against, and rebuilt from, the files.

Every run that ends leaves weights/<run id>.json beside its weights (db.py), so
runs.db is an index that can be rebuilt. `check` reads the store without
changing it and says what is wrong; `repair` rebuilds what it can:

- a healthy runs.db is repaired in place: runs found on disk but missing from
  the index are added, and runs without a JSON record (older ones) get one;
- a damaged, foreign, empty or missing runs.db is moved aside (never deleted) to
  runs.db.damaged-<time>, and a new index is built from, in order of trust, the
  JSON records, the rows still readable in the old file, and the weights files
  alone (their checkpoints name the model and dataset; metrics and curves are lost).
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kd_core.config import ModelSpec
from kd_core.store.db import GRID_RECORD, GRID_TABLES, RUN_RECORD, SCHEMA, Store, repair_command, run_files

KINDS_BY_PREFIX = {"t": "teacher", "s": "student", "b": "baseline"}  # run ids start with the kind's letter
FROM_WEIGHTS_ONLY = (
    "rebuilt by `store repair` from its weights file alone: the model and dataset are known, "
    "its training config beyond them, metrics and curves were lost"
)


@dataclass
class Report:
    root: Path
    ok: bool = True  # nothing that `repair` would change
    lines: list[str] = field(default_factory=list)  # findings (check) or actions (repair), in words

    def problem(self, line: str) -> None:
        self.ok = False
        self.lines.append(line)


# ---------------------------------------------------------------- reading what is there


def _index_state(db_path: Path) -> tuple[str | None, dict[str, dict]]:
    """(what is wrong with runs.db or None, its runs by id when it is healthy)."""
    if not db_path.is_file():
        return "runs.db is missing", {}
    if db_path.stat().st_size == 0:
        return "runs.db is an empty (zero-byte) file", {}
    try:
        with closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
            db.row_factory = sqlite3.Row
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "runs" not in tables:
                return f"runs.db is not a KD Studio index (tables: {', '.join(sorted(tables)) or 'none'})", {}
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            if verdict != "ok":
                return f"runs.db is damaged ({verdict.splitlines()[0]})", {}
            return None, {r["id"]: dict(r) for r in db.execute("SELECT * FROM runs")}
    except sqlite3.Error as err:
        return f"runs.db is damaged ({err})", {}


def _records(folder: Path, fmt: str) -> tuple[dict[str, dict], list[str]]:
    """The JSON records of one format in `folder` by id, and the names of unreadable ones."""
    found, bad = {}, []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if path.name.startswith("."):
            continue
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            bad.append(path.name)
            continue
        if isinstance(rec, dict) and rec.get("format") == fmt:
            found[path.stem] = rec
    return found, bad


Grids = dict[tuple[str, str], dict]  # (table, id) -> a saved sweep's or study's row


def _salvage(db_path: Path, ids: set[str]) -> tuple[dict[str, dict], dict[str, list[dict]], Grids]:
    """Whatever rows of a (possibly damaged) runs.db can still be read: runs, epochs by run, and the
    saved grids by (table, id). A table whose scan fails is read run by run through its primary key,
    which may avoid the bad page."""
    runs: dict[str, dict] = {}
    epochs: dict[str, list[dict]] = {}
    grids: Grids = {}
    if not db_path.is_file() or db_path.stat().st_size == 0:
        return runs, epochs, grids
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    except sqlite3.Error:
        return runs, epochs, grids
    with closing(db):
        db.row_factory = sqlite3.Row
        runs = {r["id"]: r for r in _rows(db, "SELECT * FROM runs")}
        for rid in ids - set(runs):
            runs.update({r["id"]: r for r in _rows(db, "SELECT * FROM runs WHERE id = ?", rid)})
        all_epochs = _rows(db, "SELECT * FROM epochs")
        if all_epochs:
            for e in all_epochs:
                epochs.setdefault(e["run_id"], []).append(e)
        else:
            for rid in set(runs) | ids:
                epochs[rid] = _rows(db, "SELECT * FROM epochs WHERE run_id = ?", rid)
        for table in GRID_TABLES:
            grids.update({(table, r["id"]): r for r in _rows(db, f"SELECT * FROM {table}")})
    return runs, epochs, grids


def _rows(db: sqlite3.Connection, sql: str, *args) -> list[dict]:
    try:
        return [dict(r) for r in db.execute(sql, args).fetchall()]
    except sqlite3.Error:
        return []


# ---------------------------------------------------------------- check


def check(root: str | Path) -> Report:
    """What is wrong with the store at `root`, changing nothing."""
    root = Path(root).expanduser().resolve()
    report = Report(root)
    weights = root / "weights"
    on_disk = run_files(weights)
    records, bad = _records(weights, RUN_RECORD)
    problem, rows = _index_state(root / "runs.db")
    if problem:
        if on_disk or (root / "runs.db").is_file():
            report.problem(f"{problem}; {len(on_disk)} run(s) have files in {weights}.")
        else:
            report.lines.append("no store here yet (no runs.db, no weights).")
    else:
        missing = sorted(on_disk - set(rows))
        unrecorded = sorted(rid for rid, r in rows.items() if r["status"] != "running" and rid not in records)
        if missing:
            report.problem(f"{len(missing)} run(s) on disk are missing from the index: {', '.join(missing[:5])}")
        if unrecorded:
            report.problem(f"{len(unrecorded)} run(s) have no JSON record beside their weights (written by repair).")
        lost = sorted(rid for rid, r in rows.items() if r["weights"] and not (root / r["weights"]).is_file())
        lost = [rid for rid in lost if not (weights / f"{rid}.pt").is_file()]
        if lost:
            report.lines.append(f"warning: {len(lost)} run(s) name weights that are gone: {', '.join(lost[:5])}")
        report.lines.insert(0, f"runs.db: ok, {len(rows)} run(s) indexed, {len(records)} JSON record(s).")
    if bad:
        report.lines.append(f"warning: unreadable JSON record(s) left as they are: {', '.join(bad[:5])}")
    if not report.ok:
        report.lines.append(f"to fix: {repair_command(root)}")
    return report


# ---------------------------------------------------------------- repair


def repair(root: str | Path) -> Report:
    """Rebuild the index of the store at `root` from its files; never deletes anything."""
    root = Path(root).expanduser().resolve()
    report = Report(root)
    db_path, weights = root / "runs.db", root / "weights"
    records, _ = _records(weights, RUN_RECORD)
    on_disk = run_files(weights)
    runs, epochs, grids = _salvage(db_path, on_disk)
    for table in GRID_TABLES:
        grids.update({(table, key): rec for key, rec in _records(root / table, GRID_RECORD)[0].items()})
    problem, indexed = _index_state(db_path)
    if problem and db_path.exists():
        aside = _move_aside(db_path)
        report.lines.append(f"{problem}: moved it aside to {aside.name} (kept, not deleted).")
    root.mkdir(parents=True, exist_ok=True)
    counts = {"record": 0, "salvaged": 0, "weights": 0}
    with closing(sqlite3.connect(db_path)) as db, db:
        db.execute("PRAGMA journal_mode = WAL")
        db.executescript(SCHEMA)
        for rid in sorted(on_disk | set(runs)):
            if rid in indexed:
                continue
            source, row, rows = _best_source(rid, records, runs, epochs, weights)
            if row is None:
                report.lines.append(f"warning: {rid}: no record, no readable row and no readable weights; skipped.")
                continue
            _insert(db, "runs", row)
            for e in rows:
                _insert(db, "epochs", {**e, "run_id": rid})
            counts[source] += 1
        for (table, key), rec in grids.items():
            _insert(db, table, {**rec, "id": key})
    store = Store(root)  # now passes its own checks; marks runs of dead processes failed
    written = [r.id for r in store.list_runs() if r.id not in records and r.status != "running"]
    for rid in written:
        store.write_record(rid)
    added = sum(counts.values())
    report.lines.append(
        f"index: {len(store_ids(store))} run(s); added {added}: {counts['record']} from JSON records, "
        f"{counts['salvaged']} from rows read back from the old file, {counts['weights']} from weights files alone."
    )
    if written:
        report.lines.append(f"wrote {len(written)} missing JSON record(s).")
    return report


def store_ids(store: Store) -> list[str]:
    return [r.id for r in store.list_runs()]


def _move_aside(db_path: Path) -> Path:
    aside = db_path.with_name(f"{db_path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        part = db_path.with_name(db_path.name + suffix)
        if part.exists():
            part.replace(aside.with_name(aside.name + suffix))
    return aside


def _best_source(rid: str, records: dict, runs: dict, epochs: dict, weights: Path) -> tuple[str, dict | None, list]:
    """("record" | "salvaged" | "weights", the run's row, its epoch rows)."""
    if rid in records:
        rec = records[rid]
        return "record", rec["run"], rec.get("epochs", [])
    if rid in runs:
        return "salvaged", runs[rid], epochs.get(rid, [])
    return "weights", _row_from_weights(rid, weights / f"{rid}.pt"), []


def _row_from_weights(rid: str, path: Path) -> dict | None:
    """A run row from a checkpoint's own metadata (read as data only, weights_only=True)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        spec = ModelSpec(str(payload["family"]), int(payload["size"]), int(payload["depth"]))
        dataset = str(payload.get("dataset", "")) or "unknown"
    except Exception:  # unreadable or not a KD Studio checkpoint: nothing to index it by
        return None
    kind = KINDS_BY_PREFIX.get(rid[:1], "teacher")
    mtime = path.stat().st_mtime
    config = {"kind": kind, "data": {"dataset": dataset}, "model": vars(spec)}
    return {
        "id": rid,
        "kind": kind,
        "dataset": dataset,
        "status": "finished",
        "error": FROM_WEIGHTS_ONLY,
        "label": spec.label(),
        "config": config,
        "metrics": {},
        "created": mtime,
        "finished": mtime,
        "weights": f"weights/{path.name}",
    }


def _insert(db: sqlite3.Connection, table: str, row: dict) -> None:
    """INSERT OR IGNORE the columns the table has (records may come from another schema version)."""
    columns = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
    values = {c: row[c] for c in columns if c in row}
    for c in ("config", "metrics"):
        if c in values and not isinstance(values[c], str):
            values[c] = json.dumps(values[c], sort_keys=True)
    names = ", ".join(values)
    db.execute(
        f"INSERT OR IGNORE INTO {table} ({names}) VALUES ({', '.join('?' * len(values))})", list(values.values())
    )
