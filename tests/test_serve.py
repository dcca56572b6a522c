"""The settings `kd-studio ui` (ui/serve.py) starts the server with, read back through Streamlit's own
command-line parser (`streamlit run`), as the server would see them."""

from __future__ import annotations

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
