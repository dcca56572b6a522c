"""Starting weights for a model before training: torchvision's pretrained ones, or a local file.

`TrainConfig.init_weights` is "" (random), "torchvision" (the family's published ImageNet
weights, through torchvision's weights API) or a file path. A file is read with
`torch.load(weights_only=True)`: it is data, never code. Tensors are copied by name; the
stem and the classifier are the two places where a model adapted to this dataset may
legitimately differ from the file:

  * the first conv: summed over RGB for grey inputs; re-initialised when the small-input
    stem changed its kernel (7×7 → 3×3);
  * the classifier: replaced (left at its initialisation) when the class count differs.

Any other difference means the file was written for another architecture or width, and
is refused with the first tensors that do not fit.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from kd_core.config import ModelSpec, RunConfig
from kd_core.errors import CheckpointError, ConfigError
from kd_core.train.data import Dataset
from kd_core.train.models import build_model
from kd_core.train.zoo import ZOO, weights_name

TORCHVISION = "torchvision"


def _shape(t: torch.Tensor) -> list[int]:
    return list(t.shape)


def read_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from a file: a bare one, or one under "state_dict"/"model" (KD Studio
    checkpoints, most training scripts). Raises CheckpointError."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"weights file '{path}' does not exist.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle with code in it, a truncated or foreign file
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"weights file '{path}' is not a readable PyTorch weights file: {first}") from err
    if isinstance(payload, dict):
        for key in ("state_dict", "model"):
            if isinstance(payload.get(key), dict):
                payload = payload[key]
                break
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise CheckpointError(f"weights file '{path}' holds no state_dict (a mapping of names to tensors).")
    return payload


def torchvision_file(spec: ModelSpec) -> tuple[str, str, Path]:
    """(weights enum name, URL, local cache file) of the family's torchvision weights."""
    from torchvision.models import get_weight

    if spec.family not in ZOO:
        raise ConfigError(f"pretrained weights exist for the torchvision families only, not for {spec.family}.")
    name = weights_name(spec.family, spec.width)
    if name is None:
        raise ConfigError(
            f"torchvision publishes no pretrained {spec.family} at width {spec.width:g}"
            + (" (only at 0.5, 1, 1.5 and 2)" if spec.family == "shufflenet_v2" else " (only at width 1)")
            + "; use that width, or start from a file with --weights PATH."
        )
    url = get_weight(name).url
    return name, url, Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def torchvision_state(spec: ModelSpec) -> dict[str, torch.Tensor]:
    """The family's torchvision weights: from torch's cache folder, downloaded there if missing."""
    name, url, file = torchvision_file(spec)
    if not file.is_file():
        file.parent.mkdir(parents=True, exist_ok=True)
        part = file.with_name(f"{file.name}.{os.getpid()}.part")
        try:
            torch.hub.download_url_to_file(url, str(part), progress=False)
        except Exception as err:  # URLError offline, HTTPError, OSError
            part.unlink(missing_ok=True)
            raise CheckpointError(
                f"could not download {name} ({err}). Offline, put the file {file.name} (from {url}) "
                f"into {file.parent}, or start from a local file with --weights PATH."
            ) from err
        part.replace(file)
    return read_state_file(file)


def _edges(model: nn.Module, family: str) -> tuple[str | None, set[str]]:
    """(stem conv weight key, classifier keys): where an adapted model may differ from the file."""
    stem = f"{ZOO[family].stem}.weight" if family in ZOO else None
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    head = {f"{linears[-1]}.weight", f"{linears[-1]}.bias"} if linears else set()
    return stem, head


def fit_state(
    model: nn.Module, spec: ModelSpec, state: dict[str, torch.Tensor], source: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The model's state_dict with the file's tensors copied in, and notes on what was adapted.
    Raises CheckpointError when the file was written for another architecture."""
    own = model.state_dict()
    stem, head = _edges(model, spec.family)
    merged, notes, missing, reshaped = dict(own), [], [], []
    for key, mine in own.items():
        theirs = state.get(key)
        if theirs is None:
            if not key.endswith("num_batches_tracked"):
                missing.append(key)
        elif theirs.shape == mine.shape:
            merged[key] = theirs.to(mine.dtype)
        elif (
            key == stem
            and mine.shape[1] == 1
            and theirs.shape[:1] + theirs.shape[2:] == mine.shape[:1] + mine.shape[2:]
        ):
            merged[key] = theirs.sum(1, keepdim=True).to(mine.dtype)  # grey = R + G + B, as each channel saw it
            notes.append(f"first conv summed over its {theirs.shape[1]} input channels for grey images")
        elif key == stem:
            notes.append(
                f"first conv re-initialised: the file's is {_shape(theirs)}, the small-input stem's {_shape(mine)}"
            )
        elif key in head:
            notes.append(
                f"classifier replaced: the file's predicts {theirs.shape[0]} classes, this dataset has {mine.shape[0]}"
            )
        else:
            reshaped.append(f"{key} is {_shape(theirs)} in the file, {_shape(mine)} in the model")
    extra = [key for key in state if key not in own]
    if missing or reshaped or extra:
        raise CheckpointError(_misfit(spec, source, len(own), missing, reshaped, extra))
    return merged, list(dict.fromkeys(notes))


def _misfit(spec: ModelSpec, source: str, total: int, missing: list, reshaped: list, extra: list) -> str:
    parts = [
        f"{len(missing)} of the model's {total} tensors are not in the file (e.g. {missing[0]})" if missing else "",
        f"{len(reshaped)} have other shapes (e.g. {reshaped[0]})" if reshaped else "",
        f"{len(extra)} of the file's are not in the model (e.g. {extra[0]})" if extra else "",
    ]
    return (
        f"the weights in {source} do not fit a {spec.label()}: {'; '.join(p for p in parts if p)}. "
        "Were they saved from another architecture or width?"
    )


def load_init_weights(model: nn.Module, spec: ModelSpec, init: str) -> list[str]:
    """Copy `init` ("torchvision" or a file) into `model` in place; returns notes on what was adapted."""
    if not init:
        return []
    if init == TORCHVISION:
        state, source = torchvision_state(spec), f"torchvision's {torchvision_file(spec)[0]}"
    else:
        state, source = read_state_file(init), f"'{init}'"
    merged, notes = fit_state(model, spec, state, source)
    model.load_state_dict(merged)
    return [f"starting weights from {source}" + (f": {'; '.join(notes)}" if notes else "")]


def check_model(cfg: RunConfig, data: Dataset) -> None:
    """Before a run is stored: the model builds for this dataset and its starting weights fit it."""
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    load_init_weights(model, cfg.model, cfg.train.init_weights)
