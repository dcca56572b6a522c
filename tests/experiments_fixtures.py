"""Shared by the Runs and Sweep tests: a store holding a small teacher and a finished
2 × 2 sweep (T ∈ {1, 4} × λ ∈ {0.5, 0.9}, one student size, two seeds, one epoch on
digits): 1 teacher + 2 baselines + 8 students, made once per session in a few seconds
and copied for each test that changes it.

Imported by the test modules (pytest puts tests/ on sys.path), which use the fixtures by name.
"""

import shutil

import pytest
import torch

from kd_core.config import DataConfig, ModelSpec, RunConfig, TrainConfig
from kd_core.store import Store
from kd_core.sweep.grid import SweepConfig, create_sweep
from kd_core.sweep.runner import run_sweep
from kd_core.train.data import load_dataset
from kd_core.train.recorder import train_teacher

GRID = dict(temperatures=(1.0, 4.0), alphas=(0.5, 0.9), sizes=(16,), seeds=(0, 1))
TRAIN = TrainConfig(epochs=1, lr=3e-3, threads=1, device="cpu")
N_RUNS = 1 + 2 * (1 + 4)


@pytest.fixture(scope="session")
def template_store(tmp_path_factory):
    """{"root", "teacher_id", "sweep_id"} of the session's populated store (do not change it)."""
    threads = torch.get_num_threads()
    root = tmp_path_factory.mktemp("experiments") / "runs"
    store = Store(root)
    data = load_dataset(DataConfig("digits"))
    teacher = train_teacher(
        store, RunConfig(model=ModelSpec("mlp", 64, 1), train=TrainConfig(epochs=2, threads=1, device="cpu")), data
    )
    assert teacher.status == "finished", teacher.message
    sweep_id = create_sweep(store, SweepConfig(**GRID, teacher_id=teacher.run_id, train=TRAIN))
    outcomes = run_sweep(store, sweep_id, data)
    assert [o.status for o in outcomes] == ["finished"] * (N_RUNS - 1)
    torch.set_num_threads(threads)
    return {"root": root, "teacher_id": teacher.run_id, "sweep_id": sweep_id}


@pytest.fixture
def populated(template_store, tmp_path, monkeypatch):
    """A copy of the template store, which the dashboard (KD_RUNS) and the test may change."""
    root = tmp_path / "runs"
    shutil.copytree(template_store["root"], root)
    monkeypatch.setenv("KD_RUNS", str(root))
    monkeypatch.setenv("KD_DATA", str(tmp_path / "data"))
    return {**template_store, "root": root}
