"""Black-box teachers: TorchScript, torch.export (.pt2) and ONNX files written here from the
digits teacher, behind an input contract unlike the dataset's (3 channels, 16 px, their own
mean and std), distil a student; class names are checked, aligned or refused."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from blackbox_files import DIGITS, BehindContract, TeacherFiles, contract, write
from helpers import assert_clean_failure, make_config, run_cli, write_image_folder
from kd_core.config import ModelSpec
from kd_core.deploy.export import export_run, float_onnx
from kd_core.errors import CheckpointError, ConfigError
from kd_core.jobs import JobManager
from kd_core.methods import parse_methods
from kd_core.store import Store
from kd_core.train.blackbox import BlackBoxError, align_classes, load_blackbox, resolve_contract
from kd_core.train.engine import fit
from kd_core.train.imported import TeacherFile, import_teacher_file
from kd_core.train.metrics import agreement, predict_logits
from kd_core.train.models import param_count
from kd_core.train.recorder import distill, load_teacher
from kd_core.views import studio
from kd_core.views.compare import headline_differences

# Writing a .pt2 (torch.export) or an ONNX file takes seconds: tests of those kinds are slow.
PT2, ONNX = (pytest.param(kind, marks=pytest.mark.slow) for kind in ("pt2", "onnx"))


@pytest.fixture(scope="module")
def files(tmp_path_factory, teacher, digits):
    folder = tmp_path_factory.mktemp("teachers")
    wrapped = BehindContract(teacher, digits.mean, digits.std)
    return TeacherFiles(folder, wrapped), wrapped


def load(path, digits, c=None, **kw):
    return load_blackbox(path, c or contract(), digits.input_shape, digits.classes, digits.mean, digits.std, **kw)


@pytest.mark.parametrize("kind", ["torchscript", PT2, ONNX])
def test_each_kind_gives_the_files_logits_for_the_datasets_images(files, digits, teacher, kind):
    paths, wrapped = files
    bb, notes = load(paths[kind], digits)
    assert (
        bb.kind == kind
        and "grey images repeated to 3 channels" in notes[0]
        and "8×8 to the teacher's 16×16" in notes[1]
    )
    x = digits.test_x[:37]  # not a multiple of the .pt2 program's batch of 7
    with torch.no_grad():
        reference = wrapped(bb.teacher_input(x))
    torch.testing.assert_close(bb(x), reference, atol=1e-4, rtol=1e-4)
    # through the contract (grey → RGB, 8 → 16 px → 8 px, two normalisations) the digits teacher survives:
    assert agreement(predict_logits(teacher, digits.test_x), predict_logits(bb, digits.test_x)) > 0.9
    # parameters where the file tells them apart; ONNX counts its few constants (mean, std, scalars) too
    extra = param_count(bb) - param_count(teacher)
    assert extra == 0 if kind != "onnx" else 0 <= extra <= 16


def test_feature_based_methods_are_refused_for_a_black_box_before_anything_is_stored(tmp_path, files, digits):
    bb, _ = load(files[0]["torchscript"], digits)
    cfg = make_config("student", epochs=1)
    cfg = replace(cfg, distill=replace(cfg.distill, methods=parse_methods("kd+fitnets")))
    store = Store(tmp_path)
    (outcome,) = distill(store, cfg, digits, bb)
    assert outcome.status == "failed" and "gives logits only, so methods that read features" in outcome.message
    assert "choose a logit-based method" in outcome.message and store.list_runs() == []
    logits_only = replace(cfg, distill=replace(cfg.distill, methods=parse_methods("kd+dkd")))
    assert fit(logits_only, digits, bb).status == "finished"  # logit methods are fine


def test_a_wrong_normalisation_in_the_contract_changes_what_the_teacher_sees(files, digits, teacher):
    bb, _ = load(files[0]["torchscript"], digits, contract(mean=[0.0], std=[1.0]))
    assert agreement(predict_logits(teacher, digits.test_x), predict_logits(bb, digits.test_x)) < 0.8


@pytest.mark.slow  # an ONNX export
def test_teacher_logits_are_computed_once_per_run_and_cached(files, digits):
    bb, _ = load(files[0]["onnx"], digits)
    calls = []
    bb.register_forward_hook(lambda *_: calls.append(1))
    result = fit(make_config("student", epochs=3), digits, bb)
    assert result.status == "finished"
    assert len(calls) == math.ceil(len(digits.train_y) / 1024)  # one pass over the training split, not per step


@pytest.mark.parametrize("kind", ["torchscript", PT2])
def test_a_teacher_file_distils_a_student_and_is_measured_like_any_teacher(tmp_path, files, digits, kind):
    store = Store(tmp_path)
    run_id, _ = import_teacher_file(store, TeacherFile(Path(files[0][kind]), contract()), digits)
    record = store.get_run(run_id)
    m = record.metrics
    assert record.status == "finished" and m["blackbox"] == kind and m["flops"] is None
    assert m["bytes"] == os.path.getsize(files[0][kind]) and m["params"] > 0
    assert m["test_acc"] > 0.8 and set(m["latency"]["batches"]) == {"1", "256"}
    teacher = load_teacher(store, run_id, digits)  # read back from the store with its contract
    with pytest.raises(CheckpointError, match="imported teacher file"):
        export_run(store, run_id, "onnx")  # nothing to export: it is already a file
    student, baseline = distill(store, make_config("student", epochs=4, lr=1e-2), digits, teacher)
    assert student.status == baseline.status == "finished"
    assert student.metrics["agreement"] > 0.8 and student.metrics["test_acc"] > 0.8


def test_the_same_file_imported_again_is_the_same_teacher_run(tmp_path, files, digits):
    store = Store(tmp_path)
    tf = TeacherFile(Path(files[0]["torchscript"]), contract())
    first, _ = import_teacher_file(store, tf, digits)
    again, _ = import_teacher_file(store, tf, digits)
    assert first == again and len(store.list_runs()) == 1


# ---------------------------------------------------------------- classes


def test_other_class_names_are_refused_with_the_difference_listed(files, digits):
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    with pytest.raises(ConfigError) as err:
        load(files[0]["torchscript"], digits, contract(names))
    text = str(err.value)
    assert "only the teacher has: zero, one" in text.lower() and "only the dataset has: 0, 1, 2" in text
    bb, notes = load(files[0]["torchscript"], digits, contract(names), mapping=dict(zip(names, DIGITS)))
    plain, _ = load(files[0]["torchscript"], digits)
    torch.testing.assert_close(bb(digits.test_x[:50]), plain(digits.test_x[:50]))
    assert notes[-1] == "classes renamed by the mapping"


def test_names_in_another_order_are_aligned_by_name(tmp_path, teacher, digits):
    reversed_file = write("torchscript", BehindContract(teacher, digits.mean, digits.std, reverse=True), tmp_path)
    bb, notes = load(reversed_file, digits, contract(DIGITS[::-1]))
    with torch.no_grad():
        expected = teacher(digits.test_x[:64])
    assert "aligned" in notes[-1]
    assert agreement(expected, bb(digits.test_x[:64])) > 0.9  # digit k still means digit k


def test_align_classes_by_name_subset_mapping_and_cross_dataset():
    assert align_classes(("a", "b"), ["a", "b"]) == (None, [])
    index, notes = align_classes(("x", "b", "a", "c"), ["a", "b"])
    assert index == [2, 1] and "2 teacher classes the dataset lacks are left out: x, c" in notes[1]
    assert align_classes(("A", "B"), ["a", "b"], {"A": "a", "B": "b"})[0] is None
    assert align_classes(("cat", "dog"), ["car", "ship"], cross=True)[0] is None
    with pytest.raises(ConfigError, match="as many teacher outputs as dataset classes"):
        align_classes(("cat", "dog", "owl"), ["car", "ship"], cross=True)
    with pytest.raises(ConfigError, match="does not have: Z"):
        align_classes(("A", "B"), ["a", "b"], {"Z": "a"})
    with pytest.raises(ConfigError, match="same dataset class"):
        align_classes(("A", "B"), ["a", "b"], {"A": "a", "B": "a"})


# ---------------------------------------------------------------- contract and file checks


def test_a_missing_contract_says_what_to_state_and_how(tmp_path):
    (tmp_path / "t.onnx").write_bytes(b"x")
    with pytest.raises(ConfigError, match="does not state channels, size, mean, std, classes") as err:
        resolve_contract(tmp_path / "t.onnx")
    assert "--teacher-classes" in str(err.value)
    (tmp_path / "t.onnx.json").write_text(json.dumps({"channels": 1, "size": [8, 8], "mean": 0.3, "std": 0.2}))
    c = resolve_contract(tmp_path / "t.onnx", classes="a,b,c")  # the sidecar, completed by a flag
    assert (c.channels, c.size, c.mean, c.classes) == (1, (8, 8), (0.3,), ("a", "b", "c"))


def test_colour_images_for_a_grey_teacher_and_a_wrong_output_count_are_refused(files, digits):
    path = files[0]["torchscript"]
    with pytest.raises(ConfigError, match="takes 1-channel images, but the dataset's have 3"):
        load_blackbox(path, contract(channels=1, mean=[0.5], std=[0.2]), (3, 8, 8), DIGITS, 0.0, 1.0)
    nine = contract(DIGITS[:9])  # the file gives 10 logits
    with pytest.raises(BlackBoxError, match="outputs of shape \\[10\\] per image, but its contract names 9"):
        load_blackbox(path, nine, digits.input_shape, DIGITS[:9], digits.mean, digits.std)


def test_a_checkpoint_or_garbage_is_not_taken_for_a_black_box(tmp_path, digits, teacher):
    torch.save(teacher.state_dict(), tmp_path / "weights.pt")
    with pytest.raises(BlackBoxError, match="PyTorch weights file, not a TorchScript"):
        load(tmp_path / "weights.pt", digits)
    (tmp_path / "junk.onnx").write_bytes(b"\x00not a model")
    with pytest.raises(BlackBoxError, match="not an ONNX model"):
        load(tmp_path / "junk.onnx", digits)


# ---------------------------------------------------------------- CLI


@pytest.mark.slow
def test_cli_distils_from_an_onnx_file_with_its_contract(tmp_path, files):
    (tmp_path / "contract.json").write_text(json.dumps(contract().to_dict()))
    store = tmp_path / "runs"
    args = ("distill", "--dataset", "digits", "--teacher", files[0]["onnx"], "--teacher-contract", "contract.json",
            "--family", "mlp", "--size", "16", "--epochs", "2", "--store", store, "--json", "--quiet")  # fmt: skip
    proc = run_cli(tmp_path, *args)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    (student,) = out["runs"]
    teachers = Store(store).list_runs(kind="teacher")
    assert len(teachers) == 1 and teachers[0].label == "onnx teacher.onnx (black box)"
    assert out["config"]["teacher_id"] == teachers[0].id and student["status"] == "finished"
    assert "note: teacher teacher.onnx: grey images repeated to 3 channels" in proc.stderr


@pytest.mark.slow
def test_cli_refuses_other_classes_before_storing_anything(tmp_path, files):
    store = tmp_path / "runs"
    proc = run_cli(
        tmp_path, "distill", "--dataset", "digits", "--teacher", files[0]["onnx"], "--teacher-channels", "3",
        "--teacher-size", "16", "--teacher-mean", "0.485,0.456,0.406", "--teacher-std", "0.229,0.224,0.225",
        "--teacher-classes", "cat,dog,owl,bat,cow,pig,hen,elk,yak,emu", "--epochs", "1", "--store", store,
    )  # fmt: skip
    assert_clean_failure(proc, "error:", "only the teacher has: cat, dog", "class-mapping file")
    assert Store(store).list_runs() == []


@pytest.mark.slow  # a CLI subprocess
def test_cli_refuses_a_feature_method_for_a_teacher_file_before_storing_anything(tmp_path, files):
    (tmp_path / "teacher.onnx.json").write_text(json.dumps(contract().to_dict()))  # the sidecar
    os.link(files[0]["onnx"], tmp_path / "teacher.onnx")
    store = tmp_path / "runs"
    proc = run_cli(
        tmp_path, "distill", "--dataset", "digits", "--teacher", "teacher.onnx", "--method", "kd+at",
        "--epochs", "1", "--store", store,
    )  # fmt: skip
    assert_clean_failure(proc, "error:", "black box (onnx file 'teacher.onnx'): it gives logits only")
    assert Store(store).list_runs() == []


@pytest.mark.slow  # trains a teacher and a MobileNet student, then exports it to ONNX (~1 min)
def test_an_onnx_classifier_with_its_class_names_distils_mobilenet_on_an_image_folder(tmp_path):
    """The issue's flow through the dashboard's functions: an ONNX file and its class names are
    uploaded, an image folder is the dataset, mobilenet_v3_small at width 0.5 is distilled with
    its baseline (curves stored per epoch), compared against the teacher, and exported."""
    folder = write_image_folder(tmp_path / "imgs", classes=("ant", "bee", "cow"), per_class=12, size=(20, 20))
    data = studio.load_data(f"folder:{folder}", str(tmp_path / "data"), 16)
    inner = fit(make_config("teacher", ModelSpec("mlp", 64, 1), epochs=5, lr=1e-2), data).model.eval()
    onnx_bytes = float_onnx(inner, (3, 16, 16)).SerializeToString()
    said = {"channels": 3, "size": 16, "mean": [data.mean] * 3, "std": [data.std] * 3, "classes": ["ant", "bee", "cow"]}
    store = Store(tmp_path / "runs")
    teacher_id, _ = studio.import_teacher_upload(store, onnx_bytes, "classifier.onnx", data, json.dumps(said).encode())
    teacher = studio.load_model(store, teacher_id, data)
    cfg = studio.make_config("student", data.name, str(tmp_path / "data"), 16, "mobilenet_v3_small", 64, 1,
                             epochs=3, lr=3e-3, batch_size=16, device="cpu", teacher_id=teacher_id, width=0.5)  # fmt: skip
    manager = JobManager()
    job = studio.start_distill(manager, store, data, teacher, cfg, with_baseline=True)
    deadline = time.monotonic() + 600
    while job.live and time.monotonic() < deadline:
        time.sleep(0.2)
    student, baseline = (o for o in job.snapshot().outcomes)
    assert (student["kind"], student["status"], baseline["status"]) == ("student", "finished", "finished")
    assert (
        len(store.epochs(student["run_id"])) == 3
        and store.get_run(student["run_id"]).label == "mobilenet_v3_small ×0.5"
    )
    assert set(headline_differences(store, teacher_id, student["run_id"])) == {"baseline", "teacher"}
    report = export_run(store, student["run_id"], "onnx")
    assert report["ok"] and report["agreement"] >= 0.99
