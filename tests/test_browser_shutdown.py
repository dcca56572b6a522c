"""The dashboard server shut down while a job trains: `kd-studio ui` gets SIGTERM (as from
`docker stop` or systemd), passes it on to the Streamlit server, whose exit stops the live job
between two steps and stores it as `stopped`, best weights and curves kept: not orphaned, not
left `running`, not marked failed on the next open."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from contextlib import closing

import pytest

from _server import free_port, kd_env, launch_browser, require_browser, settle, wait_until
from kd_core.store import Store
from kd_core.train.checkpoint import load_checkpoint

sync_api = require_browser()
pytestmark = pytest.mark.browser
LONG = 90.0
# A teacher that 100 epochs at batch 16 make outlast the test on any machine.
LONG_RUN = "t_family=mlp&t_size=1024&t_depth=3&t_epochs=100&t_bs=16"


def epochs_stored(db) -> int:
    try:
        with closing(sqlite3.connect(db, timeout=5)) as conn:
            return conn.execute("SELECT count(*) FROM epochs").fetchone()[0]
    except sqlite3.Error:
        return 0


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def train_until_an_epoch_is_stored(url: str, runs) -> None:
    with sync_api.sync_playwright() as pw:
        browser = launch_browser(pw)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.set_default_timeout(LONG * 1000)
        page.goto(f"{url}/teacher?{LONG_RUN}")
        settle(page, "Teacher", LONG)
        page.get_by_role("button", name="Train teacher", exact=True).click()
        wait_until(lambda: epochs_stored(runs / "runs.db") >= 1, 300, what="a first stored epoch")
        browser.close()


def test_sigterm_to_kd_studio_ui_stops_and_stores_the_live_job(tmp_path):
    runs, data = tmp_path / "runs", tmp_path / "data"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "kd_core", "ui", "--headless", "--port", str(port), "--cwd", str(tmp_path)]
    with open(tmp_path / "ui.log", "wb") as log:
        server = subprocess.Popen(cmd, env=kd_env(runs, data), stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: healthy(url) or server.poll() is not None, LONG, what="the server to start")
            assert server.poll() is None, (tmp_path / "ui.log").read_text()
            train_until_an_epoch_is_stored(url, runs)
            server.send_signal(signal.SIGTERM)  # to kd-studio ui, the parent, as a service manager would
            code = server.wait(timeout=120)
        finally:
            if server.poll() is None:
                server.kill()
    assert code == 0, (tmp_path / "ui.log").read_text()[-3000:]
    (run,) = Store(runs).list_runs(kind="teacher")
    assert run.status == "stopped", run
    assert run.metrics["epochs_done"] >= 1 and load_checkpoint(run.weights)
    record = json.loads((runs / "weights" / f"{run.id}.json").read_text())
    assert record["run"]["status"] == "stopped" and len(record["epochs"]) == run.metrics["epochs_done"]
