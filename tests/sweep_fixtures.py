"""Shared by the sweep tests: digits, a small teacher and a 2 × 2 grid that runs in seconds.

Imported by the test modules (pytest puts tests/ on sys.path), which use the
fixtures by name. Training uses one torch thread, so numbers are the same
whichever backend runs a cell; the thread count is restored afterwards.
"""

import pytest
import torch

from kd_core.config import DataConfig, ModelSpec, RunConfig, TrainConfig
from kd_core.store import Store
from kd_core.sweep.grid import SweepConfig
from kd_core.train.data import load_dataset
from kd_core.train.recorder import train_teacher

TINY_TRAIN = TrainConfig(epochs=1, lr=3e-3, threads=1)


def tiny_sweep(teacher: str, seeds=(0,), sizes=(16,)) -> SweepConfig:
    """T ∈ {1, 4} × λ ∈ {0.5, 0.9}: with one size and seed, 4 students and 1 baseline."""
    return SweepConfig(
        temperatures=(1.0, 4.0),
        alphas=(0.5, 0.9),
        sizes=tuple(sizes),
        seeds=tuple(seeds),
        teacher_id=teacher,
        train=TINY_TRAIN,
    )


@pytest.fixture(scope="module")
def sweep_data():
    return load_dataset(DataConfig("digits"))


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory, sweep_data):
    """A checkpoint path, so that sweeps in any store can use the same teacher."""
    threads = torch.get_num_threads()
    store = Store(tmp_path_factory.mktemp("teacher"))
    cfg = RunConfig(model=ModelSpec("mlp", 64, 1), train=TrainConfig(epochs=2, threads=1))
    outcome = train_teacher(store, cfg, sweep_data)
    assert outcome.status == "finished"
    yield str(store.weights_path(outcome.run_id))
    torch.set_num_threads(threads)
