"""Export a stored run to TorchScript or ONNX, optionally as int8, and load it back.

Why every export is checked: a file that silently changes the logits is worse
than no file. Each export is loaded back from disk and run on the real test
split beside the PyTorch model it came from; the max absolute logit difference
and the top-1 agreement are reported, and a file outside tolerance is refused:
it is deleted and `ExportError` carries the numbers.

Trust. A run's .pt is data: its zip checksums are verified first (torch.load
does not check them, so a flipped byte would otherwise load as wrong weights),
then it is read with weights_only=True. A TorchScript file carries code, so
`load_torchscript` is meant for files this module wrote: the archive's
checksums and our marker are checked before torch.jit.load sees it. An ONNX
file is data; the digest of its graph, written at export, is checked on load.

int8 means dynamic quantization of the Linear layers (weights int8, activations
quantized per batch at run time): torch.ao.quantization.quantize_dynamic for
PyTorch/TorchScript, onnxruntime.quantization.quantize_dynamic (MatMul/Gemm)
for ONNX. torch.ao.quantization is deprecated in favour of torchao, but
torchao's tensor-subclass models can be neither scripted nor sped up on CPU
without torch.compile, so the fbgemm/x86 kernels behind quantize_dynamic are
what a CPU deployment of these models uses; torch is pinned in requirements.
"""

from __future__ import annotations

import copy
import hashlib
import json
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from kd_core.config import RunConfig
from kd_core.errors import CheckpointError, DataError, KDError
from kd_core.records import StoredRun
from kd_core.store import Store, as_store
from kd_core.train.blackbox import is_teacher_file
from kd_core.train.checkpoint import check_archive, load_checkpoint
from kd_core.train.data import load_dataset
from kd_core.train.metrics import accuracy, agreement, predict_logits

FORMATS = ("torchscript", "onnx")
QUANTIZE = (None, "int8")
MARKER = "kd-studio-export/1"
MARKER_FILE = "kd_studio.json"  # TorchScript extra file / ONNX metadata key
INPUT_NAME, OUTPUT_NAME = "input", "logits"
ONNX_INT8_OPS = ["MatMul", "Gemm"]  # the Linear layers, as PyTorch's dynamic quantization
SUFFIXES = {
    ("torchscript", None): ".torchscript.pt",
    ("torchscript", "int8"): ".int8.torchscript.pt",
    ("onnx", None): ".onnx",
    ("onnx", "int8"): ".int8.onnx",
}
MIME = "application/octet-stream"

Logits = Callable[[torch.Tensor], torch.Tensor]


class ExportError(KDError):
    """An export failed, or its logits are outside tolerance; `report` holds the numbers."""

    def __init__(self, message: str, report: dict | None = None):
        super().__init__(message)
        self.report = report or {}


class ArtifactError(KDError):
    """An exported file is missing, truncated, modified or not a KD Studio export."""


@dataclass(frozen=True)
class Tolerance:
    """An export passes when max|Δlogit| ≤ max_abs_diff · max(1, max|reference logit|)
    and top-1 agreement ≥ min_agreement. Scaled, because logits of a confident
    teacher reach tens and float32 error grows with them."""

    max_abs_diff: float
    min_agreement: float

    def bound(self, scale: float) -> float:
        return self.max_abs_diff * max(1.0, scale)


# float: a different kernel order moves logits by ~1e-6 relative; 1e-3 leaves room
# yet catches any real change. int8: the quantized model is compared with the float
# one it replaces; ~1% of predictions may flip on near-ties.
TOLERANCES = {None: Tolerance(1e-3, 0.99), "int8": Tolerance(0.1, 0.95)}


def check_choice(fmt: str, quantize: str | None) -> None:
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format '{fmt}'; choose one of {', '.join(FORMATS)}.")
    if quantize not in QUANTIZE:
        raise ExportError(f"unknown quantization '{quantize}'; the only choice is int8.")


# ---------------------------------------------------------------- stored runs


@dataclass
class LoadedRun:
    """A model to export or time: a stored run's float model rebuilt from its checkpoint (with
    the store's `record` of it), or a model from elsewhere (a checkpoint file, an untrained
    candidate), which has no record."""

    run_id: str
    kind: str
    label: str
    model: nn.Module
    input_shape: tuple[int, ...]
    classes: list[str]
    record: StoredRun | None = None

    @property
    def config(self) -> RunConfig:
        return self.record.config if self.record is not None else RunConfig(kind=self.kind)

    def marker(self, fmt: str, quantize: str | None) -> dict:
        return {
            "format": MARKER,
            "run_id": self.run_id,
            "kind": self.kind,
            "export": fmt,
            "quantize": quantize,
            "input_shape": list(self.input_shape),
            "classes": self.classes,
            "label": self.label,
        }


def _with_weights(store: Store, run_id: str) -> tuple[StoredRun, Path]:
    """A stored run and its checkpoint, checksum-verified."""
    run = store.get_run(run_id)
    if run is None:
        raise CheckpointError(f"no stored run '{run_id}'.")
    if not run.weights:
        raise CheckpointError(f"run '{run_id}' has no saved weights (status {run.status}).")
    path = Path(run.weights)
    if is_teacher_file(path):
        raise CheckpointError(
            f"run '{run_id}' is an imported teacher file ({path.suffix.lstrip('.')}), used for its logits: "
            "it has no PyTorch weights to export or convert; the file itself is its deployable form."
        )
    check_archive(path, CheckpointError, "checkpoint")
    return run, path


def weights_file(store: Store | str | Path, run_id: str) -> Path:
    """The checkpoint of a stored run, checksum-verified."""
    return _with_weights(as_store(store), run_id)[1]


def load_run(store: Store | str | Path, run_id: str) -> LoadedRun:
    """A stored run's float model, from its verified checkpoint (never unpickles code)."""
    record, path = _with_weights(as_store(store), run_id)
    model, meta = load_checkpoint(path)
    shape, classes = tuple(meta["input_shape"]), list(meta["classes"])
    return LoadedRun(run_id, record.kind, record.label, model.cpu().eval(), shape, classes, record)


def eval_split(run: LoadedRun, data=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The run's own test split (its stored data config; never downloads)."""
    if data is None:
        data = load_dataset(replace(run.config.data, download=False))
    if tuple(data.input_shape) != run.input_shape or data.num_classes != len(run.classes):
        raise DataError(
            f"dataset '{data.name}' has inputs {list(data.input_shape)} and "
            f"{data.num_classes} classes, but run '{run.run_id}' expects "
            f"{list(run.input_shape)} and {len(run.classes)}."
        )
    return data.test_x, data.test_y


# ---------------------------------------------------------------- writing


def quantize_model(model: nn.Module) -> nn.Module:
    """A copy of `model` with every Linear layer dynamically quantized to int8."""
    with quiet_deprecations():
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).cpu().eval(), {nn.Linear}, dtype=torch.qint8)


@contextmanager
def quiet_deprecations() -> Iterator[None]:
    """torch.jit and torch.ao.quantization warn on every call that they are deprecated;
    the issue asks for both (see the module docstring), so the warnings are noise here."""
    with warnings.catch_warnings():
        for category in (FutureWarning, DeprecationWarning, UserWarning):
            warnings.simplefilter("ignore", category)
        yield


def write_torchscript(model: nn.Module, path: Path, marker: dict) -> None:
    """Script (not trace: no shape is baked in) and save with our marker inside."""
    try:
        with quiet_deprecations():
            scripted = torch.jit.script(model.eval())
            torch.jit.save(scripted, str(path), _extra_files={MARKER_FILE: json.dumps(marker)})
    except Exception as err:
        raise ExportError(f"TorchScript export failed: {_first_line(err)}") from err


def graph_digest(model_proto) -> str:
    return hashlib.sha256(model_proto.graph.SerializeToString(deterministic=True)).hexdigest()


def _save_onnx(model_proto, path: Path, marker: dict) -> None:
    import onnx

    marker = {**marker, "graph_sha256": graph_digest(model_proto)}
    del model_proto.metadata_props[:]
    model_proto.metadata_props.add(key=MARKER_FILE, value=json.dumps(marker))
    onnx.save(model_proto, str(path))


def float_onnx(model: nn.Module, input_shape: tuple[int, ...]):
    """torch.onnx.export (the torch.export-based exporter) with a dynamic batch axis,
    checked by onnx.checker. Returns the ModelProto."""
    import onnx

    example = torch.zeros(2, *input_shape)  # batch 2: a batch of 1 would be specialized
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model.eval(),
                (example,),
                None,
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                verbose=False,
            )
        if program is None:  # only when asked to write a file, which is not done here
            raise ExportError("torch.onnx.export returned no program")
        proto = program.model_proto
        onnx.checker.check_model(proto, full_check=True)
    except Exception as err:
        raise ExportError(f"ONNX export failed: {_first_line(err)}") from err
    return proto


def int8_onnx(float_proto):
    """ONNX Runtime's dynamic quantization of the MatMul/Gemm weights, after its pre-processing."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="kd-int8-") as tmp:
        pre, out = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        try:
            quant_pre_process(float_proto, str(pre))
            quantize_dynamic(str(pre), str(out), op_types_to_quantize=ONNX_INT8_OPS, weight_type=QuantType.QInt8)
            proto = onnx.load(str(out))
            onnx.checker.check_model(proto, full_check=True)
        except Exception as err:
            raise ExportError(f"ONNX Runtime int8 quantization failed: {_first_line(err)}") from err
    return proto


def write_artifact(
    model: nn.Module, input_shape: tuple[int, ...], fmt: str, quantize: str | None, path: Path, marker: dict
) -> None:
    """Write `model` (float) as `fmt`, quantized if asked, to `path`."""
    check_choice(fmt, quantize)
    if fmt == "torchscript":
        write_torchscript(quantize_model(model) if quantize else model, path, marker)
        return
    proto = float_onnx(model, input_shape)
    _save_onnx(int8_onnx(proto) if quantize else proto, path, marker)


# ---------------------------------------------------------------- loading


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def _marker_from_zip(path: Path) -> dict:
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith(f"/extra/{MARKER_FILE}")]
        if not names:
            raise ArtifactError(
                f"'{path}' is a TorchScript/PyTorch archive but not a KD Studio export "
                "(no marker); only files written by `export` are loaded."
            )
        return _parse_marker(archive.read(names[0]), path)


def _parse_marker(raw: bytes | str, path: Path) -> dict:
    try:
        marker = json.loads(raw)
    except ValueError as err:
        raise ArtifactError(f"'{path}': its KD Studio marker is not valid JSON.") from err
    if not isinstance(marker, dict) or marker.get("format") != MARKER:
        raise ArtifactError(f"'{path}' was written by another exporter or version ({MARKER} expected).")
    return marker


def load_torchscript(path: str | Path) -> tuple[nn.Module, dict]:
    """Our own TorchScript export, checked before loading (TorchScript is code: load only files
    that `export` wrote). Returns (module on CPU in eval mode, marker)."""
    path = Path(path)
    check_archive(path, ArtifactError, "TorchScript file")
    marker = _marker_from_zip(path)
    try:
        with quiet_deprecations():
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as err:
        raise ArtifactError(f"TorchScript file '{path}' could not be loaded: {_first_line(err)}") from err
    return module.eval(), marker


def load_onnx_model(path: str | Path):
    """Parse, check and authenticate an ONNX export. Returns (ModelProto, marker)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"ONNX file '{path}' does not exist.")
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto, full_check=True)
    except Exception as err:  # DecodeError for truncation, ValidationError for a broken graph
        raise ArtifactError(f"'{path}' is not a valid ONNX model (truncated or corrupt): {_first_line(err)}") from err
    props = {p.key: p.value for p in proto.metadata_props}
    if MARKER_FILE not in props:
        raise ArtifactError(f"'{path}' is an ONNX model but not a KD Studio export (no marker).")
    marker = _parse_marker(props[MARKER_FILE], path)
    if marker.get("graph_sha256") != graph_digest(proto):
        raise ArtifactError(
            f"ONNX file '{path}' was modified after export: its graph no longer matches the digest written with it."
        )
    return proto, marker


def onnx_session(model_bytes: bytes, threads: int = 1, provider: str = "cpu"):
    """An ONNX Runtime session with a fixed intra-op thread count, sequential execution."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if provider == "cuda" else ["CPUExecutionProvider"]
    try:
        return ort.InferenceSession(model_bytes, sess_options=opts, providers=providers)
    except Exception as err:
        raise ArtifactError(f"ONNX Runtime could not load the model: {_first_line(err)}") from err


def session_logits(session) -> Logits:
    """A callable (B, C, H, W) float tensor → (B, K) logits tensor over an ORT session."""

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {INPUT_NAME: x.numpy()})[0])

    return run


def module_logits(module: nn.Module) -> Logits:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return module(x)

    return run


def load_artifact(path: str | Path, threads: int = 1, provider: str = "cpu") -> tuple[Logits, dict]:
    """Load an export of either format (told apart by content). Returns (logits fn, marker)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"exported file '{path}' does not exist.")
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"  # by its first bytes: a truncated zip is still a zip
    if is_zip:
        module, marker = load_torchscript(path)
        return module_logits(module), marker
    proto, marker = load_onnx_model(path)
    return session_logits(onnx_session(proto.SerializeToString(), threads, provider)), marker


# ---------------------------------------------------------------- verification


def batched(fn: Logits, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    return torch.cat([fn(x[i : i + batch_size].contiguous()) for i in range(0, len(x), batch_size)]).float()


def compare(reference: torch.Tensor, candidate: torch.Tensor, tol: Tolerance) -> dict:
    """The two numbers every export is judged by, and whether they pass."""
    if candidate.shape != reference.shape:
        return {
            "max_abs_diff": float("inf"),
            "agreement": 0.0,
            "logit_scale": 0.0,
            "tolerance": {"max_abs_diff": 0.0, "min_agreement": tol.min_agreement},
            "ok": False,
            "problem": f"logits of shape {list(candidate.shape)}, expected {list(reference.shape)}",
        }
    scale = reference.abs().max().item()
    diff = (candidate - reference).abs().max().item()
    agree = agreement(reference, candidate)
    bound = tol.bound(scale)
    return {
        "max_abs_diff": diff,
        "agreement": agree,
        "logit_scale": scale,
        "tolerance": {"max_abs_diff": bound, "min_agreement": tol.min_agreement},
        "ok": bool(diff <= bound and agree >= tol.min_agreement),
    }


def verify_artifact(
    run: LoadedRun, fn: Logits, quantize: str | None, x: torch.Tensor, y: torch.Tensor, tol: Tolerance | None = None
) -> dict:
    """Run the loaded file and the float PyTorch model on the test split and compare."""
    tol = tol or TOLERANCES[quantize]
    reference = predict_logits(run.model, x)
    try:
        candidate = batched(fn, x)
    except KDError:
        raise
    except Exception as err:
        raise ArtifactError(f"the exported model failed on the test inputs: {_first_line(err)}") from err
    report = compare(reference, candidate, tol)
    report.update(
        samples=len(x),
        test_acc=accuracy(candidate, y),
        reference_test_acc=accuracy(reference, y),
        reference="PyTorch float32 (eager)",
    )
    return report


def refusal(report: dict) -> str:
    t = report["tolerance"]
    return (
        f"export refused: max |Δlogit| {report['max_abs_diff']:.3g} (allowed {t['max_abs_diff']:.3g}), "
        f"top-1 agreement {report['agreement']:.4f} (at least {t['min_agreement']} needed) "
        f"on {report.get('samples', 0)} test samples. {report.get('problem', '')}"
    ).strip()


def default_path(store: Store, run_id: str, fmt: str, quantize: str | None) -> Path:
    """Beside the run's weights: deleting the run deletes its exports too."""
    return store.weights_dir / f"{run_id}{SUFFIXES[(fmt, quantize)]}"


def export_run(
    store: Store | str | Path,
    run_id: str,
    fmt: str,
    quantize: str | None = None,
    out: str | Path | None = None,
    data=None,
    tol: Tolerance | None = None,
) -> dict:
    """Export, load back, verify; keep the file only if it is within tolerance.

    Returns {run_id, kind, format, quantize, path, bytes, samples, max_abs_diff, agreement,
    logit_scale, tolerance{max_abs_diff, min_agreement}, test_acc, reference_test_acc, ok}.
    Raises ExportError (with .report) when refused."""
    check_choice(fmt, quantize)
    store = as_store(store)
    run = load_run(store, run_id)
    x, y = eval_split(run, data)
    dest = Path(out).expanduser() if out else default_path(store, run_id, fmt, quantize)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        write_artifact(run.model, run.input_shape, fmt, quantize, part, run.marker(fmt, quantize))
        fn, _ = load_artifact(part)
        report = verify_artifact(run, fn, quantize, x, y, tol)
        if not report["ok"]:
            raise ExportError(refusal(report), report)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    part.replace(dest)
    return {
        "run_id": run_id,
        "kind": run.kind,
        "format": fmt,
        "quantize": quantize,
        "path": str(dest),
        "bytes": dest.stat().st_size,
        **report,
    }


def verify_file(store: Store | str | Path, run_id: str, path: str | Path, data=None) -> dict:
    """Check an existing export (e.g. a downloaded one) against the run it came from."""
    run = load_run(store, run_id)
    fn, marker = load_artifact(path)
    if marker.get("run_id") != run_id:
        raise ArtifactError(f"'{path}' was exported from run '{marker.get('run_id')}', not '{run_id}'.")
    x, y = eval_split(run, data)
    report = verify_artifact(run, fn, marker.get("quantize"), x, y)
    return {
        "run_id": run_id,
        "kind": run.kind,
        "format": marker.get("export"),
        "quantize": marker.get("quantize"),
        "path": str(path),
        "bytes": Path(path).stat().st_size,
        **report,
    }


def export_bytes(store: Store | str | Path, run_id: str, fmt: str, quantize: str | None = None, data=None) -> dict:
    """For a download button: {filename, mime, data: bytes, report}. Nothing is left on disk."""
    check_choice(fmt, quantize)
    with tempfile.TemporaryDirectory(prefix="kd-export-") as tmp:
        name = f"{run_id}{SUFFIXES[(fmt, quantize)]}"
        report = export_run(store, run_id, fmt, quantize, out=Path(tmp) / name, data=data)
        payload = (Path(tmp) / name).read_bytes()
    report["path"] = None
    return {"filename": name, "mime": MIME, "data": payload, "report": report}


def weights_bytes(store: Store | str | Path, run_id: str) -> dict:
    """The run's checkpoint for download: {filename, mime, data: bytes} (checksum-verified)."""
    path = weights_file(store, run_id)
    return {"filename": f"{run_id}.pt", "mime": MIME, "data": path.read_bytes()}
