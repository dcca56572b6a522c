"""`kd-studio ui`: start the dashboard (`streamlit run app.py`) from any folder.

The dashboard (app.py, app_pages/, ui/) lives beside the kd_core package in a source
checkout, which `pip install -e .` keeps in place; kd_core itself never imports
streamlit, so the server runs as a child process.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from kd_core.errors import ConfigError

APP = Path(__file__).resolve().parents[2] / "app.py"


def cmd_ui(a: argparse.Namespace) -> int:
    if not APP.is_file():
        raise ConfigError(
            f"the dashboard's app.py is not at {APP}: install KD Studio from a source checkout "
            "with `pip install -e .` and run `kd-studio ui` again."
        )
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(a.port)]
    if a.headless:
        cmd += ["--server.headless", "true"]
    try:
        return subprocess.call(cmd, cwd=a.cwd or None)
    except KeyboardInterrupt:
        return 130


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ui", help="start the dashboard (Streamlit) on http://localhost:PORT")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--headless", action="store_true", help="do not open a browser")
    p.add_argument("--cwd", default=None, help="folder the dashboard runs in (its default run store is kd_runs/ there)")
    p.set_defaults(fn=cmd_ui)
