"""`kd-studio ui`: start the dashboard (`streamlit run app.py`) from any folder.

The dashboard (app.py, app_pages/, ui/) lives beside the kd_core package in a source
checkout, which `pip install -e .` keeps in place; kd_core itself never imports
streamlit, so the server runs as a child process.

The server always runs headless (.streamlit/config.toml beside app.py): Streamlit's own
first-start prompt for an e-mail address would otherwise hold a fresh install at the
terminal. Unless --headless is given, this command opens the browser itself once the
server answers.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import webbrowser
from collections.abc import Iterator
from pathlib import Path

from kd_core.errors import ConfigError

APP = Path(__file__).resolve().parents[2] / "app.py"
SERVE = APP.parent / "ui" / "serve.py"  # streamlit run app.py, after importing what its pages need


def cmd_ui(a: argparse.Namespace) -> int:
    if not APP.is_file():
        raise ConfigError(
            f"the dashboard's app.py is not at {APP}: install KD Studio from a source checkout "
            "with `pip install -e .` and run `kd-studio ui` again."
        )
    cmd = [sys.executable, str(SERVE), "--server.port", str(a.port), "--server.headless", "true"]
    if not a.headless:
        threading.Thread(target=open_when_up, args=(f"http://localhost:{a.port}",), daemon=True).start()
    server = subprocess.Popen(cmd, cwd=a.cwd or None)
    with _forwarding_signals(server):
        code = server.wait()
    return 128 - code if code < 0 else code  # killed by signal N: the shell's 128 + N


@contextlib.contextmanager
def _forwarding_signals(server: subprocess.Popen) -> Iterator[None]:
    """SIGINT / SIGTERM sent to this process (`docker stop`, systemd, kill) go on to the server,
    which stops its live job, stores it as `stopped` and exits; dying here instead would leave
    the server running without a parent, or, killed with it, the job's run orphaned."""

    def forward(signum, _frame) -> None:
        if server.poll() is None:
            server.send_signal(signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def open_when_up(url: str, timeout: float = 120.0) -> bool:
    """Open `url` in the user's browser once the server's health check answers (True), or give
    up after `timeout` seconds (False); the server prints its address either way."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return webbrowser.open(url)
        except OSError:
            time.sleep(0.5)
    return False


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ui", help="start the dashboard (Streamlit) on http://localhost:PORT")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--headless", action="store_true", help="do not open a browser")
    p.add_argument("--cwd", default=None, help="folder the dashboard runs in (its default run store is kd_runs/ there)")
    p.set_defaults(fn=cmd_ui)
