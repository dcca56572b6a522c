"""Faults as they happen to a real install: Ctrl-C and SIGTERM mid-run, a damaged page of the SQLite
file, a runs.db truncated to zero, a disk that fills during a weights write, a store that breaks
under the dashboard. In each case: no earlier run is lost, and the message says what happened and
what to do (one `error:` line from the CLI, never a traceback)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import signal
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from damage import checkpointed, corrupt_page, snapshot
from helpers import cli_command, cli_env, run_cli
from kd_core.cli import main
from kd_core.store import Store
from kd_core.train.checkpoint import load_checkpoint

APP = str(Path(__file__).resolve().parents[1] / "app.py")
SMALL = ["--size", "16", "--depth", "1", "--quiet"]


def cli(*args) -> subprocess.CompletedProcess:
    """The CLI's `main` in this process (the same code as `kd-studio`, without an interpreter and
    torch to start): its exit code and what it printed. One case of each kind also runs as a process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


@pytest.fixture
def earlier(tmp_path):
    """A store with one finished teacher from the CLI: the run no fault may take away."""
    store = tmp_path / "store"
    proc = cli("teacher", "--epochs", "2", *SMALL, "--store", store)
    assert proc.returncode == 0, proc.stderr
    return store, snapshot(Store(store))


def assert_kept(store: Path, before: dict) -> None:
    """Every earlier run is there as it was, with weights that load."""
    s = Store(store)
    now = snapshot(s)
    assert {k: now.get(k) for k in before} == before
    for run_id in before:
        run = s.get_run(run_id)
        if run.weights:
            load_checkpoint(run.weights)


def one_error_line(proc: subprocess.CompletedProcess, *phrases: str) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for phrase in phrases:
        assert phrase in errors[0], errors[0]
    return errors[0]


# ---------------------------------------------------------------- signals


def epochs_of_running_run(db: Path) -> int:
    try:
        with closing(sqlite3.connect(db, timeout=5)) as conn:
            row = conn.execute(
                "SELECT count(*) FROM epochs JOIN runs ON runs.id = epochs.run_id WHERE runs.status = 'running'"
            ).fetchone()
        return row[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow  # a real CLI process trains until the signal: ~8 s on an idle 2-core machine
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_mid_run_stops_it_with_its_best_weights_and_curves(earlier, sig, code):
    store, before = earlier
    proc = subprocess.Popen(
        cli_command("teacher", "--epochs", "5000", *SMALL, "--store", store),
        env=cli_env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while epochs_of_running_run(store / "runs.db") < 3:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
            time.sleep(0.1)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert "Traceback" not in err and f"{signal.Signals(sig).name}: stopped" in err
    assert " stopped " in out
    assert_kept(store, before)
    (run,) = [r for r in Store(store).list_runs() if r.id not in before]
    assert run.status == "stopped"
    epochs = Store(store).epochs(run.id)
    assert len(epochs) >= 3 and len(epochs) == run.metrics["epochs_done"]
    best = max(e["val_acc"] for e in epochs)
    assert run.metrics["best_val_acc"] == pytest.approx(best)  # the best epoch's weights were kept
    model, _ = load_checkpoint(run.weights)
    assert model is not None
    assert json.loads((store / "weights" / f"{run.id}.json").read_text())["run"]["status"] == "stopped"


# ---------------------------------------------------------------- a damaged index


@pytest.mark.parametrize("damage", ["corrupt runs page", "corrupt epochs page", "truncated to zero"])
def test_a_damaged_index_is_refused_clearly_and_repaired_without_loss(earlier, tmp_path, damage):
    store, before = earlier
    db = store / "runs.db"
    if damage == "truncated to zero":
        checkpointed(db)
        db.write_bytes(b"")
    else:
        corrupt_page(db, damage.split()[1])

    # As a user runs it (a real process) once; the other kinds through the same `main` in this process.
    listed = (
        run_cli(tmp_path, "runs", "--store", store) if damage == "corrupt runs page" else cli("runs", "--store", store)
    )
    assert listed.returncode == 2
    line = one_error_line(listed, str(db), f"kd-studio store repair --store {store}")
    assert listed.stdout == ""
    trained = cli("teacher", "--epochs", "1", *SMALL, "--store", store)
    assert trained.returncode == 2 and one_error_line(trained) == line  # nothing trains into it
    checked = cli("store", "check", "--store", store)
    assert checked.returncode == 2 and "to fix: kd-studio store repair" in checked.stdout

    repaired = cli("store", "repair", "--store", store)
    assert repaired.returncode == 0, repaired.stderr
    assert "moved it aside" in repaired.stdout and "from JSON records" in repaired.stdout
    assert_kept(store, before)
    again = cli("runs", "--store", store)
    assert again.returncode == 0 and all(run_id in again.stdout for run_id in before)


def test_the_dashboard_shows_a_damaged_store_as_a_message(earlier, monkeypatch):
    store, _ = earlier
    monkeypatch.setenv("KD_RUNS", str(store))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception and not at.error
    corrupt_page(store / "runs.db", "runs")  # breaks under the open (cached) store
    at.switch_page("app_pages/runs.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("kd-studio store repair" in e.value for e in at.error), [e.value for e in at.error]
    at.run()  # the next run reopens the store, whose check on open refuses it
    assert not at.exception
    assert any("damaged" in e.value and "kd-studio store repair" in e.value for e in at.error)


# ---------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path):
    """A real 4 MiB tmpfs mounted for the test (root and mount permission needed, else skipped)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if not shutil.which("mount"):
        pytest.skip("no mount command: cannot make a small file system to fill")
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root in a container allowed to mount): {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path, leave: int) -> None:
    """Fill the file system of `folder` to within `leave` bytes of full."""
    with open(folder / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    size = (folder / "filler").stat().st_size
    with open(folder / "filler", "r+b") as f:
        f.truncate(max(0, size - leave))


@pytest.mark.slow  # a real CLI process trains a 300 k-parameter model into the full disk
def test_a_disk_that_fills_during_a_weights_write_loses_nothing(small_disk, tmp_path):
    store = small_disk / "store"
    first = cli("teacher", "--epochs", "2", *SMALL, "--store", store)
    assert first.returncode == 0, first.stderr
    before = snapshot(Store(store))
    fill(small_disk, leave=400_000)  # room for the index's rows, not for 1.2 MB of weights

    big = run_cli(tmp_path, "teacher", "--epochs", "2", "--size", "512", "--depth", "2", "--quiet", "--store", store)

    assert big.returncode == 2
    one_error_line(big, "could not write the checkpoint", "the disk is full", "the weights need about 1.2 MB")
    assert not list(store.rglob("*.part"))  # no half-written file under any name
    (small_disk / "filler").unlink()
    assert_kept(store, before)
    (new,) = [r for r in Store(store).list_runs() if r.id not in before]
    assert new.status == "failed" and new.weights is None
    assert not (store / "weights" / f"{new.id}.pt").exists()
    with closing(sqlite3.connect(store / "runs.db")) as conn:
        assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
