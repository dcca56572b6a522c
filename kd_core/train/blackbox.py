"""Teachers as black boxes: a TorchScript file, a torch.export program (.pt2) or an ONNX file.

Only the teacher's logits are used. The file says nothing reliable about what it expects,
so the user states its *input contract* (channels, size, mean and std of pixels in [0, 1],
class names in output order), by flags or in a JSON sidecar beside it (`model.onnx.json`):

    {"channels": 3, "size": [32, 32], "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26],
     "classes": ["airplane", "automobile", ...]}

Compatibility is decided by that contract, not by tensor shapes alone:
  * classes: the same names in the same order are used as they are; the same names in
    another order, or a teacher that knows more classes than the dataset, are aligned by
    name (a class-mapping file {"teacher name": "dataset name"} renames first); anything
    else is refused with the difference listed, unless cross-dataset transfer is asked for
    explicitly (output i taken as dataset class i);
  * input: the dataset's normalised images are turned back into pixels, given the
    teacher's channel count (grey → RGB by repetition; RGB → grey is refused) and size
    (bilinear resize), and normalised with the teacher's own mean and std.

Trust: an ONNX file is data, run by ONNX Runtime. TorchScript and .pt2 files are programs
run by the PyTorch runtime (not arbitrary Python), so use those from sources you trust.
"""

from __future__ import annotations

import json
import math
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from kd_core.errors import CheckpointError, ConfigError
from kd_core.train.data import Dataset

KINDS = ("torchscript", "pt2", "onnx")
Runner = Callable[[torch.Tensor], torch.Tensor]  # (B, C, H, W) float32 CPU -> (B, K) logits


class BlackBoxError(CheckpointError):
    """A teacher file cannot be read or run, or its contract does not fit the dataset."""


# ---------------------------------------------------------------- the contract


@dataclass(frozen=True)
class InputContract:
    channels: int
    size: tuple[int, int]  # (H, W)
    mean: tuple[float, ...]  # per channel (or one for all), of pixels scaled to [0, 1]
    std: tuple[float, ...]
    classes: tuple[str, ...]  # in the order of the teacher's outputs

    def to_dict(self) -> dict:
        return {**asdict(self), "size": list(self.size), "mean": list(self.mean), "std": list(self.std)}

    @staticmethod
    def from_dict(d: dict, where: str = "the teacher's input contract") -> InputContract:
        missing = [k for k in ("channels", "size", "mean", "std", "classes") if d.get(k) in (None, "", [])]
        if missing:
            raise ConfigError(
                f"{where} does not state {', '.join(missing)}. Give them with --teacher-channels, "
                "--teacher-size, --teacher-mean, --teacher-std and --teacher-classes, or in a JSON sidecar "
                'such as {"channels": 3, "size": [32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], '
                '"classes": ["cat", "dog"]}.'
            )
        try:
            size = d["size"] if isinstance(d["size"], list | tuple) else [d["size"], d["size"]]
            c = InputContract(
                channels=int(d["channels"]),
                size=(int(size[0]), int(size[-1])),
                mean=tuple(float(v) for v in _as_list(d["mean"])),
                std=tuple(float(v) for v in _as_list(d["std"])),
                classes=tuple(str(v) for v in _as_list(d["classes"])),
            )
        except (TypeError, ValueError, IndexError) as err:
            raise ConfigError(f"{where} is malformed: {err}") from err
        c.check(where)
        return c

    def check(self, where: str) -> None:
        problems = []
        if self.channels not in (1, 3):
            problems.append(f"channels must be 1 or 3, got {self.channels}")
        if not all(4 <= s <= 1024 for s in self.size):
            problems.append(f"size must be 4 to 1024 px, got {list(self.size)}")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, self.channels) or not all(math.isfinite(v) for v in values):
                problems.append(f"{name} must be 1 or {self.channels} finite numbers, got {list(values)}")
        if any(v <= 0 for v in self.std):
            problems.append(f"std must be positive, got {list(self.std)}")
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            problems.append("classes must be at least 2 distinct names")
        if problems:
            raise ConfigError(f"{where}: " + "; ".join(problems) + ".")


def _as_list(value) -> list:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value) if isinstance(value, list | tuple) else [value]


def read_json(path: str | Path, what: str) -> object:
    path = Path(path).expanduser()
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} '{path}' does not exist.") from None
    except (OSError, ValueError) as err:
        raise ConfigError(f"{what} '{path}' is not readable JSON: {err}") from err


def sidecar(model_path: Path) -> Path | None:
    """`model.onnx.json` or `model.json` beside the file, if there is one."""
    for candidate in (model_path.with_name(model_path.name + ".json"), model_path.with_suffix(".json")):
        if candidate.is_file():
            return candidate
    return None


def resolve_contract(model_path: str | Path, contract_file: str | Path | None = None, **flags) -> InputContract:
    """The contract from `contract_file` (else the sidecar), each field overridden by a flag given."""
    path = contract_file or sidecar(Path(model_path).expanduser())
    base = read_json(path, "teacher contract") if path else {}
    if not isinstance(base, dict):
        raise ConfigError(f"teacher contract '{path}' must be a JSON object.")
    merged = {**base, **{k: v for k, v in flags.items() if v not in (None, "", [])}}
    return InputContract.from_dict(merged, f"the input contract of '{Path(model_path).name}'")


# ---------------------------------------------------------------- classes


def align_classes(
    teacher: tuple[str, ...], dataset: list[str], mapping: dict[str, str] | None = None, cross: bool = False
) -> tuple[list[int] | None, list[str]]:
    """(teacher output index for each dataset class, or None for "as they are"; notes).
    Raises ConfigError listing the difference when the names do not fit."""
    mapping = mapping or {}
    unknown = sorted(set(mapping) - set(teacher))
    if unknown:
        raise ConfigError(f"the class mapping names teacher classes the teacher does not have: {', '.join(unknown)}.")
    names = [mapping.get(c, c) for c in teacher]
    if len(set(names)) != len(names):
        raise ConfigError("the class mapping sends two teacher classes to the same dataset class.")
    if names == list(dataset):
        return None, ["classes renamed by the mapping"] if mapping else []
    if set(dataset) <= set(names):
        index = [names.index(c) for c in dataset]
        notes = ["teacher outputs aligned to the dataset's classes by name"]
        dropped = [c for c in names if c not in dataset]
        if dropped:
            notes.append(f"{len(dropped)} teacher classes the dataset lacks are left out: {_some(dropped)}")
        return index, notes
    if cross and len(teacher) == len(dataset):
        return None, [
            f"cross-dataset transfer: teacher output i is taken as dataset class i ({_pairs(names, dataset)})"
        ]
    only_t, only_d = [c for c in names if c not in dataset], [c for c in dataset if c not in names]
    if cross:
        raise ConfigError(
            f"cross-dataset transfer needs as many teacher outputs as dataset classes "
            f"({len(teacher)} vs {len(dataset)}), or a class mapping that covers the dataset's classes."
        )
    raise ConfigError(
        f"the teacher's classes differ from the dataset's. Only the teacher has: {_some(only_t) or '(none)'}; "
        f"only the dataset has: {_some(only_d)}. Align the names with a class-mapping file (JSON "
        '{"teacher name": "dataset name"}), or allow cross-dataset transfer explicitly.'
    )


def _some(names: list[str], n: int = 8) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _pairs(a: list[str], b: list[str], n: int = 4) -> str:
    return ", ".join(f"{x}→{y}" for x, y in list(zip(a, b))[:n]) + (", …" if len(a) > n else "")


# ---------------------------------------------------------------- runtimes


def kind_of(path: str | Path) -> str:
    """torchscript | pt2 | onnx | checkpoint (a torch.save file), by content, not by name."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04":
        # ONNX is a protobuf with no magic number: anything else that is no zip is a damaged or
        # foreign file, which the checkpoint loader reports as "not a readable checkpoint".
        return "onnx" if path.suffix.lower() == ".onnx" or _parses_as_onnx(path) else "checkpoint"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        return "checkpoint"  # a truncated torch.save file: the checkpoint loader says so
    if any(n.endswith("/archive_format") for n in names):
        return "pt2"
    if any("/code/" in n or n.endswith("/constants.pkl") for n in names):
        return "torchscript"
    return "checkpoint"


def _parses_as_onnx(path: Path) -> bool:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # any parse failure means: not ONNX
        return False
    return len(model.graph.node) > 0


def _fixed_batch(shape) -> int | None:
    return shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None


def _onnx_runner(path: Path, threads: int) -> tuple[Runner, int, int | None]:
    import onnx
    import onnxruntime as ort

    try:
        proto = onnx.load(str(path))
        # ONNX keeps parameters and constants (normalisation, BN statistics) alike as initializers
        params = sum(math.prod(t.dims) for t in proto.graph.initializer)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = threads, 1, 3
        session = ort.InferenceSession(proto.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as err:  # DecodeError, InvalidGraph, ...
        raise BlackBoxError(f"'{path.name}' is not an ONNX model ONNX Runtime can run: {_first_line(err)}") from err
    inp = session.get_inputs()[0]
    return lambda x: torch.from_numpy(session.run(None, {inp.name: x.numpy()})[0]), params, _fixed_batch(inp.shape)


def _torchscript_runner(path: Path) -> tuple[Runner, int, int | None]:
    try:
        with warnings.catch_warnings():  # torch.jit is deprecated; a TorchScript file is still a common export
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu").eval()
        for p in module.parameters():
            p.requires_grad_(False)  # a teacher: never trained here
    except Exception as err:
        raise BlackBoxError(f"'{path.name}' is not a TorchScript file PyTorch can load: {_first_line(err)}") from err
    return module, sum(p.numel() for p in module.parameters()), None


def _pt2_runner(path: Path) -> tuple[Runner, int, int | None]:
    try:
        program = torch.export.load(str(path))
    except Exception as err:
        raise BlackBoxError(
            f"'{path.name}' is not a torch.export program PyTorch can load: {_first_line(err)}"
        ) from err
    user = set(program.graph_signature.user_inputs)
    shapes = [n.meta["val"].shape for n in program.graph.nodes if n.op == "placeholder" and n.name in user]
    params = sum(program.state_dict[n].numel() for n in program.graph_signature.parameters)
    return program.module(), params, _fixed_batch(shapes[0]) if shapes else None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


# ---------------------------------------------------------------- the teacher


class BlackBoxTeacher(nn.Module):
    """Logits of a teacher file for the dataset's normalised images (B, C, H, W) -> (B, K_dataset).

    A module without parameters of its own, so the engine, the metrics and the latency
    bench use it like any teacher; `reported_params`/`reported_bytes` give its size."""

    blackbox = True
    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor

    def __init__(self, path: Path, kind: str, runner: Runner, params: int, batch: int | None,
                 contract: InputContract, data_mean: float, data_std: float, index: list[int] | None):  # fmt: skip
        super().__init__()
        self.path, self.kind, self.batch, self.contract = path, kind, batch, contract
        self._runner = [runner]  # in a list: a TorchScript/.pt2 module must not become a submodule moved by .to()
        self.reported_params, self.reported_bytes = params, path.stat().st_size
        self.data_mean, self.data_std = data_mean, data_std
        self.register_buffer("mean", torch.tensor(contract.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(contract.std).view(1, -1, 1, 1), persistent=False)
        self.index = None if index is None else torch.tensor(index, dtype=torch.int64)

    def teacher_input(self, x: torch.Tensor) -> torch.Tensor:
        """Dataset-normalised images -> the teacher's own input (channels, size, normalisation)."""
        pixels = x.float() * self.data_std + self.data_mean  # back to [0, 1]
        if pixels.shape[1] != self.contract.channels:
            pixels = pixels.expand(-1, self.contract.channels, -1, -1)  # grey -> RGB (checked on load)
        if tuple(pixels.shape[-2:]) != self.contract.size:
            pixels = F.interpolate(
                pixels, size=self.contract.size, mode="bilinear", align_corners=False, antialias=True
            )
        return ((pixels - self.mean.to(pixels.device)) / self.std.to(pixels.device)).contiguous()

    @torch.no_grad()  # not inference_mode: TorchScript would record inference tensors for backward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inp = self.teacher_input(x).cpu()
        step = self.batch or len(inp)
        parts = [self._run(inp[i : i + step]) for i in range(0, len(inp), step)] if len(inp) else [self._run(inp)]
        logits = torch.cat(parts).float()
        if self.index is not None:
            logits = logits.index_select(1, self.index)
        return logits.to(x.device)

    def _run(self, chunk: torch.Tensor) -> torch.Tensor:
        n = len(chunk)
        if self.batch and n < self.batch:  # a program exported for a fixed batch: pad the last chunk
            chunk = torch.cat([chunk, chunk[-1:].expand(self.batch - n, *chunk.shape[1:])])
        return self.runner(chunk)[:n]

    @property
    def runner(self) -> Runner:
        return self._runner[0]

    @property
    def stage_nodes(self) -> dict[str, str]:
        """Models name their feature stages here for feature-based methods (FitNets, AT, ...); a
        file seen from outside has none to offer, so asking is refused with the reason."""
        raise ConfigError(
            f"the teacher is a black box ({self.kind} file '{self.path.name}'): it gives logits only, so "
            "methods that read features cannot use it; choose a logit-based method (kd, dkd, dist)."
        )


def load_blackbox(
    path: str | Path,
    contract: InputContract,
    input_shape: tuple[int, ...],
    classes: list[str],
    data_mean: float,
    data_std: float,
    mapping: dict[str, str] | None = None,
    cross: bool = False,
    threads: int = 1,
) -> tuple[BlackBoxTeacher, list[str]]:
    """A teacher file checked against a dataset (input shape, classes, normalisation).
    Returns (teacher, notes on what was adapted). Raises BlackBoxError / ConfigError."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BlackBoxError(f"teacher file '{path}' does not exist.")
    kind = kind_of(path)
    if kind == "checkpoint":
        raise BlackBoxError(f"'{path.name}' is a PyTorch weights file, not a TorchScript, .pt2 or ONNX program.")
    notes = _check_input(contract, input_shape)
    index, class_notes = align_classes(contract.classes, classes, mapping, cross)
    runner, params, batch = {
        "onnx": lambda: _onnx_runner(path, threads),
        "torchscript": lambda: _torchscript_runner(path),
        "pt2": lambda: _pt2_runner(path),
    }[kind]()
    teacher = BlackBoxTeacher(path, kind, runner, params, batch, contract, data_mean, data_std, index)
    _probe(teacher, input_shape)
    return teacher, notes + class_notes


def _check_input(contract: InputContract, input_shape: tuple[int, ...]) -> list[str]:
    c, h, w = input_shape
    if c != contract.channels and not (c == 1 and contract.channels == 3):
        raise ConfigError(
            f"the teacher takes {contract.channels}-channel images, but the dataset's have {c} channels; "
            "colour images cannot be made grey without changing what the teacher sees."
        )
    notes = ["grey images repeated to 3 channels for the teacher"] if c != contract.channels else []
    if (h, w) != contract.size:
        notes.append(f"images resized from {h}×{w} to the teacher's {contract.size[0]}×{contract.size[1]}")
    return notes


def _probe(teacher: BlackBoxTeacher, input_shape: tuple[int, ...]) -> None:
    """Run two blank images: the file must take the contract's input and give one logit per class."""
    try:
        out = teacher.runner(teacher.teacher_input(torch.zeros(teacher.batch or 2, *input_shape)))
    except Exception as err:
        c = teacher.contract
        raise BlackBoxError(
            f"'{teacher.path.name}' does not run on {c.channels}×{c.size[0]}×{c.size[1]} images as its contract "
            f"says: {_first_line(err)}"
        ) from err
    if out.dim() != 2 or out.shape[1] != len(teacher.contract.classes):
        raise BlackBoxError(
            f"'{teacher.path.name}' gives outputs of shape {list(out.shape[1:])} per image, but its contract "
            f"names {len(teacher.contract.classes)} classes; it must output one logit per class."
        )


# ---------------------------------------------------------------- stored teachers


def is_teacher_file(path: str | Path) -> bool:
    """A stored black-box teacher (its record `<file>.json` beside it), not a checkpoint."""
    return Path(f"{path}.json").is_file() and kind_of(path) != "checkpoint"


def load_stored(path: str | Path, data: Dataset) -> BlackBoxTeacher:
    """A stored black-box teacher, checked again against `data` with its stored contract."""
    meta = read_json(f"{path}.json", "black-box teacher record")
    if not isinstance(meta, dict) or not isinstance(meta.get("contract"), dict):
        raise ConfigError(f"black-box teacher record '{path}.json' has no input contract.")
    contract = InputContract.from_dict(meta["contract"])
    teacher, _ = load_blackbox(
        path,
        contract,
        data.input_shape,
        data.classes,
        data.mean,
        data.std,
        meta.get("mapping"),
        bool(meta.get("cross")),
    )
    return teacher
