"""Model cards from a store filled by hand: every expected value is computed here from
the records written, and the reproduce command is parsed back by the CLI's own parser."""

from __future__ import annotations

import io
import json
import shlex
import sqlite3
import statistics
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from kd_core import cli
from kd_core.cli import common
from kd_core.cli import methods as cli_methods
from kd_core.config import DataConfig, DistillConfig, LabelConfig, ModelSpec, RunConfig, TrainConfig
from kd_core.deploy import modelcard as mc
from kd_core.events import Progress
from kd_core.methods import parse_methods
from kd_core.store import Store
from kd_core.train import recorder
from kd_core.train.models import student_preset, teacher_preset

ROOT = Path(__file__).resolve().parents[1]
TEACHER = RunConfig(
    kind="teacher",
    data=DataConfig(dataset="fashion-mnist", val_fraction=0.15, split_seed=3, download=False),
    model=ModelSpec("mlp", 300, 2),
    train=TrainConfig(
        epochs=7,
        batch_size=96,
        lr=2.5e-4,
        optimizer="sgd",
        momentum=0.8,
        weight_decay=1e-5,
        cosine=True,
        seed=11,
        augment=True,
        threads=3,
        patience=2,
    ),
)


def student_config(seed: int, teacher_id: str) -> RunConfig:
    return replace(
        TEACHER,
        kind="student",
        model=ModelSpec("mlp", 40, 1),
        teacher_id=teacher_id,
        distill=DistillConfig(temperature=6.5, alpha=0.7, cache_teacher_logits=False),
        train=replace(TEACHER.train, seed=seed),
    )


def add_run(store: Store, cfg: RunConfig, test_acc: float, epochs: int = 3) -> str:
    run_id = store.create_run(cfg)
    for e in range(1, epochs + 1):
        store.add_epoch(
            Progress(
                "epoch",
                e,
                10 * e,
                10 * epochs,
                loss=1.0 / e,
                terms={"ce": 0.8 / e, "kd": 0.2 / e},
                train_acc=0.5 + e / 20,
                val_acc=0.45 + e / 25,
                elapsed_s=float(e),
                run_id=run_id,
            )
        )
    latency = {
        "threads": 2,
        "device": "cpu",
        "batches": {
            "1": {
                "batch_size": 1,
                "runs": 50,
                "median_ms": 0.2,
                "p90_ms": 0.3,
                "ms_per_sample": 0.2,
                "samples_per_s": 5000.0,
            }
        },
    }
    store.finish_run(
        run_id,
        "finished",
        {
            "test_acc": test_acc,
            "params": 1000,
            "bytes": 4000,
            "flops": 2000,
            "best_val_acc": test_acc - 0.01,
            "latency": latency,
        },
    )
    return run_id


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "runs")
    teacher = add_run(s, TEACHER, 0.88)
    students = [add_run(s, student_config(seed, teacher), acc) for seed, acc in ((0, 0.81), (1, 0.83), (2, 0.86))]
    add_run(s, replace(student_config(0, teacher), model=ModelSpec("mlp", 41, 1)), 0.5)  # another config
    return s, teacher, students


def rebuilt_config(command: str) -> RunConfig:
    """What the CLI would train from `command`, through the CLI's own parser and builders."""
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "kd_core"]
    a = cli.build_parser().parse_args(argv[3:])
    kind = "teacher" if a.command == "teacher" else "student"
    preset = (teacher_preset if kind == "teacher" else student_preset)(a.dataset)
    cfg = RunConfig(
        kind=kind,
        data=common.data_config(a),
        model=common.model_spec(a, preset),
        train=common.train_config(a),
        labels=common.label_config(a),
    )
    if kind == "student":
        cfg = replace(cfg, teacher_id=a.teacher, distill=cli_methods.distill_config(a))
    return cfg


def test_reproduce_command_carries_a_method_mix_and_its_parameters(store):
    _s, teacher, _ = store
    mix = parse_methods("0.5*dkd+2*at", ["dkd.beta=4", "at.p=1"])
    cfg = replace(student_config(3, teacher), distill=DistillConfig(3.0, 0.5, True, mix))
    command = mc.reproduce_command(RunConfig.from_json(cfg.to_json()).to_dict())
    assert (
        "--method '0.5*dkd+2*at'" in command
    )  # quoted: * is a shell wildcard and "--method-param dkd.beta=4.0" in command
    assert rebuilt_config(command) == cfg


def test_a_students_card_says_how_it_was_distilled_and_the_terms_it_ended_on(store):
    s, teacher, _ = store
    mix = parse_methods("kd+0.5*at", ["at.beta=500"])
    run_id = add_run(s, replace(student_config(4, teacher), distill=DistillConfig(2.0, 0.6, True, mix)), 0.8)
    with sqlite3.connect(s.db_path) as db:  # the recorder stores the last epoch's terms with the metrics
        metrics = json.loads(db.execute("SELECT metrics FROM runs WHERE id = ?", (run_id,)).fetchone()[0])
        metrics["loss_terms"] = {"ce": 0.3, "kd": 0.2, "at": 0.05}
        db.execute("UPDATE runs SET metrics = ? WHERE id = ?", (json.dumps(metrics), run_id))
    card = mc.model_card(s, run_id)
    assert card["distillation"] == {
        "methods": "1*kd+0.5*at",
        "method_params": ["at.beta=500.0"],
        "temperature": 2.0,
        "lambda": 0.6,
        "loss": "(1 − λ)·CE + λ·Σ_m w_m·Σ terms_m",
        "final_terms": {"ce": 0.3, "kd": 0.2, "at": 0.05},
    }
    text = mc.card_markdown(card)
    assert "- distillation: `1*kd+0.5*at` (at.beta=500.0), T = 2, λ = 0.6" in text
    assert "last epoch's terms: ce 0.3, kd 0.2, at 0.05" in text
    assert "| distill.methods | 1*kd+0.5*at at.beta=500.0 |" in text
    assert mc.model_card(s, teacher)["distillation"] is None


def test_reproduce_command_rebuilds_the_stored_config(store):
    s, teacher, students = store
    for run_id in (teacher, students[1]):
        record = s.get_run(run_id)
        assert rebuilt_config(mc.reproduce_command(record.config.to_dict())) == record.config


def test_reproduce_command_for_a_baseline_asks_distill_for_it():
    cfg = replace(student_config(4, "t-1"), kind="baseline", distill=None)
    argv = shlex.split(mc.reproduce_command(cfg.to_dict(), "/data/my runs"))
    a = cli.build_parser().parse_args(argv[3:])
    assert a.command == "distill" and a.baseline and a.teacher == "t-1" and a.store == "/data/my runs"
    assert common.train_config(a) == cfg.train and common.data_config(a) == cfg.data


def test_card_holds_config_metrics_seeds_and_teacher(store):
    s, teacher, students = store
    card = mc.model_card(s, students[0])
    json.dumps(card)  # JSON-able as is
    assert card["hyperparameters"] == s.get_run(students[0]).config.to_dict()
    assert card["teacher"]["run_id"] == teacher and card["teacher"]["test_acc"] == 0.88
    accs = [0.81, 0.83, 0.86]
    assert [r["seed"] for r in card["seeds"]["runs"]] == [0, 1, 2]
    assert card["seeds"]["mean"] == pytest.approx(statistics.fmean(accs))
    assert card["seeds"]["std"] == pytest.approx(statistics.stdev(accs))
    assert card["metrics"]["test_acc"] == 0.81 and card["metrics"]["seed"] == 0
    assert card["dataset"]["split_seed"] == 3 and "official test split" in card["dataset"]["test"]
    assert [e["epoch"] for e in card["curves"]] == [1, 2, 3]


def test_card_latency_comes_from_a_measurement_with_its_machine(store):
    s, _, students = store
    bench = {
        "machine": {"cpu": "Test CPU 9000", "cores": 64, "threads": 4, "torch": "9.9", "onnxruntime": "8.8"},
        "threads": 4,
        "rows": [
            {
                "model": "teacher",
                "runtime": "eager",
                "batch_size": 256,
                "median_ms": 8.0,
                "p90_ms": 9.0,
                "samples_per_s": 32000.0,
                "speedup_vs_teacher_eager": 1.0,
            },
            {
                "model": "student",
                "runtime": "onnxruntime",
                "batch_size": 256,
                "median_ms": 0.5,
                "p90_ms": 0.6,
                "samples_per_s": 512000.0,
                "speedup_vs_teacher_eager": 16.0,
            },
        ],
    }
    card = mc.model_card(s, students[0], latency=bench)
    text = mc.card_markdown(card)
    assert "Test CPU 9000, 64 cores, 4 threads" in text and "torch 9.9" in text and "onnxruntime 8.8" in text
    assert "| student | onnxruntime | 256 | 0.500 | 0.600 | 512,000 | 16.00× |" in text
    assert card["reproduce"] in text and "--temperature 6.5" in text and "--no-cache" in text


def test_card_without_a_measurement_uses_the_stored_latency(store):
    s, _, students = store
    lat = mc.model_card(s, students[0])["latency"]
    assert lat["threads"] == 2 and lat["rows"][0]["median_ms"] == 0.2 and "end of training" in lat["source"]


@pytest.mark.slow
def test_card_files_and_zip(store):
    s, _, students = store
    files = mc.card_files(s, students[0])
    assert set(files) == {"MODEL_CARD.md", "model_card.json", "curves.html"}
    html = files["curves.html"].decode()
    assert "plotly" in html.lower() and "val_acc" in html and "0.53" in html  # epoch 2's val_acc
    assert json.loads(files["model_card.json"])["run_id"] == students[0]
    with zipfile.ZipFile(io.BytesIO(mc.card_zip(s, students[0]))) as z:
        assert sorted(z.namelist()) == sorted(f"{students[0]}/{n}" for n in files)


def test_unknown_run_and_missing_curves_are_clear_errors(store):
    s, _, _ = store
    with pytest.raises(mc.CardError, match="no stored run"):
        mc.model_card(s, "nope")
    bare = s.create_run(TEACHER)
    s.finish_run(bare, "stopped", {})
    with pytest.raises(mc.CardError, match="no per-epoch"):
        mc.curves_html(s, bare)
    assert "curves.html" not in mc.card_files(s, bare)


def test_a_students_card_names_its_baseline_and_the_gain_with_its_noise(tmp_path):
    s = Store(tmp_path / "runs")
    teacher = add_run(s, TEACHER, 0.88)
    pairs = {0: (0.81, 0.80), 1: (0.83, 0.815), 2: (0.86, 0.84)}
    ids = {}
    for seed, (student_acc, base_acc) in pairs.items():
        ids[seed] = add_run(s, student_config(seed, teacher), student_acc)
        base_cfg = replace(student_config(seed, teacher), kind="baseline", distill=None)
        add_run(s, base_cfg, base_acc)
    for run in s.list_runs():  # a 200-image test set, as the confusion matrix counts it
        s.finish_run(run.id, "finished", {**run.metrics, "confusion_matrix": [[100, 0], [0, 100]]})
    card = mc.model_card(s, ids[1])
    gains = np.array([a - b for a, b in pairs.values()], dtype=np.float64)
    b = card["baseline"]
    assert b["test_acc"] == 0.815 and b["kind"] == "baseline"  # the seed-1 baseline, beside this seed
    assert b["seeds"] == 3 and b["gain"] == pytest.approx(gains.mean(), abs=1e-12)
    assert b["gain_images"] == round(gains.mean() * 200) and b["test_images"] == 200
    half = scipy.stats.t.ppf(0.975, 2) * gains.std(ddof=1) / np.sqrt(3)
    assert b["noise_95"] == pytest.approx(half, rel=1e-9)
    md = mc.card_markdown(card)
    assert f"- no-KD baseline: mlp 40 (run `{b['run_id']}`)" in md and "· 3 seeds ·" in md
    teacher_card = mc.card_markdown(mc.model_card(s, teacher))
    assert "no-KD baseline" not in teacher_card


def test_a_budgeted_students_card_says_what_it_was_trained_on_and_folds_its_seeds(tmp_path, digits):
    """Real runs on digits, 5 labels per class, each seed its own labelled subset: the card states
    the labelled and transfer images the engine reported, the seeds fold although their label
    seeds differ, and the reproduce command rebuilds the config, budget included."""
    s = Store(tmp_path / "runs")
    train = TrainConfig(epochs=1, lr=3e-3, device="cpu", threads=1)
    teacher = recorder.train_teacher(s, RunConfig(model=ModelSpec("mlp", 32, 1), train=train), digits)
    ids = []
    for seed in (0, 1):
        cfg = RunConfig(
            kind="student",
            model=ModelSpec("mlp", 8, 1),
            train=replace(train, seed=seed),
            labels=LabelConfig(per_class=5, label_seed=seed),
            teacher_id=teacher.run_id,
            distill=DistillConfig(4.0, 0.5),
        )
        [student] = recorder.distill(s, cfg, digits, teacher.model, with_baseline=False)
        assert student.status == "finished"
        ids.append(student.run_id)
    n_train = len(digits.train_y)
    card = mc.model_card(s, ids[1])
    assert card["labels"] == {
        "budget": "5 labels per class",
        "label_seed": 1,
        "transfer": "rest",
        "labelled": 50,
        "transfer_used": n_train - 50,
    }
    text = mc.card_markdown(card)
    assert (
        f"- labels: 5 labels per class (label seed 1): 50 labelled training images and {n_train - 50:,} "
        "transfer images whose labels the model never saw"
    ) in text
    assert [r["run_id"] for r in card["seeds"]["runs"]] == ids
    record = s.get_run(ids[1])
    assert rebuilt_config(card["reproduce"]) == replace(record.config, sweep_id=None)
    assert mc.model_card(s, teacher.run_id)["labels"]["budget"] == "all labels"
