"""The sidebar's settings: drawn once by app.py, so they hold across page changes, and kept
in a settings file in the starting store folder, so they hold across server restarts.

ui/prefs.py is tested on real files; the sidebar through AppTest running app.py (the pages
live in app_pages/, so AppTest runs the entry point and its sidebar before each page)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from kd_core.train.precision import bf16_support
from ui import prefs

APP = str(Path(__file__).resolve().parents[1] / "app.py")
DEVICES, THREADS = ["auto", "cpu"], [0, 1, 2, 3, 4]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("KD_DATA", str(tmp_path / "data"))
    return tmp_path / "runs"


# ---------------------------------------------------------------- the file


def test_without_a_file_the_defaults_come_from_the_environment(home):
    settings, problem = prefs.load(DEVICES, THREADS)
    assert problem is None
    assert settings == {
        "store_root": str(home),
        "data_root": str(home.parent / "data"),
        "device": "auto",
        "threads": 0,
        "precision": "fp32",
    }


def test_saved_settings_are_read_back(home):
    assert prefs.save({"store_root": "/x/runs", "data_root": "/x/data", "device": "cpu", "threads": 2}) is None
    assert json.loads((home / prefs.FILE_NAME).read_text())["threads"] == 2
    settings, problem = prefs.load(DEVICES, THREADS)
    assert problem is None
    assert settings == {
        "store_root": "/x/runs",
        "data_root": "/x/data",
        "device": "cpu",
        "threads": 2,
        "precision": "fp32",
    }


def test_a_saved_precision_is_kept_when_offered_and_dropped_when_not(home):
    assert prefs.save({"precision": "bf16", "threads": 1}) is None
    settings, problem = prefs.load(DEVICES, THREADS, precisions=("fp32", "bf16", "auto"))
    assert problem is None and settings["precision"] == "bf16"
    (home / prefs.FILE_NAME).write_text('{"precision": "fp16"}')
    settings, problem = prefs.load(DEVICES, THREADS, precisions=("fp32", "bf16", "auto"))
    assert settings["precision"] == "fp32" and "precision='fp16'" in problem


@pytest.mark.parametrize(
    "content, kept, reason",
    [
        ("{not json", {}, "could not be read"),
        ("[1, 2]", {}, "not a JSON object"),
        ('{"device": "cuda", "threads": 3}', {"threads": 3}, "device 'cuda'"),
        ('{"threads": true, "data_root": "  "}', {}, "threads=True"),
        ('{"threads": 99, "store_root": "/y"}', {"store_root": "/y"}, "threads=99"),
    ],
)
def test_a_bad_file_gives_the_defaults_for_what_is_bad_and_says_why(home, content, kept, reason):
    home.mkdir(parents=True)
    (home / prefs.FILE_NAME).write_text(content)
    settings, problem = prefs.load(DEVICES, THREADS)
    assert reason in problem
    assert settings == {**prefs.defaults(), **kept}


def test_an_unwritable_folder_is_reported_not_raised(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    problem = prefs.save({"threads": 1}, folder=blocker / "runs")  # a folder inside a file
    assert problem is not None and "could not be saved" in problem
    assert not list(tmp_path.glob("**/.kd_studio_settings*"))  # no temporary file left behind


# ---------------------------------------------------------------- the sidebar


def open_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.slow
def test_a_changed_store_folder_holds_on_every_page_and_after_a_restart(home, tmp_path):
    other = tmp_path / "elsewhere"
    at = open_app()
    assert at.text_input(key="store_root").value == str(home)
    at.text_input(key="store_root").set_value(str(other)).run()
    at.selectbox(key="threads").set_value(1).run()
    for page in ("app_pages/teacher.py", "app_pages/runs.py", "app_pages/compare.py"):
        at.switch_page(page).run()
        assert not at.exception, [e.value for e in at.exception]
        assert at.text_input(key="store_root").value == str(other), page
        assert at.selectbox(key="threads").value == 1, page
        if page.endswith("runs.py"):  # the page itself reads the store the sidebar names
            assert any(f"No runs in the store at `{other}`" in i.value for i in at.info)
    assert (other / "runs.db").is_file()  # the store was opened where the user asked

    restarted = open_app()  # a new session of a restarted server: the file, not session state
    assert restarted.text_input(key="store_root").value == str(other)
    assert restarted.selectbox(key="threads").value == 1


def test_a_store_folder_that_cannot_be_opened_stops_the_page_with_the_reason(home, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    at = open_app()
    at.text_input(key="store_root").set_value(str(blocker)).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("cannot open the run store" in e.value for e in at.error)
    assert not at.title  # the page itself did not run against a missing store


@pytest.mark.slow
def test_the_precision_chosen_in_the_sidebar_is_explained_and_kept(home):
    at = open_app()
    assert at.selectbox(key="precision").value == "fp32"
    _, here = bf16_support(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    assert f"Here: {here}" in at.selectbox(key="precision").help  # says what this machine can do
    at.selectbox(key="precision").set_value("bf16").run()
    at.switch_page("app_pages/teacher.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="precision").value == "bf16"
    assert json.loads((home / prefs.FILE_NAME).read_text())["precision"] == "bf16"
    assert open_app().selectbox(key="precision").value == "bf16"  # after a restart: from the file
