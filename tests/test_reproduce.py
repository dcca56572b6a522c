"""The reproduce command of every kind of run (teacher, student, baseline, and a sweep's
student and baseline) is a command that runs: no placeholder, a teacher that is in the
store, parsed by the CLI's own parser, and the sweep baseline's run for real.

A real store on digits: one teacher, a distillation with its baseline, and a 1 × 1 sweep
(one student, one baseline), every run one epoch of a tiny MLP.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import replace

import pytest

from helpers import cli_env
from kd_core import cli
from kd_core.cli import common
from kd_core.config import DataConfig, DistillConfig, LabelConfig, ModelSpec, RunConfig, TrainConfig
from kd_core.deploy import modelcard as mc
from kd_core.store import Store
from kd_core.sweep.grid import SweepConfig, create_sweep
from kd_core.sweep.runner import run_sweep
from kd_core.train import recorder as experiment
from kd_core.views import runs_table

TRAIN = TrainConfig(epochs=1, lr=3e-3, device="cpu", threads=1)


@pytest.fixture(scope="module")
def store(tmp_path_factory, digits) -> dict:
    store = Store(tmp_path_factory.mktemp("reproduce") / "runs")
    teacher = experiment.train_teacher(store, RunConfig(model=ModelSpec("mlp", 32, 1), train=TRAIN), digits)
    student_cfg = RunConfig(
        kind="student",
        model=ModelSpec("mlp", 8, 1),
        train=TRAIN,
        teacher_id=teacher.run_id,
        distill=DistillConfig(2.0, 0.5),
    )
    student, baseline = experiment.distill(store, student_cfg, digits, teacher.model, with_baseline=True)
    sweep_id = create_sweep(
        store,
        SweepConfig(temperatures=(4.0,), alphas=(0.9,), sizes=(8,), seeds=(3,), teacher_id=teacher.run_id, train=TRAIN),
    )
    outcomes = run_sweep(store, sweep_id, digits)
    assert all(o.status == "finished" for o in (teacher, student, baseline, *outcomes))
    by_kind = {o.kind: o.run_id for o in outcomes}
    return {
        "store": store,
        "teacher": teacher.run_id,
        "student": student.run_id,
        "baseline": baseline.run_id,
        "sweep_student": by_kind["student"],
        "sweep_baseline": by_kind["baseline"],
        "sweep_id": sweep_id,
    }


def parsed(command: str):
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "kd_core"]
    return cli.build_parser().parse_args(argv[3:])


ROLES = ("teacher", "student", "baseline", "sweep_student", "sweep_baseline")


@pytest.mark.parametrize("role", ROLES)
def test_every_kind_of_run_has_a_command_that_names_a_stored_teacher(store, role):
    s = store["store"]
    record = s.get_run(store[role])
    card = mc.model_card(s, record.id)
    command = card["reproduce"]
    assert command == runs_table.command_for(record, s)  # the card and the Runs page agree
    assert "TEACHER" not in command
    assert command in mc.card_markdown(card)
    a = parsed(command)
    assert a.store == str(s.root)
    assert ModelSpec(a.family, a.size, a.depth) == record.config.model
    assert common.train_config(a) == record.config.train
    assert common.data_config(a) == record.config.data
    if record.kind == "teacher":
        assert a.command == "teacher"
        return
    assert a.command == "distill" and a.baseline == (record.kind == "baseline")
    assert a.teacher == store["teacher"] and s.get_run(a.teacher).kind == "teacher"
    if record.kind == "student":
        d = record.config.distill
        assert (a.temperature, a.alpha, a.no_cache) == (d.temperature, d.alpha, not d.cache_teacher_logits)


def _without(config: dict, *keys: str) -> dict:
    return {k: v for k, v in config.items() if k not in keys}


@pytest.mark.slow
def test_the_sweep_baselines_command_runs_and_makes_the_same_baseline(store, tmp_path):
    """The run kind whose card printed `--teacher TEACHER`: its command, run as printed (from
    another directory), trains a student and then the same baseline, into the same store."""
    s = store["store"]
    original = s.get_run(store["sweep_baseline"])
    before = {r.id for r in s.list_runs()}
    argv = shlex.split(mc.model_card(s, original.id)["reproduce"])
    proc = subprocess.run(
        [sys.executable, *argv[1:], "--quiet"], cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    new = [r for r in s.list_runs() if r.id not in before]
    assert sorted(r.kind for r in new) == ["baseline", "student"]
    [again] = [r for r in new if r.kind == "baseline"]
    assert again.status == "finished" and again.teacher_id == store["teacher"]
    assert _without(again.config.to_dict(), "sweep_id", "teacher_id") == _without(
        original.config.to_dict(), "sweep_id", "teacher_id"
    )
    assert [e["val_acc"] for e in s.epochs(again.id)] == pytest.approx([e["val_acc"] for e in s.epochs(original.id)])


def test_without_a_known_teacher_no_placeholder_is_printed(tmp_path):
    """A baseline whose teacher is nowhere (its sweep is not in this store) is trained again by
    `teacher`: labels only, the same model and budget. A student without a teacher, and an
    uploaded checkpoint, have no command, and the card says so."""
    s = Store(tmp_path / "runs")
    base = RunConfig(kind="baseline", model=ModelSpec("mlp", 8, 1), train=TRAIN, sweep_id="sw-elsewhere")
    baseline = s.create_run(base)
    s.finish_run(baseline, "finished", {"test_acc": 0.5})
    a = parsed(runs_table.command_for(s.get_run(baseline), s))
    assert a.command == "teacher" and a.store == str(s.root)
    assert (a.family, a.size, a.depth) == ("mlp", 8, 1) and common.train_config(a) == TRAIN
    assert mc.model_card(s, baseline)["reproduce"] == runs_table.command_for(s.get_run(baseline), s)

    student = s.create_run(replace(base, kind="student", distill=DistillConfig(), sweep_id=None))
    s.finish_run(student, "finished", {"test_acc": 0.5})
    uploaded = s.create_run(RunConfig())
    s.finish_run(uploaded, "finished", {"test_acc": 0.5, "uploaded": "t.pt"})
    for run_id in (student, uploaded):
        card = mc.model_card(s, run_id)
        assert card["reproduce"] is None and runs_table.command_for(s.get_run(run_id), s) is None
        text = mc.card_markdown(card)
        assert "Not reproducible from this store" in text and "TEACHER" not in text


@pytest.mark.parametrize(
    "dataset, labels, train",
    [
        ("digits", LabelConfig(per_class=5, label_seed=3, transfer_ratio=3.0), replace(TRAIN, augment=True, mixup=0.2)),
        ("fashion_mnist", LabelConfig(labels=500, transfer="rest+folder:/data/my images"), replace(TRAIN, flip=True)),
        ("digits", LabelConfig(labels=100, transfer="none"), replace(TRAIN, precision="bf16")),
    ],
)
def test_a_budgeted_augmented_run_comes_back_with_its_labels_augmentation_and_precision(
    tmp_path, dataset, labels, train
):
    """A run on 5 labels per class with function matching (or in bf16) must not be reproduced on
    every label without it: the command's flags parse back to the stored label and training configs."""
    s = Store(tmp_path / "runs")
    teacher = s.create_run(RunConfig(model=ModelSpec("mlp", 32, 1), train=TRAIN))
    s.finish_run(teacher, "finished", {"test_acc": 0.9})
    for kind in ("student", "baseline"):
        cfg = RunConfig(
            kind=kind,
            data=DataConfig(dataset=dataset),
            model=ModelSpec("mlp", 8, 1),
            train=train,
            labels=labels,
            teacher_id=teacher,
            distill=DistillConfig(4.0, 0.5) if kind == "student" else None,
        )
        run_id = s.create_run(cfg)
        s.finish_run(run_id, "finished", {"test_acc": 0.8})
        a = parsed(runs_table.command_for(s.get_run(run_id), s))
        assert a.command == "distill" and a.baseline == (kind == "baseline")
        assert common.label_config(a) == labels
        assert common.train_config(a) == train
