"""The run store: one SQLite file plus a weights folder under a data folder.

Tables:
  runs(id, kind, dataset, status, error, label, config, metrics, teacher_id,
       sweep_id, created, finished, pid, weights)
  epochs(run_id, epoch, loss, ce, kd, train_acc, val_acc, seconds, terms)
          terms: JSON {name: value} of every loss term ("ce" and each method's); ce and kd
          are kept as columns too, so older readers and older rows still read

  sweeps(id, config, created): a sweep's grid, so it can be listed and resumed
  studies(id, config, created): a compress study's search (kd_core.compress); its trials
       live in Optuna's database beside this one (compress.db), its trained trials here as runs

A connection is opened per operation, so any thread may use a Store. A run
left "running" by a process that no longer exists is marked failed on open.

The database is an index, not the only copy: every run that ends also gets a
JSON record beside its weights (weights/<run id>.json: the row, its config,
metrics and epochs; sweeps/<id>.json and studies/<id>.json for saved grids), from which
`kd-studio store repair` (store/repair.py) rebuilds the index. The file runs in
WAL mode (a crash mid-write leaves the last committed state) and is checked with
`PRAGMA quick_check` on open. A damaged, foreign, empty or missing runs.db beside
the files of earlier runs is refused with one message that names the file and
the repair command, never taken as an empty store.

The root is made absolute when the store opens, so a store opened as a relative
folder means the same folder whatever the working directory later is. A run's
weights path is kept relative to the root (a store folder moved or copied
elsewhere still finds its weights) and read back absolute. Rows written before
hold absolute paths (or, from a relative root, paths relative to the working
directory of the time): they are read as they are where the file is there, else
as the file of that name in this store's weights folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from kd_core.config import RunConfig
from kd_core.errors import KDError
from kd_core.events import Progress
from kd_core.records import StoredRun

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, dataset TEXT NOT NULL, status TEXT NOT NULL,
    error TEXT DEFAULT '', label TEXT DEFAULT '', config TEXT NOT NULL, metrics TEXT DEFAULT '{}',
    teacher_id TEXT, sweep_id TEXT, created REAL NOT NULL, finished REAL, pid INTEGER,
    weights TEXT
);
CREATE TABLE IF NOT EXISTS epochs (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE, epoch INTEGER NOT NULL,
    loss REAL, ce REAL, kd REAL, train_acc REAL, val_acc REAL, seconds REAL, terms TEXT,
    PRIMARY KEY (run_id, epoch)
);
CREATE INDEX IF NOT EXISTS runs_by_sweep ON runs(sweep_id);
CREATE TABLE IF NOT EXISTS sweeps (id TEXT PRIMARY KEY, config TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS studies (id TEXT PRIMARY KEY, config TEXT NOT NULL, created REAL NOT NULL);
"""
STATUSES = ("running", "finished", "stopped", "failed")
RUN_FIELDS = {f.name for f in dataclasses.fields(StoredRun)}
RUN_RECORD = "kd-studio-run/1"  # the "format" of a run's JSON record
GRID_RECORD = "kd-studio-grid/1"  # a saved sweep's or compress study's record
GRID_TABLES = ("sweeps", "studies")


def write_json(path: Path, payload: dict, what: str) -> None:
    """Write atomically (a crash leaves the old file or none, never half of one); a full disk
    is a StoreError that says so, with no partial file left behind."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(payload, indent=1, default=str, allow_nan=True))
        tmp.replace(path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise StoreError(
            f"{what} could not be written to {path}: {err.strerror or err}. The index has it; free some space "
            f"and run `{repair_command(path.parent.parent)}` to write it again."
        ) from err


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a store written by an older version up to SCHEMA; old rows keep their values."""
    columns = {r["name"] for r in db.execute("PRAGMA table_info(epochs)")}
    if "terms" not in columns:  # before distillation methods: only ce and kd
        db.execute("ALTER TABLE epochs ADD COLUMN terms TEXT")


def _epoch_row(row: sqlite3.Row) -> dict:
    """A per-epoch row with its `terms` as a dict; rows from before the terms column get
    them from ce and kd (kd only where a teacher was used: it is 0 without one)."""
    d = dict(row)
    if d.get("terms"):
        d["terms"] = json.loads(d["terms"])
    else:
        d["terms"] = {k: d[k] for k in ("ce", "kd") if d[k] is not None and (k == "ce" or d[k] != 0)}
    return d


class StoreError(KDError):
    """The run store cannot be opened or is not a KD Studio store."""


def repair_command(root: Path) -> str:
    return f"kd-studio store repair --store {root}"


def run_files(weights_dir: Path) -> set[str]:
    """Run ids that have a weights file (<id>.pt) or a JSON record (<id>.json) in the weights folder;
    exports beside them (<id>.torchscript.pt, <id>.onnx, ...) and hidden files are not runs."""
    if not weights_dir.is_dir():
        return set()
    names = (p.name.partition(".") for p in weights_dir.iterdir() if not p.name.startswith("."))
    return {rid for rid, _, ext in names if ext in ("pt", "json")}


def store_error(root: Path, db_path: Path, err: sqlite3.Error) -> StoreError:
    """One line that says what is wrong with the file and what to do."""
    text = str(err)
    if any(w in text for w in ("malformed", "not a database", "corrupt")):
        return StoreError(
            f"cannot open the run store {db_path}: it is damaged ({text}). Run `{repair_command(root)}` to rebuild "
            "its index from the weights folder (the damaged file is kept beside it)."
        )
    if "full" in text or "disk I/O" in text:
        return StoreError(
            f"could not write to the run store {db_path}: {text}. Free some space on its disk; "
            "the runs stored so far are kept."
        )
    if "locked" in text or "busy" in text:
        return StoreError(f"the run store {db_path} stayed locked by another process for 30 s ({text}); try again.")
    return StoreError(f"the run store {db_path}: {text}")


class Store:
    def __init__(self, root: str | Path = "kd_runs"):
        self.root = Path(root).expanduser().resolve()
        self.weights_dir = self.root / "weights"
        self.db_path = self.root / "runs.db"
        try:
            self.weights_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"cannot open the run store at {self.root}: {err}") from err
        self._check_file()
        with self._connect() as db:
            db.executescript(SCHEMA)
            _migrate(db)
        self._mark_orphans_failed()

    def _check_file(self) -> None:
        """Refuse a runs.db that is damaged, another program's, or an empty or missing file
        beside the files of earlier runs (SQLite would take either as a new, empty store).
        Read-only: a refused file is left exactly as it was found, for `store repair`."""
        tables: set[str] = set()
        if self.db_path.is_file() and self.db_path.stat().st_size > 0:
            try:
                with closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)) as db:
                    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                    verdict = db.execute("PRAGMA quick_check").fetchone()[0] if "runs" in tables else "ok"
            except sqlite3.Error as err:
                raise store_error(self.root, self.db_path, err) from err
            if verdict != "ok":
                raise store_error(self.root, self.db_path, sqlite3.DatabaseError(f"corrupt: {verdict}"))
            if "runs" in tables:
                return
        if tables:
            raise StoreError(
                f"cannot open the run store {self.db_path}: it is an SQLite database of another program "
                f"(tables {', '.join(sorted(tables))}), not a KD Studio store. Point --store at another folder, "
                f"or run `{repair_command(self.root)}` to move it aside and rebuild the index."
            )
        found = run_files(self.weights_dir)
        if found:
            raise StoreError(
                f"the run store {self.db_path} holds no index of runs (the file is missing or empty), but {self.weights_dir} "
                f"holds the files of {len(found)} earlier run(s). Run `{repair_command(self.root)}` to rebuild "
                "the index from them."
            )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            with closing(sqlite3.connect(self.db_path, timeout=30)) as db:
                db.row_factory = sqlite3.Row
                db.execute("PRAGMA foreign_keys = ON")
                db.execute("PRAGMA journal_mode = WAL")
                with db:  # one transaction: committed on success, rolled back on error
                    yield db
        except sqlite3.Error as err:  # a damaged page, a full disk: one message, never a traceback
            raise store_error(self.root, self.db_path, err) from err

    def _mark_orphans_failed(self) -> None:
        with self._connect() as db:
            rows = db.execute("SELECT id, pid FROM runs WHERE status = 'running'").fetchall()
            dead = [r["id"] for r in rows if not _pid_alive(r["pid"])]
            db.executemany(
                "UPDATE runs SET status = 'failed', finished = ?, "
                "error = 'the process running it ended before it finished' WHERE id = ?",
                [(time.time(), rid) for rid in dead],
            )
        for rid in dead:
            self.write_record(rid)

    # ------------------------------------------------------------ writing

    def create_run(self, cfg: RunConfig, label: str = "") -> str:
        run_id = f"{cfg.kind[0]}{time.strftime('%m%d-%H%M%S')}-{secrets.token_hex(4)}"
        with self._connect() as db:
            db.execute(
                "INSERT INTO runs (id, kind, dataset, status, label, config, teacher_id, sweep_id, "
                "created, pid) VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    cfg.kind,
                    cfg.data.dataset,
                    label or cfg.model.label(),
                    cfg.to_json(),
                    cfg.teacher_id,
                    cfg.sweep_id,
                    time.time(),
                    os.getpid(),
                ),
            )
        return run_id

    def add_epoch(self, rec: Progress) -> None:
        """Consume an "epoch" progress record (other records are ignored)."""
        if rec.event != "epoch" or not rec.run_id:
            return
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO epochs (run_id, epoch, loss, ce, kd, train_acc, val_acc, "
                "seconds, terms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rec.run_id,
                    rec.epoch,
                    rec.loss,
                    rec.terms.get("ce"),
                    rec.terms.get("kd", 0.0),
                    rec.train_acc,
                    rec.val_acc,
                    rec.elapsed_s,
                    json.dumps(rec.terms),
                ),
            )

    def finish_run(self, run_id: str, status: str, metrics: dict, error: str = "", weights: Path | None = None) -> None:
        assert status in STATUSES, status
        with self._connect() as db:
            db.execute(
                "UPDATE runs SET status = ?, error = ?, metrics = ?, finished = ?, weights = ? WHERE id = ?",
                (status, error, json.dumps(metrics), time.time(), self._relative(weights), run_id),
            )
        self.write_record(run_id)

    def record(self, run_id: str) -> dict | None:
        """A run's JSON record: its row as stored (config and metrics parsed) and its epochs."""
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            epochs = db.execute("SELECT * FROM epochs WHERE run_id = ? ORDER BY epoch", (run_id,)).fetchall()
        if row is None:
            return None
        run = {**dict(row), "config": json.loads(row["config"]), "metrics": json.loads(row["metrics"] or "{}")}
        return {"format": RUN_RECORD, "run": run, "epochs": [dict(e) for e in epochs]}

    def write_record(self, run_id: str) -> None:
        """Write weights/<run id>.json, the copy of the run that `store repair` rebuilds the index from."""
        rec = self.record(run_id)
        if rec is not None:
            write_json(self.weights_dir / f"{run_id}.json", rec, f"run {run_id}'s record")

    def save_sweep(self, sweep_id: str, config: dict) -> None:
        """Keep a sweep's grid; its runs carry the id, this keeps the cells not yet run."""
        self._save_grid("sweeps", sweep_id, config)

    def save_study(self, study_id: str, config: dict) -> None:
        """Keep a compress study's search; its runs carry the id in their config."""
        self._save_grid("studies", study_id, config)

    def _save_grid(self, table: str, key: str, config: dict) -> None:
        """A row of a table of saved grids (GRID_TABLES), and its JSON record in the folder of that
        name (sweeps/<id>.json), from which `store repair` brings it back."""
        created = time.time()
        with self._connect() as db:
            db.execute(
                f"INSERT OR REPLACE INTO {table} VALUES (?, ?, ?)", (key, json.dumps(config, sort_keys=True), created)
            )
        record = {"format": GRID_RECORD, "table": table, "id": key, "config": config, "created": created}
        write_json(self.root / table / f"{key}.json", record, f"{table} {key}'s record")

    def weights_path(self, run_id: str) -> Path:
        return self.weights_dir / f"{run_id}.pt"

    def _relative(self, weights: Path | None) -> str | None:
        """How a weights path is kept: relative to the root when it lies under it (as POSIX
        text, so a store copied between systems still reads), else absolute."""
        if not weights:
            return None
        path = Path(weights).expanduser()
        path = (path if path.is_absolute() else Path.cwd() / path).resolve()
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def _absolute(self, stored: str | None) -> str | None:
        """A stored weights path as an absolute path: relative ones are under the root. A path
        that names no file (an older row: absolute in a store since moved, or relative to the
        working directory of the process that wrote it) falls back to the file of that name in
        this store's weights folder, where the store always writes weights, if it is there."""
        if not stored:
            return stored
        path = Path(stored)
        path = path if path.is_absolute() else self.root / path
        if not path.is_file() and (self.weights_dir / path.name).is_file():
            path = self.weights_dir / path.name
        return str(path)

    def delete_run(self, run_id: str) -> None:
        """Remove a run, its epochs and its files. The record goes first, so that an interrupted
        delete never has `store repair` bring the run back."""
        (self.weights_dir / f"{run_id}.json").unlink(missing_ok=True)
        with self._connect() as db:
            db.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        for path in self.weights_dir.glob(f"{run_id}.*"):
            path.unlink(missing_ok=True)

    # ------------------------------------------------------------ reading

    def _row(self, row: sqlite3.Row) -> StoredRun:
        """A runs row as a StoredRun: the config typed, the metrics parsed, the weights path absolute
        (columns the record does not name are left out)."""
        d = {k: v for k, v in dict(row).items() if k in RUN_FIELDS}
        d.update(
            config=RunConfig.from_json(d["config"]),
            metrics=json.loads(d["metrics"] or "{}"),
            weights=self._absolute(d["weights"]),
        )
        return StoredRun(**d)

    def get_run(self, run_id: str) -> StoredRun | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return self._row(row) if row else None

    def list_runs(
        self,
        kind: str | None = None,
        dataset: str | None = None,
        status: str | None = None,
        sweep_id: str | None = None,
        limit: int | None = None,
    ) -> list[StoredRun]:
        """Runs, newest first, optionally filtered; the newest `limit` only if given (each row's
        JSON is parsed: the Overview's "last student" need not parse a whole store's)."""
        clauses: list[str] = []
        args: list[str | int] = []
        for column, value in (("kind", kind), ("dataset", dataset), ("status", status), ("sweep_id", sweep_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        if limit is not None:
            args.append(int(limit))
        with self._connect() as db:
            rows = db.execute(
                f"SELECT * FROM runs {where} ORDER BY created DESC{' LIMIT ?' if limit is not None else ''}", args
            ).fetchall()
        return [self._row(r) for r in rows]

    def epochs(self, run_id: str) -> list[dict]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM epochs WHERE run_id = ? ORDER BY epoch", (run_id,)).fetchall()
        return [_epoch_row(r) for r in rows]

    def epochs_of(self, run_ids: list[str]) -> dict[str, list[dict]]:
        """Per-epoch rows of many runs in one query: {run_id: [rows by epoch]} (runs without
        epochs are absent)."""
        out: dict[str, list[dict]] = {}
        ids = list(run_ids)
        with self._connect() as db:
            for i in range(0, len(ids), 500):  # SQLite's bound-parameter limit
                chunk = ids[i : i + 500]
                rows = db.execute(
                    f"SELECT * FROM epochs WHERE run_id IN ({','.join('?' * len(chunk))}) ORDER BY run_id, epoch", chunk
                ).fetchall()
                for r in rows:
                    out.setdefault(r["run_id"], []).append(_epoch_row(r))
        return out

    def _saved(self, table: str, key: str | None = None) -> list[dict]:
        """Rows of a table of saved grids (sweeps, studies) as {"id", "config", "created"}, newest
        first: all of them, or the one with id `key`."""
        where, args = ("WHERE id = ?", (key,)) if key is not None else ("", ())
        with self._connect() as db:
            rows = db.execute(f"SELECT * FROM {table} {where} ORDER BY created DESC", args).fetchall()
        return [{**dict(r), "config": json.loads(r["config"])} for r in rows]

    def get_sweep(self, sweep_id: str) -> dict | None:
        """{"id", "config", "created"} of a saved sweep, or None."""
        return next(iter(self._saved("sweeps", sweep_id)), None)

    def list_sweeps(self) -> list[dict]:
        """Saved sweeps, newest first."""
        return self._saved("sweeps")

    def get_study(self, study_id: str) -> dict | None:
        """{"id", "config", "created"} of a saved compress study, or None."""
        return next(iter(self._saved("studies", study_id)), None)

    def list_studies(self) -> list[dict]:
        """Saved compress studies, newest first."""
        return self._saved("studies")
