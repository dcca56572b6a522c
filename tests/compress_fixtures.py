"""Shared by the compress tests: digits, a teacher checkpoint, a tiny study config.

Latency is timed under eager PyTorch in most tests (no export: seconds, not minutes); sizes
are deterministic (the bytes of a state dict), so a size budget splits candidates the same way
on any machine, where a latency budget would depend on the load of a shared box.
"""

import pytest
import torch

from kd_core.compress.config import CompressConfig, Goal
from kd_core.compress.space import SearchSpace
from kd_core.config import DataConfig, ModelSpec, RunConfig, TrainConfig
from kd_core.store import Store
from kd_core.train.data import load_dataset
from kd_core.train.recorder import train_teacher

# state dict bytes of an MLP w on digits (64 inputs, 10 classes) ≈ 4·(75w + 10) + pickling: a 0.02 MB
# budget keeps widths up to ~60 and prunes the wider ones before they train.
SIZE_BUDGET_MB = 0.02


def tiny_config(teacher: str, **kw) -> CompressConfig:
    base = dict(
        teacher_id=teacher,
        data=DataConfig("digits"),
        train=TrainConfig(epochs=2, lr=1e-2, threads=1, device="cpu"),
        runtime="eager",
        goal=Goal(max_drop=15.0, max_size_mb=SIZE_BUDGET_MB),
        space=SearchSpace(mlp_widths=(16, 256), mlp_depths=(1, 1)),
        sampler="random",
        trials=5,
        seed=4,
    )
    return CompressConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def cdata():
    return load_dataset(DataConfig("digits"))


@pytest.fixture(scope="module")
def cteacher(tmp_path_factory, cdata):
    """A checkpoint path (an MLP 128 trained 4 epochs), so that any store can use it."""
    threads = torch.get_num_threads()
    store = Store(tmp_path_factory.mktemp("cteacher"))
    cfg = RunConfig(model=ModelSpec("mlp", 128, 1), train=TrainConfig(epochs=4, lr=3e-3, threads=1, device="cpu"))
    outcome = train_teacher(store, cfg, cdata)
    assert outcome.status == "finished"
    yield str(store.weights_path(outcome.run_id))
    torch.set_num_threads(threads)
