"""Checkpoints: a state_dict plus what is needed to rebuild the model.

Loaded with `torch.load(..., weights_only=True)`: a checkpoint is data, never
code, so a file from anywhere can be inspected without running it.
"""

from __future__ import annotations

import contextlib
import errno
import io
import pickle
import re
import shutil
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

import torch
from torch import nn

from kd_core.config import ModelSpec
from kd_core.errors import CheckpointError, KDError
from kd_core.train.bench import MAX_CHANNELS, MAX_CLASSES, MAX_SIDE
from kd_core.train.models import build_model

FORMAT = "kd-studio-checkpoint/1"


def save_checkpoint(
    path: str | Path, model: nn.Module, spec: ModelSpec, input_shape: tuple[int, ...], classes: list[str], dataset: str
) -> None:
    path = Path(path)
    state = model.state_dict()
    payload = {
        "format": FORMAT,
        "state_dict": state,
        "family": spec.family,
        "size": spec.size,
        "depth": spec.depth,
        "width": spec.width,
        "input_shape": list(input_shape),
        "classes": list(classes),
        "dataset": dataset,
    }
    bad = nonfinite(state)
    if bad:
        raise CheckpointError(f"the model's weights hold NaN or infinite values (in '{bad}'); it is not saved.")
    tmp = path.with_name(path.name + ".part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Our own file object, closed here even when torch.save fails: torch's writer would keep the
        # file open from the exception's traceback, and a removed .part frees its space only once closed.
        with open(tmp, "wb") as f:
            torch.save(payload, f)
        tmp.replace(path)  # never leave a half-written checkpoint under the real name
    except (OSError, RuntimeError) as err:  # a full disk reaches us as torch's RuntimeError, without errno
        with contextlib.suppress(OSError):  # a path under a file has no .part to remove either
            tmp.unlink(missing_ok=True)
        need = sum(t.nbytes for t in state.values() if isinstance(t, torch.Tensor))
        raise CheckpointError(
            f"could not write the checkpoint {path}: {_write_failure(err, path.parent, need)}"
        ) from err


def _write_failure(err: Exception, folder: Path, need: int) -> str:
    """Why a write failed, in words. Torch reports a full disk as an OSError in the chain or as its
    own "unexpected pos" / iostream error, so a full disk is also told by the space left against
    the space needed; otherwise the OS's reason, or torch's first line."""
    cause: BaseException | None = err
    while cause is not None and not (isinstance(cause, OSError) and cause.strerror):
        cause = cause.__cause__ or cause.__context__
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    full = getattr(cause, "errno", None) == errno.ENOSPC or (free is not None and free < need)
    if full:
        left = f"{free / 1e6:.1f} MB free, " if free is not None else ""
        return f"the disk is full ({left}the weights need about {need / 1e6:.1f} MB)"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return one_line(err)


def one_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def nonfinite(state_dict: dict) -> str | None:
    """The name of the first floating-point tensor holding NaN or ±inf, or None."""
    for name, tensor in state_dict.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all():
            return name
    return None


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
    except pickle.UnpicklingError as err:  # weights_only refused an object: it would have run code
        # torch's message ends by suggesting weights_only=False, i.e. turning the safety off: not ours to pass on.
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(
            f"not a readable checkpoint: it holds Python objects{what} that would run code when loaded, so it "
            "was refused unread. KD Studio loads checkpoints as data only and never runs code from a file; "
            "save the model with KD Studio (`kd-studio teacher --out`, or kd_core.train.checkpoint.save_checkpoint)."
        ) from err
    except Exception as err:  # truncated zip, random bytes...
        raise CheckpointError(
            f"not a readable checkpoint (corrupt, truncated or not a PyTorch weights file): {one_line(err)}"
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
    _check_weights(spec, shape, classes, payload.get("state_dict"))
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


def _check_weights(spec: ModelSpec, shape: tuple[int, ...], classes: list[str], state_dict) -> None:
    """Before anything is allocated: the claimed input shape and class count within sane bounds,
    the claimed model's tensors (built on the meta device: shapes only, no memory) exactly those
    in the file, and every weight finite. A small file cannot ask for gigabytes this way."""
    if len(shape) != 3 or min(shape) < 1 or shape[0] > MAX_CHANNELS or max(shape) > MAX_SIDE:
        raise CheckpointError(
            f"checkpoint claims an input shape of {list(shape)}: out of range "
            f"(C H W, up to {MAX_CHANNELS} channels and {MAX_SIDE} px)."
        )
    if not 1 <= len(classes) <= MAX_CLASSES:
        raise CheckpointError(f"checkpoint claims {len(classes)} classes: out of range (1 to {MAX_CLASSES}).")
    if not isinstance(state_dict, dict):
        raise CheckpointError("checkpoint metadata is incomplete or malformed: its state_dict is not a mapping.")
    try:
        with torch.device("meta"):
            wanted = {k: tuple(v.shape) for k, v in build_model(spec, shape, len(classes)).state_dict().items()}
    except KDError as err:
        raise CheckpointError(f"checkpoint describes an invalid model: {err}") from err
    found = {k: tuple(v.shape) for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    if found != wanted:
        diff = sorted(set(found.items()) ^ set(wanted.items()))
        name, _ = diff[0]
        raise CheckpointError(
            f"the weights do not fit a {spec.label()} model on inputs {list(shape)}: tensor '{name}' is "
            f"{list(found[name]) if name in found else 'missing'} in the file, "
            f"{list(wanted[name]) if name in wanted else 'not in the model'} in the model."
        )
    bad = nonfinite(state_dict)
    if bad:
        raise CheckpointError(
            f"checkpoint weights hold NaN or infinite values (in '{bad}'): the model that wrote it had "
            "diverged, so it cannot be used."
        )
