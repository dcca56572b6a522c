"""Checkpoints: a state_dict plus what is needed to rebuild the model.

Loaded with `torch.load(..., weights_only=True)`: a checkpoint is data, never
code, so a file from anywhere can be inspected without running it.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

import torch
from torch import nn

from kd_core.config import ModelSpec
from kd_core.errors import CheckpointError, KDError
from kd_core.train.models import build_model

FORMAT = "kd-studio-checkpoint/1"


def save_checkpoint(
    path: str | Path, model: nn.Module, spec: ModelSpec, input_shape: tuple[int, ...], classes: list[str], dataset: str
) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "state_dict": model.state_dict(),
        "family": spec.family,
        "size": spec.size,
        "depth": spec.depth,
        "width": spec.width,
        "input_shape": list(input_shape),
        "classes": list(classes),
        "dataset": dataset,
    }
    tmp = path.with_suffix(path.suffix + ".part")
    torch.save(payload, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint under the real name


def check_archive(
    source: str | Path | bytes | BinaryIO, error: type[KDError] = CheckpointError, what: str = "checkpoint"
) -> None:
    """Refuse a zip archive (.pt, TorchScript) that is truncated or whose entries fail
    their CRC: torch.load does not check them, so a flipped byte would load as wrong weights."""
    if isinstance(source, (str, Path)) and not Path(source).is_file():
        raise error(f"{what} '{source}' does not exist.")
    name = source if isinstance(source, (str, Path)) else "upload"
    try:
        with zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, ValueError, NotImplementedError) as err:
        raise error(f"not a readable {what} '{name}' (truncated, corrupt or not a PyTorch file): {err}") from err
    finally:
        if hasattr(source, "seek"):
            source.seek(0)
    if bad is not None:
        raise error(
            f"{what} '{name}' is corrupt: its entry '{bad}' fails its checksum "
            "(the file was modified or damaged after it was written)."
        )


def _read(source: str | Path | bytes | BinaryIO) -> dict:
    check_archive(source)
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        payload = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, random bytes, a pickle with code in it...
        first_line = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"not a readable checkpoint (corrupt, truncated or not a PyTorch weights file): {first_line}"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            "this file is not a KD Studio checkpoint: it lacks the family, size "
            "and input shape needed to rebuild the model."
        )
    return payload


def _identity(spec: ModelSpec) -> tuple:
    """What makes two specs the same architecture (depth only for an MLP, size not for the zoo)."""
    return (
        spec.family,
        spec.size if spec.family in ("mlp", "cnn") else 0,
        spec.depth if spec.family == "mlp" else 0,
        spec.width,
    )


def load_checkpoint(
    source: str | Path | bytes | BinaryIO,
    expect: ModelSpec | None = None,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
) -> tuple[nn.Module, dict]:
    """Rebuild a model from a checkpoint. With `expect`/`input_shape`/`num_classes`,
    refuse one made for another family, size or dataset. Returns (model, metadata)."""
    payload = _read(source)
    try:
        width = float(payload.get("width", 1.0))  # checkpoints from before the torchvision families: 1
        spec = ModelSpec(str(payload["family"]), int(payload["size"]), int(payload["depth"]), width)
        shape = tuple(int(v) for v in payload["input_shape"])
        classes = [str(c) for c in payload["classes"]]
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint metadata is incomplete or malformed: {err}") from err
    if expect is not None and _identity(expect) != _identity(spec):
        raise CheckpointError(f"checkpoint holds a {spec.label()} model, but a {expect.label()} was expected.")
    if input_shape is not None and tuple(input_shape) != shape:
        raise CheckpointError(
            f"checkpoint was trained on inputs of shape {list(shape)}, but this dataset has {list(input_shape)}."
        )
    if num_classes is not None and num_classes != len(classes):
        raise CheckpointError(f"checkpoint predicts {len(classes)} classes, but this dataset has {num_classes}.")
    try:
        model = build_model(spec, shape, len(classes))
        model.load_state_dict(payload["state_dict"])
    except KDError as err:
        raise CheckpointError(f"checkpoint describes an invalid model: {err}") from err
    except (RuntimeError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"the weights do not fit a {spec.label()} model: {str(err).splitlines()[0][:300]}"
        ) from err
    model.eval()
    meta = {"spec": spec, "input_shape": shape, "classes": classes, "dataset": payload.get("dataset", "")}
    return model, meta
