"""Compress studies on digits: a tiny real study end to end, budget and pruner pruning, an
impossible goal, stop and resume, the job, and the command line.

Everything runs for real: Optuna's SQLite database and the run store in tmp_path, the engine on
digits for 2 epochs, latency timed under eager PyTorch (ONNX Runtime in the CLI test). Accuracies
are recomputed here from the stored checkpoints in float64 (int8: quantized here), independently
of kd_core.compress.
"""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState
from torch import nn

from helpers import assert_clean_failure, run_cli
from kd_core.compress.config import CompressConfig, Goal
from kd_core.compress.runner import start_compress
from kd_core.compress.search import run_study
from kd_core.compress.space import MethodAxis, SearchSpace, method_axes
from kd_core.compress.study import STORAGE_FILE, StudyBusy, create_study, read_study, storage_path
from kd_core.config import MethodSpec, TrainConfig
from kd_core.errors import ConfigError
from kd_core.jobs import JobManager
from kd_core.store import Store
from kd_core.train.checkpoint import load_checkpoint
from stores import SIZE_BUDGET_MB, tiny_config


def acc64(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy computed in float64 (a copy of the model in double precision)."""
    m = model.double().eval()
    with torch.no_grad():
        logits = m(x.double()).numpy()
    return float(np.mean(np.argmax(logits, axis=1) == y.numpy()))


def cpu_model_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return ""


@pytest.fixture(scope="module")
def finished(tmp_path_factory, digits, cteacher):
    """A 5-trial random study with a size budget: some candidates pruned before training."""
    store = Store(tmp_path_factory.mktemp("study"))
    study_id = create_study(store, tiny_config(cteacher))
    report = run_study(store, study_id, digits)
    return store, study_id, report


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "bad",
    [
        dict(space=SearchSpace(families=("transformer",))),
        dict(space=SearchSpace(mlp_widths=(64, 8))),
        dict(space=SearchSpace(alphas=(0.5, 1.5))),
        dict(runtime="tflite"),
        dict(goal=Goal(max_drop=None)),
        dict(goal=Goal(max_latency_ms=-1.0)),
        dict(trials=0),
        dict(teacher_id=""),
        dict(space=SearchSpace(methods=(MethodAxis("nope"),))),
        dict(space=SearchSpace(methods=(MethodAxis("dkd", "no_such_param", 1.0, 2.0),))),
        dict(space=SearchSpace(methods=(MethodAxis("dkd", "beta", 0.0, 8.0, log=True),))),
    ],
)
def test_a_bad_study_is_refused_before_anything_is_stored(tmp_path, bad):
    store = Store(tmp_path)
    with pytest.raises(ConfigError):
        create_study(store, tiny_config("t", **bad))
    assert store.list_studies() == []
    assert not storage_path(store).exists() or optuna.get_all_study_names(f"sqlite:///{storage_path(store)}") == []


@pytest.mark.slow
def test_a_config_round_trips_through_the_study_row(tmp_path):
    store = Store(tmp_path)
    cfg = tiny_config("t", mode="pareto", goal=Goal(None, 0.5, 10.0, 1.0), space=SearchSpace(families=("mlp", "cnn")))
    study_id = create_study(store, cfg)
    assert CompressConfig.from_dict(store.get_study(study_id)["config"]) == cfg
    assert (tmp_path / STORAGE_FILE).is_file()
    assert read_study(store, study_id).directions == [
        optuna.study.StudyDirection.MAXIMIZE,
        optuna.study.StudyDirection.MINIMIZE,
        optuna.study.StudyDirection.MINIMIZE,
    ]


def test_the_latency_budget_is_the_tighter_of_ms_and_speed_up():
    assert Goal(max_latency_ms=0.5, min_speedup=10).latency_budget(2.0) == pytest.approx(0.2)
    assert Goal(max_latency_ms=0.1, min_speedup=10).latency_budget(2.0) == pytest.approx(0.1)
    assert Goal(max_drop=1.0).latency_budget(2.0) is None


def test_the_method_axis_searches_each_methods_main_weight_around_its_paper_default():
    axes = {a.name: a for a in method_axes(["kd", "dkd", "dist", "rkd"])}
    assert axes["kd"] == MethodAxis("kd")  # no weight of its own: T and λ are axes already
    assert (axes["dkd"].param, axes["dkd"].low, axes["dkd"].high, axes["dkd"].log) == ("beta", 2.0, 32.0, True)
    assert (axes["dist"].param, axes["dist"].low, axes["dist"].high) == ("beta", 0.25, 4.0)
    assert (axes["rkd"].param, axes["rkd"].low, axes["rkd"].high) == ("distance", 6.25, 100.0)
    with pytest.raises(ConfigError, match="unknown distillation method"):
        method_axes(["kd", "hinton2"])


@pytest.mark.slow
def test_a_method_trial_trains_with_that_method_and_its_searched_weight(tmp_path, digits, cteacher):
    store = Store(tmp_path)
    space = SearchSpace(
        mlp_widths=(16, 32), mlp_depths=(1, 1), precisions=("float32",), methods=method_axes(["kd", "dkd"])
    )
    study_id = create_study(store, tiny_config(cteacher, space=space, goal=Goal(max_drop=50.0), trials=2))
    study = read_study(store, study_id)
    base = dict(family="mlp", mlp_width=24, mlp_depth=1, temperature=4.0, alpha=0.5, precision="float32")
    study.enqueue_trial({**base, "method": "dkd", "dkd.beta": 5.5})
    study.enqueue_trial({**base, "method": "kd"})
    report = run_study(store, study_id, digits)
    dkd, kd = report.rows
    assert dkd["state"] == kd["state"] == "complete"
    assert dkd["method"] == "dkd" and "dkd" in dkd["label"]
    methods = store.get_run(dkd["run_id"]).config.distill.methods
    assert methods == (MethodSpec("dkd", 1.0, (("beta", 5.5),)),)
    assert store.get_run(kd["run_id"]).config.distill.methods == (MethodSpec("kd", 1.0, ()),)
    terms = store.epochs(dkd["run_id"])[-1]["terms"]
    assert {"tckd", "nckd"} <= set(terms)  # the engine trained with DKD's two terms


# ---------------------------------------------------------------- a tiny study


def test_a_tiny_study_finds_a_feasible_student_and_stores_its_trials_as_runs(finished, digits, cteacher):
    store, study_id, report = finished
    rows = {r["number"]: r for r in report.rows}
    assert len(rows) == 5 and all(r["state"] in ("complete", "pruned") for r in rows.values())
    trained = [r for r in rows.values() if r["run_id"]]
    runs = {r.id: r for r in store.list_runs()}
    assert sorted(runs) == sorted(r["run_id"] for r in trained)  # every trained trial, nothing else
    teacher, _ = load_checkpoint(cteacher)
    teacher_val = acc64(teacher, digits.val_x, digits.val_y)
    assert report.reference["val_acc"] == pytest.approx(teacher_val, abs=1 / len(digits.val_y))
    for r in trained:
        run = runs[r["run_id"]]
        assert run.status == "finished" and run.kind == "student" and run.weights
        assert run.config.study_id == study_id and run.config.teacher_id == cteacher
        assert run.config.model.size == r["width"]
        assert run.config.distill.temperature == pytest.approx(r["temperature"])
        model, _ = load_checkpoint(run.weights)
        if r["precision"] == "int8":
            q = torch.ao.quantization.quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8)
            with torch.no_grad():
                expected = float(np.mean(np.argmax(q(digits.val_x).numpy(), 1) == digits.val_y.numpy()))
            assert r["val_acc"] == pytest.approx(expected, abs=1e-6)  # kd_core counts in float32
        else:
            assert r["val_acc"] == pytest.approx(acc64(model, digits.val_x, digits.val_y), abs=1 / len(digits.val_y))
        assert r["drop_points"] == pytest.approx((report.reference["val_acc"] - r["val_acc"]) * 100)
        assert r["speedup"] == pytest.approx(report.reference["latency_ms"] / r["latency_ms"])
    pick = report.chosen
    assert pick is not None and pick["feasible"]
    assert pick["drop_points"] <= 15.0 and pick["size_mb"] <= SIZE_BUDGET_MB
    best = max((r for r in trained if r["feasible"]), key=lambda r: r["val_acc"])
    assert pick["val_acc"] == best["val_acc"]
    assert report.verdict.startswith(f"Chosen: trial {pick['number']}")


def test_every_trial_has_its_latency_and_the_machine_it_was_measured_on(finished):
    store, study_id, report = finished
    for t in read_study(store, study_id).get_trials():
        a = t.user_attrs
        assert a["latency_ms"] > 0 and a["p90_ms"] >= a["latency_ms"] and a["size_mb"] > 0
        assert a["machine"]["cpu"].startswith(cpu_model_name()) and a["machine"]["threads"] == 1
        assert a["machine"]["torch"] == torch.__version__.split("+")[0]
    assert report.reference["machine"]["cpu"].startswith(cpu_model_name())


def test_candidates_over_the_size_budget_are_pruned_before_training(finished):
    report = finished[2]
    pruned = [r for r in report.rows if r["pruned_by"] == "budget"]
    assert pruned, "seed 4 draws float widths 234 and 138, above the budget"
    for r in pruned:
        assert r["state"] == "pruned" and r["run_id"] is None and r["size_mb"] > SIZE_BUDGET_MB
        assert "not trained" in r["why"] and f"> budget {SIZE_BUDGET_MB:g} MB" in r["why"]
    for r in report.rows:
        if r["state"] == "complete":
            assert r["size_mb"] <= SIZE_BUDGET_MB


@pytest.mark.slow
def test_the_pruner_stops_a_hopeless_trial_and_it_is_marked(tmp_path, digits, cteacher):
    """Five good candidates, then a 1-unit-wide MLP: the median pruner stops it after epoch 1."""
    store = Store(tmp_path)
    cfg = tiny_config(
        cteacher,
        train=TrainConfig(epochs=3, lr=1e-2, threads=1, device="cpu"),
        goal=Goal(max_drop=50.0),
        space=SearchSpace(mlp_widths=(1, 64), mlp_depths=(1, 1), precisions=("float32",)),
        sampler="tpe",
        pruner="median",
        trials=6,
    )
    study_id = create_study(store, cfg)
    study = read_study(store, study_id)
    good = dict(family="mlp", mlp_width=48, mlp_depth=1, alpha=0.5, precision="float32")
    for t in (1.0, 2.0, 3.0, 4.0, 6.0):
        study.enqueue_trial({**good, "temperature": t})
    study.enqueue_trial({**good, "mlp_width": 1, "temperature": 2.0})
    report = run_study(store, study_id, digits)
    last = report.rows[-1]
    assert last["state"] == "pruned" and last["pruned_by"] == "pruner" and last["width"] == 1
    assert last["epochs"] == 1 and "after epoch 1" in last["why"]
    run = store.get_run(last["run_id"])
    assert run.status == "stopped" and len(store.epochs(last["run_id"])) == 1
    others = [r["last_reported_acc"] for r in report.rows[:-1]]
    assert last["last_reported_acc"] < np.median(others)
    assert all(r["state"] == "complete" for r in report.rows[:-1])


def test_an_impossible_goal_ends_with_a_clear_message_and_trains_nothing(tmp_path, digits, cteacher):
    store = Store(tmp_path)
    study_id = create_study(store, tiny_config(cteacher, goal=Goal(max_drop=1.0, max_latency_ms=1e-6)))
    report = run_study(store, study_id, digits)
    assert report.chosen is None and report.rows == [] and store.list_runs() == []
    assert report.verdict.startswith("No candidate can meet the latency budget of 1e-06 ms")
    assert "the fastest in the search space, mlp 16" in report.verdict
    again = run_study(store, study_id, digits)  # the verdict is kept with the study
    assert again.verdict == report.verdict


@pytest.mark.slow
def test_a_goal_no_trained_trial_meets_says_how_close_it_came(tmp_path, digits, cteacher):
    store = Store(tmp_path)
    study_id = create_study(store, tiny_config(cteacher, goal=Goal(max_drop=0.0), trials=2, teacher_id=cteacher))
    report = run_study(store, study_id, digits)
    assert report.chosen is None
    assert report.verdict.startswith("No student met the goal (accuracy drop ≤ 0 points) in 2 trials")
    assert "points below the teacher" in report.verdict


# ---------------------------------------------------------------- stop and resume


@pytest.mark.slow
def test_resume_continues_a_stopped_study_without_repeating_trials(tmp_path, digits, cteacher):
    store = Store(tmp_path)
    study_id = create_study(store, tiny_config(cteacher, goal=Goal(max_drop=50.0), trials=4))
    stop, epochs = threading.Event(), []

    def emit(rec):  # stop in the middle of the second trained trial
        if rec.event == "epoch":
            epochs.append(rec.run_id)
            if len(set(epochs)) == 2:
                stop.set()

    first = run_study(store, study_id, digits, emit=emit, stop=stop)
    assert first.stopped
    states = [r["state"] for r in first.rows]
    assert states.count("interrupted") == 1 and states.count("waiting") == 1
    interrupted = next(r for r in first.rows if r["state"] == "interrupted")
    assert store.get_run(interrupted["run_id"]).status == "stopped"
    done_before = {r["number"]: r for r in first.rows if r["state"] in ("complete", "pruned")}

    second = run_study(store, study_id, digits)
    rows = {r["number"]: r for r in second.rows}
    for n, r in done_before.items():  # finished trials are kept as they were, not run again
        assert (rows[n]["state"], rows[n]["run_id"]) == (r["state"], r["run_id"])
        assert rows[n]["val_acc"] == r["val_acc"] or (np.isnan(r["val_acc"]) and np.isnan(rows[n]["val_acc"]))
    retry = next(r for r in second.rows if r["retry_of"] == interrupted["number"])
    assert retry["state"] == "complete" and retry["width"] == interrupted["width"]
    assert retry["temperature"] == interrupted["temperature"] and retry["run_id"] != interrupted["run_id"]
    counted = [r for r in second.rows if r["state"] in ("complete", "pruned", "failed")]
    assert len(counted) == 4
    params = [(r["width"], r["temperature"], r["alpha"]) for r in counted]
    assert len(set(params)) == len(params)  # the resumed sampler does not replay the first start's draws
    trained = [r["run_id"] for r in second.rows if r["run_id"]]
    assert sorted(trained) == sorted(r.id for r in store.list_runs())


@pytest.mark.slow
def test_a_trial_left_running_by_a_dead_process_is_run_again(tmp_path, digits, cteacher):
    store = Store(tmp_path)
    study_id = create_study(store, tiny_config(cteacher, goal=Goal(max_drop=50.0), trials=1))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    study = read_study(store, study_id)
    orphan = study.ask({"family": optuna.distributions.CategoricalDistribution(["mlp"])})
    orphan.set_user_attr("pid", dead.pid)
    report = run_study(store, study_id, digits)
    rows = {r["number"]: r for r in report.rows}
    assert rows[orphan.number]["state"] == "interrupted"
    assert read_study(store, study_id).get_trials(states=(TrialState.RUNNING,)) == []


def test_a_study_running_in_another_live_process_is_refused(tmp_path, digits, cteacher):
    store = Store(tmp_path)
    study_id = create_study(store, tiny_config(cteacher, trials=1))
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        trial = read_study(store, study_id).ask()
        trial.set_user_attr("pid", alive.pid)
        with pytest.raises(StudyBusy, match=f"running in process {alive.pid}"):
            run_study(store, study_id, digits)
    finally:
        alive.kill()
        alive.wait()


# ---------------------------------------------------------------- the job and the CLI


@pytest.mark.slow
def test_a_compress_job_publishes_its_phase_and_verdict(tmp_path, digits, cteacher):
    store, manager = Store(tmp_path), JobManager()
    job = start_compress(manager, store, digits, tiny_config(cteacher, trials=2, goal=Goal(max_drop=50.0)))
    deadline = time.monotonic() + 120
    while job.live and time.monotonic() < deadline:
        time.sleep(0.1)
    snap = job.snapshot()
    assert snap.status == "finished", snap.message
    note = snap.notes["compress"]
    assert note["phase"] == "done" and note["verdict"].startswith("Chosen: trial") and note["done"] == 2
    labels = [r.label for r in snap.runs]
    assert labels and all(label.startswith("trial ") for label in labels)


@pytest.mark.slow  # three ONNX exports per trial under a loaded 2-core box: a minute or two
def test_cli_compress_under_onnx_runtime_json_and_resume(tmp_path, cteacher):
    args = [
        "compress", "--teacher", cteacher, "--store", tmp_path / "runs", "--runtime", "onnxruntime",
        "--batch", "1", "--max-drop", "50", "--max-latency-ms", "10", "--trials", "2", "--epochs", "1",
        "--widths", "16,32", "--depths", "1,1", "--precisions", "float32", "--sampler", "random", "--json", "--quiet",
    ]  # fmt: skip
    proc = run_cli(tmp_path, *args, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["chosen"] is not None and out["verdict"].startswith("Chosen")
    assert out["config"]["runtime"] == "onnxruntime" and len(out["trials"]) == 2
    assert out["machine"].startswith(f"machine: {cpu_model_name()}")
    assert out["reference"]["latency_ms"] > 0
    study_id = out["study_id"]
    assert f"--resume {study_id}" in proc.stderr
    more = run_cli(
        tmp_path,
        "compress",
        "--resume",
        study_id,
        "--store",
        tmp_path / "runs",
        "--trials",
        "3",
        "--json",
        "--quiet",
        timeout=300,
    )
    assert more.returncode == 0, more.stderr
    again = json.loads(more.stdout)
    assert [t["number"] for t in again["trials"]] == [0, 1, 2]
    assert [t["run_id"] for t in again["trials"][:2]] == [t["run_id"] for t in out["trials"]]
    listed = run_cli(tmp_path, "compress", "--list", "--store", tmp_path / "runs")
    assert f"{study_id}  3 trials done" in listed.stdout


@pytest.mark.slow
def test_cli_an_impossible_goal_is_one_error_line_and_exit_1(tmp_path, cteacher):
    proc = run_cli(
        tmp_path, "compress", "--teacher", cteacher, "--store", tmp_path / "runs", "--runtime", "eager",
        "--max-latency-ms", "0.000001", "--trials", "3", "--quiet",
    )  # fmt: skip
    assert proc.returncode == 1
    assert_clean_failure(proc, "error: No candidate can meet the latency budget", "Loosen the goal")


@pytest.mark.slow
def test_cli_bad_flags_are_refused_before_a_study_is_stored(tmp_path, cteacher):
    proc = run_cli(tmp_path, "compress", "--teacher", cteacher, "--store", tmp_path / "runs", "--widths", "64,8")
    assert_clean_failure(proc, "error:", "mlp_widths")
    assert Store(tmp_path / "runs").list_studies() == []
    proc = run_cli(tmp_path, "compress", "--store", tmp_path / "runs")
    assert_clean_failure(proc, "error: a new study needs --teacher")
    proc = run_cli(tmp_path, "compress", "--resume", "cs-nope", "--store", tmp_path / "runs")
    assert_clean_failure(proc, "no compress study 'cs-nope'")
    assert os.listdir(tmp_path / "runs")  # the store itself is there, and still opens
