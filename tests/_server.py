"""A real `streamlit run app.py` server in a subprocess, and a few Playwright page
helpers, for the browser test and the dashboard benchmark (imported by both; no pytest
fixtures here, so conftest.py stays someone else's).

    with StreamlitServer(runs=..., data=...) as server:
        page.goto(server.url + "/distill")
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# How a server is started: "serve" as `kd-studio ui` starts it (ui/serve.py: `streamlit run app.py`,
# preloaded); "plain" the same server with nothing preloaded; "cli" `python -m kd_core ui` itself
# (the start-up benchmark's arms).
LAUNCHERS = {
    "serve": [str(REPO / "ui" / "serve.py")],
    "plain": [str(REPO / "ui" / "serve.py"), "--no-preload"],
    "cli": [],
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kd_env(runs: Path, data: Path, **extra: str) -> dict:
    """The environment of a child process: this interpreter's, the repo importable,
    KD_RUNS / KD_DATA pointing at the given folders."""
    env = dict(os.environ)
    env["KD_RUNS"], env["KD_DATA"] = str(runs), str(data)
    env.update(extra)
    return env


def require_browser():
    """For a browser test module's top: skip the module (with the reason) unless Debian's
    chromium and the playwright package are there; returns `playwright.sync_api`."""
    import pytest

    if not os.path.exists(CHROMIUM):
        pytest.skip(
            f"browser tests need Debian's chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True
        )
    return pytest.importorskip("playwright.sync_api", reason="browser tests need the playwright package")


def launch_browser(playwright):
    """Debian's chromium, headless (never Playwright's own download)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


class StreamlitServer:
    """`python ui/serve.py` (`streamlit run app.py`, preloaded, as `kd-studio ui` runs it) on a
    free port, cwd a temp dir; `stop()` terminates it (SIGTERM, so atexit handlers such as
    JobManager.shutdown run) and waits for it."""

    def __init__(
        self,
        runs: Path,
        data: Path,
        cwd: Path | None = None,
        port: int | None = None,
        env: dict | None = None,
        log: Path | None = None,
        launcher: str = "serve",
    ):
        self.runs, self.data = Path(runs), Path(data)
        assert launcher in LAUNCHERS, launcher
        self.launcher = launcher
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._own_cwd = cwd is None
        self.cwd = Path(cwd) if cwd else Path(tempfile.mkdtemp(prefix="kd_server_"))
        self.env = env or kd_env(self.runs, self.data)
        self.log_path = Path(log) if log else self.cwd / "streamlit.log"
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.returncode: int | None = None

    def start(self, timeout: float = 90.0) -> StreamlitServer:
        if self.launcher == "cli":  # what a user types; it runs ui/serve.py, on all interfaces
            cmd = [sys.executable, "-m", "kd_core", "ui", "--headless", "--port", str(self.port)]
        else:
            cmd = [
                sys.executable,
                *LAUNCHERS[self.launcher],
                "--server.headless",
                "true",
                "--server.port",
                str(self.port),
                "--server.address",
                "127.0.0.1",
                # browser.gatherUsageStats is off in .streamlit/config.toml beside app.py, which the
                # browser tests thus check: its failed fetches would be console errors. The file watcher
                # is off and the per-run gc too, by serve.py itself (serve.SERVER_FLAGS).
            ]
        self._log = open(self.log_path, "wb")  # noqa: SIM115  (open for the server's lifetime; stop() closes it)
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(cmd, cwd=self.cwd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"streamlit did not serve {self.url} within {timeout:.0f} s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, then wait; SIGKILL only if it hangs. Returns the exit code."""
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.returncode = self.proc.returncode
        self._log.close()
        self.proc = None
        return self.returncode

    def cleanup(self) -> None:
        if self._own_cwd:
            shutil.rmtree(self.cwd, ignore_errors=True)

    def __enter__(self) -> StreamlitServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------- page helpers (Playwright)


def wait_until(predicate, timeout: float, interval: float = 0.25, what: str = "condition"):
    """Poll `predicate` until it returns something truthy (returned) or `timeout` s pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def settle(page, heading: str, timeout: float = 90.0) -> None:
    """The page's title is shown and the script run is over (no 'Running…' status widget
    for half a second), so whatever the script draws, an exception included, is on screen."""
    page.get_by_role("heading", name=heading, exact=True).first.wait_for(timeout=timeout * 1000)
    status = page.locator('[data-testid="stStatusWidget"]')

    def idle() -> bool:
        if status.count():
            return False
        page.wait_for_timeout(500)
        return status.count() == 0

    wait_until(idle, timeout, what=f"the {heading} page to finish running")


def slider_value(page, label: str) -> str:
    """The value a slider displays above its thumb."""
    box = page.locator('[data-testid="stSlider"]').filter(has_text=label)
    return box.locator('[data-testid="stSliderThumbValue"]').inner_text().strip()
