"""AppTest: the Deployment tab of the Compare page, on a real run store (stores.compare_store).

The measurement runs for real as a job in the process's JobManager (the one the pages
use); exports are built for real and the downloaded bytes are checked here, against the
stored checkpoint called directly with torch and against onnxruntime called directly.
"""

from __future__ import annotations

import io
import json
import threading
import time
import warnings
import zipfile

import numpy as np
import onnxruntime as ort
import pytest
import torch
from streamlit.testing.v1 import AppTest

from app_helpers import APP, assert_clean, chart_specs, downloaded, wait_for_job
from kd_core.deploy import export as ex
from kd_core.deploy import runtimes as rt
from kd_core.train.checkpoint import load_checkpoint

COMPARE = "app_pages/compare.py"
FAST = {"dep_warmup": 1, "dep_repeats": 3}  # few timed calls: the test checks plumbing, not speed


def open_deployment() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page(COMPARE)
    at.session_state["dep_tab"] = "Deployment"  # the tab bar is bound to ?dep_tab=
    at.run()
    assert_clean(at)
    return at


def reference_predictions(store, run_id: str, x: torch.Tensor) -> np.ndarray:
    """Top-1 of the stored checkpoint, called directly (not through kd_core.deploy.export)."""
    model, _ = load_checkpoint(store.get_run(run_id).weights)
    with torch.no_grad():
        return model.eval()(x).argmax(1).numpy()


# ---------------------------------------------------------------- the tab


@pytest.mark.slow
def test_the_compare_page_opens_on_its_first_tab_without_deployment_work(filled_store):
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page(COMPARE).run()
    assert [t.label for t in at.tabs] == ["Teacher vs students", "Deployment"]
    assert "cmp_bar_acc" in chart_specs(at)
    assert not [b for b in at.button if b.key == "dep_measure"]  # the hidden tab does not run


def test_deployment_defaults_to_the_picked_student_and_serves_its_weights(filled_store, digits, media):
    at = open_deployment()
    run = at.selectbox(key="dep_run")
    assert run.value == filled_store["student"]
    listed = " ".join(run.options)  # the labels end in the run id
    assert filled_store["teacher"] in listed and filled_store["baseline"] in listed
    assert filled_store["failed"] not in listed  # no metrics, no weights
    assert at.button(key="dep_measure").label == "Measure across runtimes"
    assert any("Not measured yet" in i.value for i in at.info)
    assert at.radio(key="dep_files_of").value == "run"  # its teacher is in the store
    payload = downloaded(at, media, "dep_dl_weights")
    model, meta = load_checkpoint(payload)
    stored, _ = load_checkpoint(filled_store["store"].get_run(filled_store["student"]).weights)
    for (name, a), (_, b) in zip(model.state_dict().items(), stored.state_dict().items()):
        assert torch.equal(a, b), name
    assert meta["classes"] == digits.classes


@pytest.mark.slow
def test_measure_runs_as_a_job_then_shows_latency_and_int8(filled_store, media):
    at = open_deployment()
    for key, value in FAST.items():
        at.number_input(key=key).set_value(value)
    bf16 = rt.bf16_inference()[0]  # this CPU's own answer: eager bf16 is offered, and on, only with bf16 units
    assert at.checkbox(key="dep_bf16").value == bf16 and at.checkbox(key="dep_bf16").disabled == (not bf16)
    at.button(key="dep_measure").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    snap = wait_for_job()
    assert snap.kind == "deploy" and snap.status == "finished", snap.message
    at.run()
    assert not at.exception, [e.value for e in at.exception]

    runtimes = sorted(["ONNX Runtime", "TorchScript", "eager PyTorch", *(["eager PyTorch, bf16"] if bf16 else [])])
    figs = chart_specs(at)
    traces = figs["dep_latency_chart"]["data"]
    bars = [t for t in traces if t.get("showlegend") is False]  # the legend has swatches of its own
    assert sorted({t["name"] for t in bars}) == runtimes
    assert len(bars) == 2 * len(runtimes)  # each runtime × batch 1 and 256
    legend = [t["name"] for t in traces if t.get("showlegend") is not False]
    assert sorted(legend) == runtimes
    for t in bars:  # an int8 model has no bf16 form
        bf16_bar = t["name"].endswith("bf16")
        assert list(t["x"]) == ["teacher", "student"] + ([] if bf16_bar else ["student-int8"])
    assert all(t["error_y"]["type"] == "data" for t in bars)

    latency, quant = at.dataframe[0].value, at.dataframe[1].value
    assert len(latency) == 9 + 2 * bf16  # 3 models × 3 runtimes, and the two float models in bf16
    teacher_eager = latency[(latency["model"] == "teacher") & (latency["runtime"] == "eager PyTorch")]
    assert teacher_eager["b1_speedup"].item() == pytest.approx(1.0)
    assert teacher_eager["b256_speedup"].item() == pytest.approx(1.0)
    assert (latency["b256_median_ms"] > 0).all() and (latency["b256_p90_ms"] >= latency["b256_median_ms"]).all()
    assert len(quant) == 4 + bf16
    assert sorted(quant["precision"]) == sorted(["float32", "float32", "int8", "int8", *(["bfloat16"] if bf16 else [])])
    stored_acc = filled_store["store"].get_run(filled_store["student"]).metrics["test_acc"]
    floats = quant[quant["precision"] == "float32"]
    assert floats["test_acc"].tolist() == pytest.approx([stored_acc, stored_acc], abs=1e-6)
    assert (quant["agreement"] >= 0.9).all()

    labels = {m.label for m in at.metric}
    assert {"Test accuracy", "Size", "Latency, batch 1", "Latency, batch 256"} <= labels
    assert any("threads" in c.value and "machine:" in c.value for c in at.caption)

    # the model card now carries the measurement
    at.button(key="dep_build_card").click().run()
    archive = zipfile.ZipFile(io.BytesIO(downloaded(at, media, "dep_dl_card_zip")))
    student = filled_store["student"]
    assert sorted(archive.namelist()) == sorted(
        f"{student}/{n}" for n in ("MODEL_CARD.md", "model_card.json", "curves.html")
    )
    card = json.loads(archive.read(f"{student}/model_card.json"))
    assert card["latency"]["source"] == "measured for this card" and len(card["quantization"]["rows"]) == 4 + bf16
    assert "## int8 quantization" in archive.read(f"{student}/MODEL_CARD.md").decode()


@pytest.mark.slow
def test_onnx_download_gives_the_pytorch_models_predictions(filled_store, digits, media):
    at = open_deployment()
    at.button(key="dep_build_onnx").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    [check] = [s.value for s in at.success if s.value.startswith("Checked:")]
    assert "max |Δlogit|" in check and "top-1 agreement 1.0000" in check
    payload = downloaded(at, media, "dep_dl_onnx")
    session = ort.InferenceSession(payload, providers=["CPUExecutionProvider"])
    x = digits.test_x
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0].argmax(1)
    expected = reference_predictions(filled_store["store"], filled_store["student"], x)
    np.testing.assert_array_equal(got, expected)

    at.segmented_control(key="dep_precision").set_value("int8").run()  # int8 file: same button
    at.button(key="dep_build_onnx").click().run()
    assert not at.error, [e.value for e in at.error]
    int8 = ort.InferenceSession(downloaded(at, media, "dep_dl_onnx"), providers=["CPUExecutionProvider"])
    assert "int8" in next(b for b in at.get("download_button") if b.proto.id.endswith("dep_dl_onnx")).proto.label
    got8 = int8.run(None, {int8.get_inputs()[0].name: x.numpy()})[0].argmax(1)
    assert (got8 == expected).mean() >= ex.TOLERANCES["int8"].min_agreement


@pytest.mark.slow
def test_teacher_files_and_torchscript(filled_store, digits, media):
    at = open_deployment()
    at.radio(key="dep_files_of").set_value("teacher").run()
    teacher = filled_store["teacher"]
    model, _ = load_checkpoint(downloaded(at, media, "dep_dl_weights"))
    assert (
        model.state_dict().keys()
        == load_checkpoint(filled_store["store"].get_run(teacher).weights)[0].state_dict().keys()
    )
    at.button(key="dep_build_torchscript").click().run()
    assert not at.error, [e.value for e in at.error]
    payload = downloaded(at, media, "dep_dl_torchscript")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated (see kd_core.deploy.export)
        module = torch.jit.load(io.BytesIO(payload))
    with torch.no_grad():
        got = module(digits.test_x).argmax(1).numpy()
    np.testing.assert_array_equal(got, reference_predictions(filled_store["store"], teacher, digits.test_x))


@pytest.mark.slow
def test_an_export_outside_tolerance_is_refused_with_its_numbers(filled_store, monkeypatch):
    monkeypatch.setitem(ex.TOLERANCES, None, ex.Tolerance(-1.0, 0.99))  # nothing can pass
    at = open_deployment()
    at.button(key="dep_build_onnx").click().run()
    assert not at.exception
    [error] = [e.value for e in at.error]
    assert "export refused" in error and "max |Δlogit|" in error and "agreement" in error
    assert not [b for b in at.get("download_button") if b.proto.id.endswith("dep_dl_onnx")]


def test_measuring_beside_another_job_is_refused_clearly(filled_store):
    from ui import state

    manager = state.job_manager()
    release = threading.Event()

    def training(emit, stop, job):  # stands in for a training job: runs until released
        while not (release.is_set() or stop.is_set()):
            time.sleep(0.02)
        return []

    manager.start("teacher mlp 64 on digits", "teacher", training)
    try:
        at = open_deployment()
        at.button(key="dep_measure").click().run()
        [error] = [e.value for e in at.error]
        assert "Cannot measure now" in error and "teacher mlp 64 on digits" in error
    finally:
        release.set()
        wait_for_job()
    assert manager.latest().kind == "teacher"  # no measurement was started


def test_a_stopped_measurement_keeps_what_it_timed(filled_store, digits):
    from kd_core.jobs import JobManager
    from kd_core.views import deploy as dep

    manager = JobManager()  # its own worker: the pages' manager is left alone

    def fn(emit, stop, job):  # as start_measure's job, stopping after one step
        def publish(result):
            job.note(deploy=result)
            if result["steps_done"] == 1:
                stop.set()

        dep.measure(
            filled_store["store"],
            filled_store["student"],
            data=digits,
            threads=1,
            warmup=1,
            repeats=3,
            publish=publish,
            stop=stop,
        )
        return []

    job = manager.start("measure", dep.JOB_KIND, fn)
    deadline = time.monotonic() + 120
    while job.live and time.monotonic() < deadline:
        time.sleep(0.05)
    snap = job.snapshot()
    assert snap.status == "stopped"
    result = dep.measurement(snap)
    assert result["stopped"] and not result["complete"] and result["quantization"] is None
    assert [(r["model"], r["runtime"]) for r in result["rows"]] == [("teacher", "eager")] * 2
    assert dep.headline(result) is None and dep.quantization_table(result).empty
    assert len(dep.latency_table(result)) == 1
