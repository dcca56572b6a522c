"""Distillation on a transfer set: the real engine on digits with a label budget."""

from __future__ import annotations

import argparse
import copy
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from helpers import STUDENT_SPEC, TEACHER_SPEC, StepRecorder, assert_clean_failure, make_config, run_cli
from kd_core.cli.common import report
from kd_core.config import LabelConfig
from kd_core.errors import ConfigError
from kd_core.store import Store
from kd_core.train import labels as L
from kd_core.train.batches import Batches
from kd_core.train.engine import fit
from kd_core.train.models import build_model
from kd_core.train.recorder import distill, train_teacher

BUDGET = LabelConfig(per_class=3, label_seed=1)


def student_config(**kw):
    labels = kw.pop("labels", BUDGET)
    return replace(make_config("student", epochs=1, batch_size=32, **kw), labels=labels)


def weights(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.state_dict().values()]


def poison_hidden(data, labelled_idx):
    y = data.train_y.clone()
    hidden = torch.as_tensor(np.setdiff1d(np.arange(len(y)), labelled_idx))
    y[hidden] = (y[hidden] + 1 + torch.arange(len(hidden)) % 9) % 10
    assert (y[hidden] != data.train_y[hidden]).all()
    return replace(data, train_y=y)


def test_hidden_labels_never_reach_the_student(digits, teacher):
    """Every label outside the subset made wrong: the student's weights and every logged
    number are bit-identical, so no hidden label took part in training."""
    cfg = student_config()
    clean = L.training_set(digits, cfg.labels)
    poisoned = poison_hidden(digits, clean.labelled_idx)
    dirty = L.training_set(poisoned, cfg.labels, labelled_idx=clean.labelled_idx)
    rec_a, rec_b = StepRecorder(), StepRecorder()
    a = fit(cfg, digits, teacher, rec_a, train_set=clean)
    b = fit(cfg, poisoned, teacher, rec_b, train_set=dirty)
    assert len(clean.transfer_x) == len(digits.train_y) - 30
    assert all(torch.equal(p, q) for p, q in zip(weights(a.model), weights(b.model)))
    assert np.array_equal(rec_a.losses(), rec_b.losses())
    assert a.history[0]["train_acc"] == b.history[0]["train_acc"]


def test_poisoning_a_labelled_row_does_change_the_student(digits, teacher):
    """The check above can fail: the same poison on one *labelled* row changes the result."""
    cfg = student_config()
    clean = L.training_set(digits, cfg.labels)
    y = digits.train_y.clone()
    first = int(clean.labelled_idx[0])
    y[first] = (y[first] + 1) % 10
    dirty = L.training_set(replace(digits, train_y=y), cfg.labels, labelled_idx=clean.labelled_idx)
    a = fit(cfg, digits, teacher, train_set=clean)
    b = fit(cfg, replace(digits, train_y=y), teacher, train_set=dirty)
    assert not all(torch.equal(p, q) for p, q in zip(weights(a.model), weights(b.model)))


def test_mixed_step_loss_against_a_float64_reference(digits, teacher):
    """Step 1: (1 − λ)·CE over the labelled rows + λ·T²·KL over every row, recomputed here."""
    cfg = student_config(temperature=3.0, alpha=0.6)
    ts = L.training_set(digits, cfg.labels)
    rec = StepRecorder()
    fit(cfg, digits, teacher, rec, train_set=ts)
    plan = L.step_plan(30, len(ts.transfer_x), 32, 1.0)
    idx, n_lab = next(Batches(plan, 30, len(ts.transfer_x), cfg.train.seed, None).epoch(torch.device("cpu")))
    assert (n_lab, len(idx)) == (16, 32) and idx[:16].max() < 30 <= idx[16:].min()
    torch.manual_seed(cfg.train.seed)
    student = build_model(STUDENT_SPEC, digits.input_shape, 10).double()
    with torch.no_grad():
        x = ts.inputs[idx].double()
        zs, zt = student(x).numpy(), copy.deepcopy(teacher).double()(x).numpy()

    def log_softmax(z):
        z = z - z.max(1, keepdims=True)
        return z - np.log(np.exp(z).sum(1, keepdims=True))

    y = ts.y[idx[:16]].numpy()
    ce = -log_softmax(zs[:16])[np.arange(16), y].mean()
    pt_log, ps_log = log_softmax(zt / 3.0), log_softmax(zs / 3.0)
    kd = 9.0 * (np.exp(pt_log) * (pt_log - ps_log)).sum(1).mean()
    first = rec.of("step")[0]
    assert first.terms["ce"] == pytest.approx(ce, rel=1e-5)
    assert first.terms["kd"] == pytest.approx(kd, rel=1e-5)
    assert first.loss == pytest.approx(0.4 * ce + 0.6 * kd, rel=1e-5)


def test_cached_and_uncached_teacher_targets_agree_on_the_transfer_set(digits, teacher):
    cfg = student_config()
    rec_c, rec_u = StepRecorder(), StepRecorder()
    a = fit(cfg, digits, teacher, rec_c)
    b = fit(replace(cfg, distill=replace(cfg.distill, cache_teacher_logits=False)), digits, teacher, rec_u)
    np.testing.assert_allclose(rec_c.losses(), rec_u.losses(), rtol=1e-4, atol=1e-6)
    for p, q in zip(weights(a.model), weights(b.model)):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_a_baseline_takes_the_students_steps_over_the_same_labelled_batches(digits):
    plan = L.step_plan(30, 1000, 32, 1.0)
    student = Batches(plan, 30, 1000, 7, None).epoch(torch.device("cpu"))
    baseline = Batches(plan, 30, 0, 7, None).epoch(torch.device("cpu"))
    pairs = list(zip(student, baseline, strict=True))
    assert len(pairs) == plan.steps_per_epoch == 63  # 1000 transfer rows, 16 a step
    for (s_idx, s_lab), (b_idx, b_lab) in pairs:
        assert s_lab == b_lab == 16 and torch.equal(s_idx[:16], b_idx) and len(s_idx) == 32


def test_distill_stores_the_subset_the_budget_and_the_teachers_labels(digits, tmp_path):
    store = Store(tmp_path / "runs")
    t_cfg = replace(make_config("teacher", epochs=1), labels=LabelConfig(per_class=3, label_seed=1))
    teacher_run = train_teacher(store, t_cfg, digits)
    assert teacher_run.metrics["labels"]["labelled"] == 30
    cfg = replace(student_config(), teacher_id=teacher_run.run_id)
    student, baseline = distill(store, cfg, digits, teacher_run.model)
    s, b = student.metrics, baseline.metrics
    assert s["labels"]["subset"] == b["labels"]["subset"] == L.fingerprint(L.training_set(digits, BUDGET).labelled_idx)
    assert s["labels"]["transfer"] == b["labels"]["transfer"] == len(digits.train_y) - 30
    assert (s["labels"]["transfer_used"], b["labels"]["transfer_used"]) == (len(digits.train_y) - 30, 0)
    assert s["teacher_labels"] == {"budget": "3 labels per class", "labelled": 30}
    stored = store.get_run(baseline.run_id)
    assert stored.config.labels.per_class == 3 and stored.metrics["labels"]["per_class"] == [3] * 10


def test_a_budget_the_data_cannot_give_stores_nothing(digits, teacher, tmp_path):
    store = Store(tmp_path / "runs")
    cfg = replace(student_config(), labels=LabelConfig(labels=5))
    [refused] = distill(store, cfg, digits, teacher)
    assert (refused.run_id, refused.status) == ("", "failed") and "cannot cover 10 classes" in refused.message
    refused = train_teacher(store, replace(cfg, labels=LabelConfig(transfer_ratio=-1)), digits)
    assert (refused.run_id, refused.status) == ("", "failed") and "transfer ratio" in refused.message
    assert store.list_runs() == []


def test_transfer_none_distils_on_the_labelled_rows_only(digits, teacher):
    cfg = student_config(labels=replace(BUDGET, transfer="none"))
    result = fit(cfg, digits, teacher)
    assert result.labels["transfer_used"] == 0
    assert len(result.history) == 1 and result.history[0]["train_acc"] >= 0  # 30 rows, one epoch of 1 step


# ---------------------------------------------------------------- CLI


@pytest.mark.slow
def test_cli_distils_on_a_budget_and_its_baseline_sees_the_same_labels(tmp_path, capsys):
    common = ["--store", tmp_path / "runs", "--epochs", "1", "--quiet", "--json", "--labels-per-class", "4"]
    proc = run_cli(tmp_path, "teacher", "--size", "64", *common, "--labels-per-class", "0", "--labels", "0")
    assert proc.returncode == 0, proc.stderr
    teacher_id = json.loads(proc.stdout)["runs"][0]["run_id"]
    proc = run_cli(tmp_path, "distill", "--teacher", teacher_id, "--baseline", "--label-seed", "3", *common)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    student, baseline = out["runs"]
    assert out["config"]["labels"] == {
        "labels": 0,
        "per_class": 4,
        "label_seed": 3,
        "transfer": "rest",
        "transfer_ratio": 1.0,
    }
    assert student["labels"]["subset"] == baseline["labels"]["subset"]
    assert student["labels"]["labelled"] == 40 and student["teacher_labels"]["budget"] == "all labels"
    # the same runs as text: each line says what it trained on (the CLI's JSON replayed through its printer)
    report(argparse.Namespace(json=False), out, 0.0)
    lines = capsys.readouterr().out.splitlines()
    n_transfer = out["dataset"]["train"] - 40
    assert lines[0].endswith(f"labels 40 + {n_transfer:,} transfer (labels hidden)"), lines
    assert lines[1].startswith("baseline") and lines[1].endswith("labels 40"), lines


@pytest.mark.slow
def test_cli_refuses_a_bad_budget_or_a_bad_transfer_folder_before_storing(tmp_path, teacher):
    from kd_core.train.checkpoint import save_checkpoint

    ckpt = tmp_path / "t.pt"
    save_checkpoint(ckpt, teacher, TEACHER_SPEC, (1, 8, 8), [str(k) for k in range(10)], "digits")
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    (folder / "broken.jpg").write_text("not a jpeg")
    store = tmp_path / "runs"
    base = ["distill", "--teacher", ckpt, "--store", store, "--epochs", "1", "--quiet"]
    assert_clean_failure(run_cli(tmp_path, *base, "--labels", "5"), "error:", "cannot cover 10 classes")
    assert_clean_failure(
        run_cli(tmp_path, *base, "--transfer", f"rest+folder:{folder}"), "error:", "broken.jpg", "could not be read"
    )
    assert Store(store).list_runs() == []


# ---------------------------------------------------------------- methods


def test_a_method_that_reads_labels_is_refused_with_a_transfer_set(digits, teacher):
    from kd_core.methods import parse_methods
    from kd_core.train.engine import check_run

    cfg = student_config()
    dkd = replace(cfg, distill=replace(cfg.distill, methods=parse_methods("dkd")))
    with pytest.raises(ConfigError, match="dkd reads each image's label"):
        check_run(dkd, digits, teacher)
    # on the labelled images only, DKD has every label it needs
    fit(replace(dkd, labels=replace(BUDGET, transfer="none")), digits, teacher)


def test_label_free_methods_mix_on_a_transfer_set(digits, teacher):
    """KD with RKD (relations between the batch's embeddings, no labels): the transfer rows
    take part in the relation terms, and the run trains."""
    from kd_core.methods import parse_methods

    cfg = student_config()
    mix = replace(cfg, distill=replace(cfg.distill, methods=parse_methods("kd+rkd")))
    rec = StepRecorder()
    result = fit(mix, digits, teacher, rec)
    assert result.status == "finished" and result.labels["transfer_used"] == len(digits.train_y) - 30
    names = set(rec.of("step")[0].terms)
    assert "ce" in names and any(n.startswith(("rkd", "distance", "angle")) for n in names), names
