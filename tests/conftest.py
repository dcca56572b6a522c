"""The fixtures every test module shares (plain helpers live in helpers.py, app_helpers.py
and stores.py): digits, a tiny trained teacher, run stores trained for real, and the
KD_RUNS / KD_DATA environment the dashboard reads.

Everything here is real: real files in tmp_path, the real engine. Stores are built once
(per session or module) and copied for a test that changes them.
"""

from __future__ import annotations

import shutil

import pytest
import streamlit.testing.v1.app_test as app_test
import torch

from helpers import TEACHER_SPEC, make_config
from kd_core.config import DataConfig
from kd_core.train.data import load_dataset
from kd_core.train.engine import fit
from stores import STUDY_TEACHER, add_scale_runs, checkpoint_teacher, compare_store, sweep_store

# Tiny models gain nothing from intra-op threads, and a busy 2-core box loses a lot to them.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits():
    """sklearn's bundled digits (1797 images, 1x8x8), split and normalised."""
    return load_dataset(DataConfig("digits"))


@pytest.fixture(scope="session")
def teacher(digits):
    """An MLP 128 teacher trained for 3 epochs on digits (eval mode)."""
    result = fit(make_config("teacher", TEACHER_SPEC, epochs=3), digits)
    assert result.status == "finished", result.message
    return result.model


@pytest.fixture(scope="session")
def teacher_path(tmp_path_factory, digits) -> str:
    """A teacher's checkpoint path, so that sweeps in any store can use the same teacher (read only)."""
    return checkpoint_teacher(tmp_path_factory.mktemp("teacher"), digits)


@pytest.fixture(scope="session")
def cteacher(tmp_path_factory, digits) -> str:
    """The compress tests' teacher checkpoint (an MLP 128 trained 4 epochs; read only)."""
    threads = torch.get_num_threads()
    path = checkpoint_teacher(tmp_path_factory.mktemp("cteacher"), digits, STUDY_TEACHER)
    torch.set_num_threads(threads)
    return path


# ---------------------------------------------------------------- the dashboard: its run stores (KD_RUNS), its downloads


@pytest.fixture
def media(monkeypatch) -> list:
    """AppTest's in-memory media storages, to read what a download button serves."""
    stores = []

    class Capture(app_test.MemoryMediaFileStorage):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            stores.append(self)

    monkeypatch.setattr(app_test, "MemoryMediaFileStorage", Capture)
    return stores


def point_app_at(monkeypatch, runs, data) -> None:
    monkeypatch.setenv("KD_RUNS", str(runs))
    monkeypatch.setenv("KD_DATA", str(data))


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    """An empty run store folder (not yet created) that the dashboard reads."""
    point_app_at(monkeypatch, tmp_path / "runs", tmp_path / "data")
    return tmp_path / "runs"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, digits) -> dict:
    """The Compare tests' store: two teachers, their students, a baseline and a failed run
    (stores.compare_store); the store and the run ids by role."""
    return compare_store(tmp_path_factory.mktemp("runs"), digits)


@pytest.fixture
def filled_store(runs, tmp_path, monkeypatch) -> dict:
    """`runs`, which the dashboard reads (and must not change)."""
    point_app_at(monkeypatch, runs["store"].root, tmp_path / "data")
    return runs


@pytest.fixture(scope="module")
def scaled_runs(tmp_path_factory, digits) -> dict:
    """The Compare store at scale: `runs` plus older, repeated, swept and stopped students of
    teacher A (stores.add_scale_runs)."""
    ids = compare_store(tmp_path_factory.mktemp("runs"), digits)
    return add_scale_runs(ids["store"], digits, ids)


@pytest.fixture
def scaled_store(scaled_runs, tmp_path, monkeypatch) -> dict:
    """`scaled_runs`, which the dashboard reads (and must not change)."""
    point_app_at(monkeypatch, scaled_runs["store"].root, tmp_path / "data")
    return scaled_runs


@pytest.fixture(scope="session")
def template_store(tmp_path_factory, digits) -> dict:
    """{"root", "teacher_id", "sweep_id"} of the session's store with a finished 2 × 2 sweep
    (stores.sweep_store). Do not change it: use `populated`."""
    threads = torch.get_num_threads()
    made = sweep_store(tmp_path_factory.mktemp("experiments") / "runs", digits)
    torch.set_num_threads(threads)
    return made


@pytest.fixture
def populated(template_store, tmp_path, monkeypatch) -> dict:
    """A copy of the template store, which the dashboard (KD_RUNS) and the test may change."""
    root = tmp_path / "runs"
    shutil.copytree(template_store["root"], root)
    point_app_at(monkeypatch, root, tmp_path / "data")
    return {**template_store, "root": root}
