"""Checkpoints trusted no further than they prove: claimed sizes are checked before anything is
allocated, non-finite weights are refused at load, upload and save, and a refused pickle gets our
message, not torch's advice to turn weights_only off. Writes fail cleanly, leaving no .part."""

from __future__ import annotations

import io
import re
import subprocess

import pytest
import torch

from helpers import TEACHER_SPEC, CodeRunningPickle, cli_command, cli_env
from kd_core.config import ModelSpec
from kd_core.errors import CheckpointError
from kd_core.store import Store
from kd_core.train.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from kd_core.train.models import build_model
from kd_core.views import studio


def payload(state_dict, **claims) -> dict:
    return {
        "format": FORMAT,
        "state_dict": state_dict,
        "family": "mlp",
        "size": 16,
        "depth": 1,
        "input_shape": [1, 8, 8],
        "classes": [str(k) for k in range(10)],
        "dataset": "digits",
        **claims,
    }


def as_bytes(p: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(p, buf)
    return buf.getvalue()


@pytest.mark.parametrize(
    "claims, phrase",
    [
        ({"size": 8192, "depth": 8, "input_shape": [3, 4096, 4096]}, "do not fit a mlp 8192"),  # ~1.6 TB of weights
        ({"family": "cnn", "size": 8192, "input_shape": [3, 100_000, 100_000]}, "input shape of [3, 100000, 100000]"),
        ({"input_shape": [0, 8, 8]}, "input shape of [0, 8, 8]"),
        ({"classes": [str(k) for k in range(200_000)]}, "200000 classes"),
    ],
)
def test_claimed_sizes_are_checked_before_anything_is_allocated(claims, phrase):
    small = as_bytes(payload({}, **claims))
    assert len(small) < 4_000_000  # megabytes at most, claiming terabytes
    with pytest.raises(CheckpointError, match=re.escape(phrase)):
        load_checkpoint(small)


@pytest.mark.slow
def test_bench_of_a_lying_checkpoint_allocates_nothing_it_claims(tmp_path):
    """The issue's case: a 1.5 KB file whose metadata asked bench for 26 GB. Here one claims an
    MLP of 2 GB (503 M parameters); the refusal comes before it is built, so the process's peak
    memory stays at what torch itself takes (building it first peaked above 2 GB)."""
    path = tmp_path / "liar.pt"
    path.write_bytes(as_bytes(payload({}, size=8192, depth=1, input_shape=[1, 240, 256])))
    assert path.stat().st_size < 2000
    # The child's own high-water mark (VmHWM, KiB): getrusage's ru_maxrss survives execve, so a
    # child spawned by a pytest process that has grown past 1.2 GiB would report the parent's peak.
    child = (
        "import sys\n"
        "from kd_core.cli import main\n"
        f"code = main(['bench', {str(path)!r}])\n"
        "print(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:')))\n"
        "sys.exit(code)\n"
    )
    proc = subprocess.run([cli_command()[0], "-c", child], env=cli_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().startswith("error: the weights do not fit a mlp 8192") and "Traceback" not in proc.stderr
    peak_gb = int(proc.stdout.strip()) / 2**20
    assert peak_gb < 1.2, f"peak memory {peak_gb:.2f} GiB: the claimed model was allocated"


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_at_load_and_upload(tmp_path, digits, value):
    model = build_model(TEACHER_SPEC, digits.input_shape, digits.num_classes)
    state = model.state_dict()
    state["net.1.weight"][3, 5] = value
    data = as_bytes(payload(state, size=TEACHER_SPEC.size))
    with pytest.raises(CheckpointError, match=r"NaN or infinite values \(in 'net.1.weight'\)"):
        load_checkpoint(data)
    store = Store(tmp_path)
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        studio.import_checkpoint(store, data, digits, "nan.pt")
    assert store.list_runs() == []  # not stored as a 10 %-accurate "finished" teacher


def test_non_finite_weights_are_never_saved(tmp_path, digits):
    model = build_model(TEACHER_SPEC, digits.input_shape, digits.num_classes)
    with torch.no_grad():
        model.net[1].bias.fill_(float("nan"))
    with pytest.raises(CheckpointError, match="NaN or infinite values"):
        save_checkpoint(tmp_path / "t.pt", model, TEACHER_SPEC, digits.input_shape, digits.classes, "digits")
    assert list(tmp_path.iterdir()) == []


def test_a_refused_pickle_gets_our_message_not_torchs_advice(tmp_path):
    marker = tmp_path / "was-run"
    data = as_bytes({"format": FORMAT, "state_dict": CodeRunningPickle(str(marker))})
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(data)
    text = str(err.value)
    assert "never runs code" in text and "mkdir" in text
    assert "weights_only" not in text and "Re-running" not in text
    assert not marker.exists()


@pytest.mark.parametrize("target", ["folder", "under a file"])
def test_a_failed_write_is_a_checkpoint_error_and_leaves_no_part_file(tmp_path, digits, target):
    model = build_model(ModelSpec("mlp", 8, 1), digits.input_shape, digits.num_classes)
    (tmp_path / "a-file").write_text("x")
    path = tmp_path / "out" if target == "folder" else tmp_path / "a-file" / "t.pt"
    (tmp_path / "out").mkdir()
    with pytest.raises(CheckpointError, match="could not write the checkpoint"):
        save_checkpoint(path, model, ModelSpec("mlp", 8, 1), digits.input_shape, digits.classes, "digits")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a-file", "out"]
