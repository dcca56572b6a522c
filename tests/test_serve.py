"""The settings `kd-studio ui` (ui/serve.py) starts the server with, read back through Streamlit's own
command-line parser (`streamlit run`), as the server would see them."""

from __future__ import annotations

import sys
from pathlib import Path

from streamlit.web import cli

from kd_core.cli import ui as ui_cmd
from ui import serve


def parsed(argv: list[str]) -> dict:
    argv = serve.streamlit_argv(argv)
    assert argv[:2] == ["streamlit", "run"]
    return cli.main_run.make_context("run", argv[2:]).params


def test_the_server_runs_without_the_per_run_gc_and_the_file_watcher():
    params = parsed(["--server.port", "8765"])
    assert params["target"] == str(serve.APP)
    assert params["runner_postScriptGC"] is False  # no gc.collect(2) after every live-panel poll
    assert params["server_fileWatcherType"] == "none"
    assert params["server_port"] == 8765


def test_flags_given_to_the_script_win_over_its_defaults():
    params = parsed(["--server.fileWatcherType", "auto", "--runner.postScriptGC", "true"])
    assert params["server_fileWatcherType"] == "auto" and params["runner_postScriptGC"] is True


def test_kd_studio_ui_starts_the_server_through_serve_py():
    assert ui_cmd.SERVE.resolve() == Path(serve.__file__).resolve()


def test_no_preload_is_taken_off_the_flags_streamlit_sees(monkeypatch):
    """`--no-preload` (the start-up benchmark's arm without the preloader) is this script's, not Streamlit's."""
    seen: dict = {}
    monkeypatch.setattr(serve, "preload", lambda: seen.setdefault("preloaded", True))
    monkeypatch.setattr(cli, "main", lambda: seen.setdefault("argv", list(sys.argv)))
    serve.main(["--no-preload", "--server.port", "8765"])
    assert "preloaded" not in seen and serve.NO_PRELOAD not in seen["argv"]
    assert parsed(seen["argv"][3:])["server_port"] == 8765
