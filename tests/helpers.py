"""Plain helpers shared by the test modules (fixtures live in conftest.py): run configs,
a progress sink, writers for IDX files and PNG image folders, and a CLI runner.

Everything is real: real files in tmp_path, the CLI as a subprocess.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from kd_core.config import DataConfig, DistillConfig, ModelSpec, RunConfig, TrainConfig

REPO = Path(__file__).resolve().parents[1]

TEACHER_SPEC = ModelSpec("mlp", 128, 1)
STUDENT_SPEC = ModelSpec("mlp", 16, 1)


def make_config(
    kind: str = "teacher",
    model: ModelSpec = STUDENT_SPEC,
    *,
    epochs: int = 2,
    seed: int = 0,
    lr: float = 1e-3,
    batch_size: int = 64,
    optimizer: str = "adam",
    augment: bool = False,
    temperature: float = 4.0,
    alpha: float = 0.9,
    cache: bool = True,
    dataset: str = "digits",
    **train_kw,
) -> RunConfig:
    """A small CPU run on `dataset`; kind "student" gets a DistillConfig."""
    train = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        seed=seed,
        device="cpu",
        augment=augment,
        **train_kw,
    )
    distill = DistillConfig(temperature, alpha, cache) if kind == "student" else None
    return RunConfig(kind=kind, data=DataConfig(dataset=dataset), model=model, train=train, distill=distill)


class StepRecorder:
    """An emit sink that keeps every progress record."""

    def __init__(self):
        self.records = []

    def __call__(self, rec) -> None:
        self.records.append(rec)

    def of(self, event: str) -> list:
        return [r for r in self.records if r.event == event]

    def losses(self) -> np.ndarray:
        """(steps, 3) array of (loss, ce, kd) per training step (kd 0 without a teacher)."""
        return np.array([(r.loss, r.terms["ce"], r.terms.get("kd", 0.0)) for r in self.of("step")], dtype=np.float64)


# ---------------------------------------------------------------- dataset files


def write_idx_images(path: Path, images: np.ndarray) -> None:
    """IDX3 ubyte: magic 0x00000803, then N, rows, cols as big-endian uint32, then pixels."""
    n, h, w = images.shape
    path.write_bytes(struct.pack(">IIII", 0x0803, n, h, w) + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    """IDX1 ubyte: magic 0x00000801, then N as big-endian uint32, then one byte per label."""
    path.write_bytes(struct.pack(">II", 0x0801, len(labels)) + labels.astype(np.uint8).tobytes())


def write_mnist_like(root: Path, folder: str, n_train: int = 100, n_test: int = 30, seed: int = 0) -> dict:
    """Uncompressed IDX files in ROOT/<folder>/raw/ as torchvision expects; 10 balanced
    classes of random 28x28 images. Returns the arrays that were written."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        write_idx_images(raw / f"{split}-images-idx3-ubyte", images)
        write_idx_labels(raw / f"{split}-labels-idx1-ubyte", labels)
        out[split] = (images, labels)
    return out


def write_image_folder(root: Path, classes=("cat", "dog", "owl"), per_class: int = 10, size=(12, 10)) -> Path:
    """ImageFolder layout ROOT/<class>/<i>.png of solid-colour RGB images whose colour
    encodes (class index, image index): R = 80·class, G = 10·i, B = 7."""
    from PIL import Image

    for k, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", size, (80 * k, 10 * i, 7)).save(folder / f"{i}.png")
    return root


class CrashingTeacher(torch.nn.Module):
    """A teacher whose forward raises what no input check catches, like a broken black-box model."""

    def forward(self, x):
        raise RuntimeError("teacher crashed")


class CodeRunningPickle:
    """Unpickling this would run os.mkdir(target): a checkpoint loader must refuse it unrun."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


# ---------------------------------------------------------------- CLI


def cli_env() -> dict:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    return env


def cli_command(*args) -> list[str]:
    return [sys.executable, "-m", "kd_core", *map(str, args)]


def run_cli(cwd: Path, *args, timeout: float = 180) -> subprocess.CompletedProcess:
    """`python -m kd_core ARGS` in `cwd` (the package is installed with `pip install -e .`)."""
    return subprocess.run(cli_command(*args), cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=timeout)


def assert_clean_failure(proc: subprocess.CompletedProcess, *phrases: str, stream: str = "stderr") -> None:
    """Non-zero exit, no traceback, and each phrase (case-insensitive) in `stream`."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    text = getattr(proc, stream).lower()
    for phrase in phrases:
        assert phrase.lower() in text, f"{phrase!r} not in {stream}:\n{getattr(proc, stream)}"


def hand_bh(ps):
    """Benjamini–Hochberg step-up, written out: sort, p(i)·k/i, the running minimum from the top, ≤ 1."""
    k = len(ps)
    order = sorted(range(k), key=lambda i: ps[i])
    out, running = [0.0] * k, 1.0
    for rank in range(k, 0, -1):
        i = order[rank - 1]
        running = min(running, ps[i] * k / rank)
        out[i] = running
    return out
