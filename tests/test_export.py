"""Export, int8 quantization, loading back, tamper detection, runtimes and the deploy CLI,
on digits with tiny models trained for a few epochs. Every export is compared with
logits computed here by calling the PyTorch model (or onnxruntime) directly."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from kd_core.cli import main
from kd_core.config import DataConfig, DistillConfig, ModelSpec, RunConfig, TrainConfig
from kd_core.deploy import export as ex
from kd_core.deploy import runtimes as rt
from kd_core.errors import CheckpointError, ConfigError, KDError
from kd_core.store import Store
from kd_core.train.checkpoint import load_checkpoint
from kd_core.train.data import load_dataset
from kd_core.train.recorder import distill, train_teacher

ROOT = Path(__file__).resolve().parents[1]
INT8_ACCURACY_DROP = 0.02  # the int8 student may lose at most 2 points of test accuracy on digits
# An ONNX export (torch.onnx and onnxscript, then onnxruntime to check it) takes seconds: slow.
ONNX = pytest.param("onnx", marks=pytest.mark.slow)


@pytest.fixture(scope="module")
def data():
    return load_dataset(DataConfig(dataset="digits"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    """A teacher (MLP 64), its distilled student (MLP 16) and a small CNN, in one store."""
    store = Store(tmp_path_factory.mktemp("store"))
    train = TrainConfig(epochs=3, batch_size=32, lr=3e-3, threads=1)
    cfg = RunConfig(kind="teacher", data=DataConfig(dataset="digits"), model=ModelSpec("mlp", 64, 1), train=train)
    teacher = train_teacher(store, cfg, data)
    student = distill(
        store,
        replace(cfg, kind="student", model=ModelSpec("mlp", 16, 1), distill=DistillConfig(), teacher_id=teacher.run_id),
        data,
        teacher.model,
        with_baseline=False,
    )[0]
    cnn = train_teacher(store, replace(cfg, model=ModelSpec("cnn", 4), train=replace(train, epochs=1)), data)
    assert {teacher.status, student.status, cnn.status} == {"finished"}
    return {"store": store, "teacher": teacher.run_id, "student": student.run_id, "cnn": cnn.run_id}


def torch_logits(store: Store, run_id: str, x: torch.Tensor) -> torch.Tensor:
    """The reference, computed without kd_core.deploy.export: the checkpoint's model called directly."""
    model, _ = load_checkpoint(store.get_run(run_id).weights)
    with torch.no_grad():
        return model.eval()(x)


def ort_logits(path: Path, x: torch.Tensor) -> torch.Tensor:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


# ---------------------------------------------------------------- float round trips


@pytest.mark.parametrize("which", ["teacher", "student", "cnn"])
@pytest.mark.parametrize("fmt", ["torchscript", ONNX])
def test_float_export_round_trip_within_tolerance(trained, data, which, fmt):
    store, run_id = trained["store"], trained[which]
    report = ex.export_run(store, run_id, fmt, data=data)
    path = Path(report["path"])
    assert path.is_file() and report["bytes"] == path.stat().st_size
    fn, marker = ex.load_artifact(path)
    assert (marker["run_id"], marker["export"], marker["quantize"]) == (run_id, fmt, None)
    reference = torch_logits(store, run_id, data.test_x)
    got = fn(data.test_x)
    diff = (got - reference).abs().max().item()
    assert diff <= 1e-4 * max(1.0, reference.abs().max().item())
    assert (got.argmax(1) == reference.argmax(1)).float().mean().item() >= 0.99
    assert report["ok"] and report["samples"] == len(data.test_y)
    assert report["max_abs_diff"] == pytest.approx(diff, abs=1e-6)
    assert report["reference_test_acc"] == pytest.approx((reference.argmax(1) == data.test_y).float().mean().item())


@pytest.mark.slow
def test_onnx_has_a_dynamic_batch_axis_and_agrees_with_pytorch(trained, data):
    store, run_id = trained["store"], trained["cnn"]
    path = Path(ex.export_run(store, run_id, "onnx", data=data)["path"])
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.HasField("dim_value")
    for n in (1, 3, 257):
        x = data.test_x[:n]
        got, want = ort_logits(path, x), torch_logits(store, run_id, x)
        assert got.shape == (n, data.num_classes)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- int8


@pytest.mark.parametrize("fmt", ["torchscript", ONNX])
def test_int8_student_accuracy_is_close_to_the_float_student(trained, data, fmt):
    store, run_id = trained["store"], trained["student"]
    report = ex.export_run(store, run_id, fmt, "int8", data=data)
    fn, marker = ex.load_artifact(report["path"])
    assert marker["quantize"] == "int8"
    int8_acc = (fn(data.test_x).argmax(1) == data.test_y).float().mean().item()
    float_acc = (torch_logits(store, run_id, data.test_x).argmax(1) == data.test_y).float().mean().item()
    assert float_acc > 0.7, "the student must have learnt something for this comparison to mean anything"
    assert int8_acc >= float_acc - INT8_ACCURACY_DROP
    assert report["test_acc"] == pytest.approx(int8_acc)


@pytest.mark.slow
def test_int8_files_are_really_quantized(trained, data):
    store, run_id = trained["store"], trained["teacher"]
    onnx_int8 = Path(ex.export_run(store, run_id, "onnx", "int8", data=data)["path"])
    onnx_float = Path(ex.export_run(store, run_id, "onnx", data=data)["path"])
    ops = {n.op_type for n in onnx.load(str(onnx_int8)).graph.node}
    assert "MatMulInteger" in ops and "Gemm" not in ops
    assert onnx_int8.stat().st_size < 0.5 * onnx_float.stat().st_size
    module, _ = ex.load_torchscript(ex.export_run(store, run_id, "torchscript", "int8", data=data)["path"])
    assert "linear_dynamic" in getattr(module.net, "1").code  # quantized::linear_dynamic


@pytest.mark.slow
def test_an_export_outside_tolerance_is_refused_with_its_numbers(trained, data):
    store, run_id = trained["store"], trained["teacher"]
    out = Path(store.root) / "refused.onnx"
    with pytest.raises(ex.ExportError) as err:  # int8 judged by the float tolerance
        ex.export_run(store, run_id, "onnx", "int8", out=out, data=data, tol=ex.TOLERANCES[None])
    report = err.value.report
    assert report["max_abs_diff"] > report["tolerance"]["max_abs_diff"] and not report["ok"]
    assert f"{report['max_abs_diff']:.3g}" in str(err.value) and "agreement" in str(err.value)
    assert not out.exists() and not list(Path(store.root).glob("refused.onnx*"))


# ---------------------------------------------------------------- damaged files


def flip_in_zip_entry(path: Path, suffix: str) -> None:
    """Flip one byte inside the stored data of the zip entry whose name ends with `suffix`."""
    blob = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(suffix))
    name_len, extra_len = struct.unpack("<HH", blob[info.header_offset + 26 : info.header_offset + 30])
    blob[info.header_offset + 30 + name_len + extra_len + info.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(blob))


def flip_in_onnx_weights(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    weights = onnx.numpy_helper.to_array(onnx.load(str(path)).graph.initializer[0])
    at = bytes(blob).find(np.ascontiguousarray(weights).tobytes())
    assert at > 0
    blob[at + weights.nbytes // 2] ^= 0xFF
    path.write_bytes(bytes(blob))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", ["truncate", "flip"])
@pytest.mark.parametrize("fmt", ["torchscript", ONNX])
def test_damaged_exports_are_refused_clearly(trained, data, tmp_path, fmt, damage):
    store, run_id = trained["store"], trained["student"]
    path = Path(ex.export_run(store, run_id, fmt, out=tmp_path / f"m.{fmt}", data=data)["path"])
    if damage == "truncate":
        truncate(path)
    elif fmt == "torchscript":
        flip_in_zip_entry(path, "/data/0")
    else:
        flip_in_onnx_weights(path)
    with pytest.raises(ex.ArtifactError, match=r"corrupt|modified|truncated"):
        ex.load_artifact(path)
    assert main(["export", run_id, "--verify", str(path), "--store", str(store.root)]) != 0


def test_foreign_torchscript_is_not_loaded(tmp_path):
    path = tmp_path / "foreign.pt"
    with ex.quiet_deprecations():
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(ex.ArtifactError, match="not a KD Studio export"):
        ex.load_artifact(path)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_weights_give_a_checkpoint_error_and_a_clean_cli_exit(trained, tmp_path, damage):
    root = tmp_path / "store"
    shutil.copytree(trained["store"].root, root)
    store = Store(root)
    run_id = trained["student"]
    weights = root / "weights" / f"{run_id}.pt"
    store.finish_run(run_id, "finished", store.get_run(run_id).metrics, weights=weights)
    truncate(weights) if damage == "truncate" else flip_in_zip_entry(weights, "/data/0")
    with pytest.raises(CheckpointError, match=r"corrupt|truncated"):
        ex.load_run(store, run_id)
    proc = subprocess.run(
        [sys.executable, "-m", "kd_core", "export", run_id, "--format", "onnx", "--store", str(root)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- downloads, runtimes, CLI


@pytest.mark.slow
def test_downloads_are_bytes_that_load_back(trained, data, tmp_path):
    store, run_id = trained["store"], trained["student"]
    weights = ex.weights_bytes(store, run_id)
    (tmp_path / weights["filename"]).write_bytes(weights["data"])
    model, _ = load_checkpoint(tmp_path / weights["filename"])
    torch.testing.assert_close(model(data.test_x[:4]), torch_logits(store, run_id, data.test_x[:4]))
    got = ex.export_bytes(store, run_id, "onnx", "int8", data=data)
    assert got["filename"].endswith(".int8.onnx") and got["report"]["ok"]
    (tmp_path / got["filename"]).write_bytes(got["data"])
    assert ex.load_artifact(tmp_path / got["filename"])[1]["run_id"] == run_id


def test_add_speedups_divides_by_the_teacher_in_eager():
    rows = [
        {"model": "teacher", "runtime": "eager", "batch_size": 1, "median_ms": 4.0},
        {"model": "student", "runtime": "onnxruntime", "batch_size": 1, "median_ms": 0.5},
        {"model": "student", "runtime": "eager", "batch_size": 8, "median_ms": 1.0},
    ]
    assert [r["speedup_vs_teacher_eager"] for r in rt.add_speedups(rows)] == [1.0, 8.0, None]


def test_unknown_runtime_is_a_clear_error():
    with pytest.raises(KDError, match="unknown runtime"):
        rt.parse_runtimes("eager,tensorrt")


@pytest.mark.slow
def test_bench_measures_teacher_student_and_int8_under_every_runtime(trained, capsys):
    code = main(
        [
            "bench",
            trained["student"],
            "--runtimes",
            "eager,torchscript,onnxruntime",
            "--json",
            "--store",
            str(trained["store"].root),
            "--batch-sizes",
            "1,16",
            "--warmup",
            "1",
            "--repeats",
            "3",
            "--threads",
            "1",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    cells = {(r["model"], r["runtime"], r["batch_size"]) for r in result["rows"]}
    assert cells == {
        (m, r, b)
        for m in ("teacher", "student", "student-int8")
        for r in ("eager", "torchscript", "onnxruntime")
        for b in (1, 16)
    }
    assert result["machine"]["threads"] == 1 and all(r["threads"] == 1 for r in result["rows"])
    for r in result["rows"]:
        assert r["median_ms"] > 0 and r["p90_ms"] >= r["median_ms"]
        base = next(
            b
            for b in result["rows"]
            if (b["model"], b["runtime"], b["batch_size"]) == ("teacher", "eager", r["batch_size"])
        )
        assert r["speedup_vs_teacher_eager"] == pytest.approx(base["median_ms"] / r["median_ms"])


@pytest.mark.slow
def test_quantization_report_sits_beside_the_float_student(trained, data):
    report = rt.quantization_report(
        trained["store"], trained["student"], data=data, batch_sizes=(1, 8), warmup=1, repeats=3
    )
    rows = {(r["runtime"], r["precision"]): r for r in report["rows"]}
    assert set(rows) == {("eager", "float32"), ("eager", "int8"), ("onnxruntime", "float32"), ("onnxruntime", "int8")}
    float_acc = rows[("eager", "float32")]["test_acc"]
    for (runtime, _), r in rows.items():
        assert r["within_tolerance"]
        assert r["test_acc"] >= float_acc - INT8_ACCURACY_DROP
        base = rows[(runtime, "float32")]
        assert r["acc_delta"] == pytest.approx(r["test_acc"] - base["test_acc"])
        assert r["size_ratio"] == pytest.approx(r["bytes"] / base["bytes"])
    assert rows[("onnxruntime", "int8")]["bytes"] < rows[("onnxruntime", "float32")]["bytes"]


@pytest.mark.slow
def test_bf16_row_is_autocast_measured_here_or_refused_without_bf16_units(trained, data):
    """Where the CPU does bf16 natively the report gains eager bf16, whose accuracy and agreement
    match an autocast forward pass computed here; elsewhere asking for it is refused."""
    store, run_id = trained["store"], trained["student"]
    kw = dict(data=data, batch_sizes=(1, 8), warmup=1, repeats=3, bf16=True)
    if not rt.bf16_inference()[0]:
        with pytest.raises(ConfigError, match="not offered on this machine"):
            rt.quantization_report(store, run_id, **kw)
        with pytest.raises(ConfigError, match="not available on this machine"):
            rt.parse_runtimes("eager,eager-bf16")
        return
    report = rt.quantization_report(store, run_id, **kw)
    row = next(r for r in report["rows"] if r["runtime"] == rt.BF16_RUNTIME)
    model, _ = load_checkpoint(store.get_run(run_id).weights)
    with torch.no_grad():
        reference = model.eval()(data.test_x).argmax(1).numpy()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(data.test_x).float().argmax(1).numpy()
    y = data.test_y.numpy()
    assert row["precision"] == "bfloat16" and row["model"] == "student"
    assert row["test_acc"] == pytest.approx(np.mean(low == y), abs=1e-6)  # float32 of a count over 360
    assert row["agreement"] == pytest.approx(np.mean(low == reference), abs=1e-6)
    eager = next(r for r in report["rows"] if (r["runtime"], r["precision"]) == ("eager", "float32"))
    assert row["acc_delta"] == pytest.approx(row["test_acc"] - eager["test_acc"])
    assert row["speedup_vs_float"] == pytest.approx(eager["median_ms_b8"] / row["median_ms_b8"])


def test_cli_export_json_and_default_path(trained, capsys):
    store, run_id = trained["store"], trained["teacher"]
    assert (
        main(["export", run_id, "--format", "torchscript", "--quantize", "int8", "--json", "--store", str(store.root)])
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["path"] == str(store.weights_dir / f"{run_id}.int8.torchscript.pt")
    assert ex.load_artifact(report["path"])[1]["quantize"] == "int8"
    assert main(["export", run_id, "--store", str(store.root)]) == 2  # no --format
    assert "needs --format" in capsys.readouterr().err


def test_bench_without_the_teacher_warns_and_gives_no_speedup(trained, tmp_path):
    root = tmp_path / "store"
    shutil.copytree(trained["store"].root, root)
    store = Store(root)
    store.delete_run(trained["teacher"])
    result = rt.bench_run(store, trained["cnn"], ["eager"], (1,), threads=1, warmup=1, repeats=2)
    assert [r["model"] for r in result["rows"]] == ["teacher", "teacher-int8"] and not result["warnings"]
    student = trained["student"]
    store.finish_run(student, "finished", store.get_run(student).metrics, weights=root / "weights" / f"{student}.pt")
    result = rt.bench_run(store, student, ["eager"], (1,), threads=1, warmup=1, repeats=2)
    assert [r["model"] for r in result["rows"]] == ["student", "student-int8"]
    assert "not in the store" in result["warnings"][0]
    assert all(r["speedup_vs_teacher_eager"] is None for r in result["rows"])
