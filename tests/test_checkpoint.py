"""Checkpoints: round trip, refusal of another family or dataset, corrupt and foreign files."""

from __future__ import annotations

import io
import os
import pickle

import pytest
import torch

from helpers import TEACHER_SPEC, CodeRunningPickle
from kd_core.config import ModelSpec
from kd_core.errors import CheckpointError
from kd_core.train.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from kd_core.train.models import build_model

CNN_SPEC = ModelSpec("cnn", 4)


@pytest.fixture
def mlp_ckpt(tmp_path, digits, teacher):
    path = tmp_path / "mlp.pt"
    save_checkpoint(path, teacher, TEACHER_SPEC, digits.input_shape, digits.classes, digits.name)
    return path


@pytest.fixture
def cnn_ckpt(tmp_path, digits):
    torch.manual_seed(0)
    model = build_model(CNN_SPEC, digits.input_shape, digits.num_classes)
    path = tmp_path / "cnn.pt"
    save_checkpoint(path, model, CNN_SPEC, digits.input_shape, digits.classes, digits.name)
    return path, model


def test_round_trip_gives_the_same_predictions(mlp_ckpt, digits, teacher):
    model, meta = load_checkpoint(
        mlp_ckpt, expect=TEACHER_SPEC, input_shape=digits.input_shape, num_classes=digits.num_classes
    )
    assert meta == {
        "spec": TEACHER_SPEC,
        "input_shape": digits.input_shape,
        "classes": digits.classes,
        "dataset": "digits",
    }
    assert not model.training
    with torch.no_grad():
        torch.testing.assert_close(model(digits.test_x), teacher.eval()(digits.test_x), rtol=0, atol=0)
    # Bytes and file objects load too (the dashboard's upload widget gives bytes).
    data = mlp_ckpt.read_bytes()
    for source in (data, io.BytesIO(data)):
        again, _ = load_checkpoint(source)
        assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))
    assert not list(mlp_ckpt.parent.glob("*.part"))  # written under a temporary name, then renamed


def test_cnn_round_trip(cnn_ckpt, digits):
    path, original = cnn_ckpt
    model, meta = load_checkpoint(path, expect=ModelSpec("cnn", 4, depth=3))  # depth means nothing for a CNN
    assert meta["spec"].family == "cnn"
    with torch.no_grad():
        torch.testing.assert_close(model(digits.val_x), original.eval()(digits.val_x))


def test_mlp_checkpoint_where_cnn_expected(mlp_ckpt):
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(mlp_ckpt, expect=CNN_SPEC)
    assert "mlp 128" in str(err.value) and "cnn w4" in str(err.value)


def test_cnn_checkpoint_where_mlp_expected(cnn_ckpt):
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(cnn_ckpt[0], expect=TEACHER_SPEC)
    assert "cnn w4" in str(err.value) and "mlp 128" in str(err.value)


@pytest.mark.parametrize("expect", [ModelSpec("mlp", 64, 1), ModelSpec("mlp", 128, 2)])
def test_other_size_or_depth_is_refused(mlp_ckpt, expect):
    with pytest.raises(CheckpointError, match="was expected"):
        load_checkpoint(mlp_ckpt, expect=expect)


def test_other_dataset_shape_or_classes_is_refused(mlp_ckpt):
    with pytest.raises(CheckpointError, match=r"shape \[1, 8, 8\]"):
        load_checkpoint(mlp_ckpt, input_shape=(1, 28, 28))
    with pytest.raises(CheckpointError, match="10 classes"):
        load_checkpoint(mlp_ckpt, num_classes=3)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_real_checkpoint(tmp_path, mlp_ckpt, keep):
    data = mlp_ckpt.read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "payload", [torch.zeros(3), {"weight": torch.ones(2)}, [1, 2, 3], {"format": "something-else/1", "state_dict": {}}]
)
def test_foreign_torch_file(tmp_path, payload):
    path = tmp_path / "foreign.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="not a KD Studio checkpoint"):
        load_checkpoint(path)


def test_plain_state_dict_is_not_enough(tmp_path, teacher):
    path = tmp_path / "state.pt"
    torch.save(teacher.state_dict(), path)
    with pytest.raises(CheckpointError, match="lacks the family"):
        load_checkpoint(path)


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_pickle_with_code_is_refused_and_not_run(tmp_path, writer):
    marker = tmp_path / "was-run"
    path = tmp_path / "evil.pt"
    if writer == "torch":
        torch.save({"format": FORMAT, "state_dict": CodeRunningPickle(str(marker))}, path)
    else:
        path.write_bytes(pickle.dumps(CodeRunningPickle(str(marker)), protocol=2))
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


def test_weights_that_do_not_fit_the_described_model(tmp_path, digits, teacher):
    path = tmp_path / "lying.pt"
    save_checkpoint(path, teacher, ModelSpec("mlp", 64, 1), digits.input_shape, digits.classes, "digits")
    with pytest.raises(CheckpointError, match="do not fit a mlp 64"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "change, word",
    [({"size": "big"}, "malformed"), ({"family": "rnn"}, "invalid model"), ({"input_shape": None}, "malformed")],
)
def test_malformed_metadata(tmp_path, digits, teacher, change, word):
    payload = {
        "format": FORMAT,
        "state_dict": teacher.state_dict(),
        "family": "mlp",
        "size": 128,
        "depth": 1,
        "input_shape": list(digits.input_shape),
        "classes": digits.classes,
        "dataset": "digits",
        **change,
    }
    path = tmp_path / "odd.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=word):
        load_checkpoint(path)
