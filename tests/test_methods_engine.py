"""The methods inside the real engine on digits: named stages through FX (and the hook
fallback), the engine's weighted sum, loss going down for every method, extra modules
trained, cached and uncached teacher targets agreeing, the memory budget, refusals before
anything is stored, and `distill --method` on the command line."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from helpers import StepRecorder, make_config
from kd_core.cli import main
from kd_core.config import ModelSpec
from kd_core.methods import METHODS, parse_methods
from kd_core.store import Store
from kd_core.train.checkpoint import save_checkpoint
from kd_core.train.engine import check_run, fit, method_preview
from kd_core.train.features import FeatureForward, stage_shapes
from kd_core.train.models import build_model
from kd_core.train.plan import TeacherTargets, plan_methods
from kd_core.train.recorder import distill

CNN_TEACHER, CNN_STUDENT = ModelSpec("cnn", 8), ModelSpec("cnn", 4)
STEPS_PER_EPOCH = math.ceil(1293 / 64)  # digits' training split at batch 64


def student_cfg(methods: str, params=(), *, model=CNN_STUDENT, alpha=0.9, cache=True, **kw):
    cfg = make_config("student", model, alpha=alpha, cache=cache, **kw)
    return replace(cfg, distill=replace(cfg.distill, methods=parse_methods(methods, list(params))))


def run(cfg, data, teacher):
    rec = StepRecorder()
    result = fit(cfg, data, teacher, emit=rec)
    assert result.status == "finished", result.message
    return result, rec


@pytest.fixture(scope="module")
def cnn_teacher(digits):
    """A CNN w8 teacher (two conv stages on 8×8 digits), trained for 3 epochs."""
    result = fit(make_config("teacher", CNN_TEACHER, epochs=3, lr=3e-3), digits)
    assert result.status == "finished" and result.best_val_acc > 0.6
    return result.model


# ---------------------------------------------------------------- stages


@pytest.mark.parametrize(
    "spec,want",
    [
        (ModelSpec("mlp", 16, 2), {"hidden1": (16,), "hidden2": (16,), "embedding": (16,)}),
        (ModelSpec("mlp", 16, 0), {"embedding": (64,)}),
        (ModelSpec("cnn", 4), {"stage1": (4, 4, 4), "stage2": (8, 2, 2), "embedding": (8,)}),
    ],
)
def test_each_family_names_its_stages(spec, want):
    assert stage_shapes(build_model(spec, (1, 8, 8), 10), (1, 8, 8)) == want


@pytest.mark.parametrize("spec", [ModelSpec("mlp", 16, 2), ModelSpec("cnn", 4)])
def test_fx_features_match_forward_hooks_and_share_the_parameters(spec, digits):
    model = build_model(spec, (1, 8, 8), 10).eval()
    stages = tuple(model.stage_nodes)
    fx, hooks = FeatureForward(model, stages), FeatureForward(model, stages, hooks=True)
    assert (fx.uses, hooks.uses) == ("fx", "hooks")
    x = digits.train_x[:5]
    a, b = fx(x), hooks(x)
    torch.testing.assert_close(a.logits, model(x), rtol=0, atol=0)
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=0)
    for k in stages:
        torch.testing.assert_close(a.features[k], b.features[k], rtol=0, atol=0)
    hooks.close()
    assert not any(m._forward_hooks for m in model.modules())  # nothing left attached
    # The extractor trains the model's own parameters.
    assert {id(p) for p in fx.extractor.parameters()} == {id(p) for p in model.parameters()}


# ---------------------------------------------------------------- the engine's sum


def test_total_is_one_minus_lambda_ce_plus_lambda_weighted_terms(digits, cnn_teacher):
    cfg = student_cfg("0.5*dkd+2*at+0.25*sp", alpha=0.7, epochs=1)
    _, rec = run(cfg, digits, cnn_teacher)
    for r in rec.of("step"):
        t = r.terms
        assert set(t) == {"ce", "tckd", "nckd", "at", "sp"}
        want = 0.3 * t["ce"] + 0.7 * (0.5 * (t["tckd"] + t["nckd"]) + 2 * t["at"] + 0.25 * t["sp"])
        assert r.loss == pytest.approx(want, rel=1e-5)
    epoch = rec.of("epoch")[0]
    steps = rec.of("step")
    sizes = [64] * (len(steps) - 1) + [1293 - 64 * (len(steps) - 1)]
    assert epoch.terms["at"] == pytest.approx(np.average([s.terms["at"] for s in steps], weights=sizes), rel=1e-9)


def test_a_term_name_two_methods_share_gets_its_method_in_front(digits, cnn_teacher):
    """KD has "kd" and a mix could repeat a name; every term stays its own curve."""
    from kd_core.methods.base import Method

    class Twin(Method):  # a second method whose only term is also called "kd"
        name, title, paper, family = "twin", "twin", "none 2024", "response"

        def loss(self, s, t, params, extra, temperature, labels=None):
            return {"kd": (s.logits - t.logits).pow(2).mean()}

    METHODS["twin"] = Twin()
    try:
        _, rec = run(student_cfg("kd+twin", epochs=1), digits, cnn_teacher)
    finally:
        del METHODS["twin"]
    assert set(rec.of("step")[0].terms) == {"ce", "kd", "twin.kd"}


# ---------------------------------------------------------------- training with every method


@pytest.mark.parametrize("name", list(METHODS))
def test_a_few_epochs_reduce_each_methods_loss(name, digits, cnn_teacher):
    """λ = 1: the student learns from the method alone; its terms fall from epoch 1 to 3."""
    cfg = student_cfg(name, alpha=1.0, epochs=3, lr=3e-3)
    _, rec = run(cfg, digits, cnn_teacher)
    first, last = (sum(v for k, v in e.terms.items() if k != "ce") for e in (rec.of("epoch")[0], rec.of("epoch")[-1]))
    assert last < 0.9 * first, (name, first, last)


@pytest.mark.parametrize("name", ["kd", "dkd", "dist", "logit_std", "fitnets", "sp", "rkd"])
def test_every_method_that_needs_no_spatial_maps_runs_on_mlps(name, digits, teacher):
    _, rec = run(student_cfg(name, model=ModelSpec("mlp", 16, 1), epochs=1), digits, teacher)
    assert rec.of("epoch")[0].terms.keys() > {"ce"}


def test_the_fitnets_regressor_is_trained_with_the_student(digits, cnn_teacher):
    cfg = student_cfg("kd+fitnets", epochs=1)
    before = plan_methods(cfg.distill, build_model(CNN_STUDENT, (1, 8, 8), 10), cnn_teacher, (1, 8, 8), 0)
    initial = {k: v.clone() for k, v in before[1].extra.state_dict().items()}
    result, _ = run(cfg, digits, cnn_teacher)
    trained = result.extra[1].state_dict()
    assert initial.keys() == trained.keys() == {"regressor.weight", "regressor.bias"}
    assert trained["regressor.weight"].shape == (8, 4, 1, 1)  # 1×1 conv, student stage1 (4 ch) → teacher's (8)
    # Same seed, same initial regressor: what changed, training changed.
    assert all(not torch.allclose(initial[k], trained[k]) for k in initial)


# ---------------------------------------------------------------- the teacher-target cache


class BatchSizes:
    """The batch sizes the teacher's first layer sees (FX calls submodules, not forward)."""

    def __init__(self, model):
        self.sizes: list[int] = []
        first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        self.handle = first.register_forward_hook(lambda _m, inputs, _o: self.sizes.append(len(inputs[0])))

    def training_rows(self) -> int:
        return sum(n for n in self.sizes if n != 2)  # 2 rows: the dummy pass that reads stage shapes


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n, m in METHODS.items() if m.cacheable])
def test_cached_and_uncached_teacher_targets_agree(name, digits, cnn_teacher):
    """Each method trains the same with its targets cached by index as with a teacher pass
    per batch; cached, the teacher sees each training image once, else once per step."""
    seen = []
    for cache in (True, False):
        counter = BatchSizes(cnn_teacher)
        try:
            result, rec = run(student_cfg(name, epochs=2, cache=cache), digits, cnn_teacher)
        finally:
            counter.handle.remove()
        seen.append((result, rec, counter))
    (cached, rec_c, n_c), (fresh, rec_f, n_f) = seen
    assert cached.cache.startswith("cached by sample index") and fresh.cache.startswith("computed per batch")
    assert n_c.training_rows() == 1293 and n_f.training_rows() == 2 * 1293
    steps_c, steps_f = rec_c.of("step"), rec_f.of("step")
    assert len(steps_c) == len(steps_f) == 2 * STEPS_PER_EPOCH
    for a, b in zip(steps_c, steps_f):
        assert a.terms.keys() == b.terms.keys()
        np.testing.assert_allclose([a.loss, *a.terms.values()], [b.loss, *b.terms.values()], rtol=1e-4, atol=1e-6)
    assert sum(v for k, v in steps_c[0].terms.items() if k != "ce") > 0  # the teacher really took part
    for pa, pb in zip(cached.model.parameters(), fresh.model.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("budget,cached", [(10**9, ("kd", "at")), (60_000, ("kd",)), (0, ())])
def test_the_memory_budget_decides_what_is_cached(budget, cached, digits, cnn_teacher):
    cfg = student_cfg("kd+at", epochs=1)
    plans = plan_methods(cfg.distill, build_model(CNN_STUDENT, (1, 8, 8), 10), cnn_teacher, (1, 8, 8), 0)
    targets = TeacherTargets(cnn_teacher, plans, digits.train_x, True, False, budget=budget)
    assert targets.choice.cached == cached
    idx = torch.tensor([5, 0, 700])
    served = targets(idx, digits.train_x.index_select(0, idx))
    fresh = TeacherTargets(cnn_teacher, plans, digits.train_x, False, False)(idx, digits.train_x.index_select(0, idx))
    for a, b in zip(served, fresh):  # whichever path served them, the targets are the same
        torch.testing.assert_close(a.logits, b.logits)
        for k in a.features:
            torch.testing.assert_close(a.features[k], b.features[k])
    # AT keeps 4×4 and 2×2 attention maps per image, not 8×4×4 and 16×2×2 activations, and no logits.
    assert served[1].features["stage1"].shape == (3, 16) and served[1].features["stage2"].shape == (3, 4)
    assert served[1].logits.shape == (3, 0)


# ---------------------------------------------------------------- refusals and previews


def test_attention_transfer_on_an_mlp_is_refused_before_anything_is_stored(tmp_path, digits, teacher):
    store = Store(tmp_path)
    cfg = student_cfg("kd+at", model=ModelSpec("mlp", 16, 1))
    with pytest.raises(Exception, match="method 'at' needs spatial feature maps"):
        check_run(cfg, digits, teacher)
    (outcome,) = distill(store, cfg, digits, teacher, with_baseline=True)
    assert outcome.status == "failed" and "use a CNN" in outcome.message and outcome.run_id == ""
    assert store.list_runs() == []


def test_preview_counts_extra_parameters_and_says_how_targets_are_served(digits, cnn_teacher):
    p = method_preview(student_cfg("kd+fitnets"), digits, cnn_teacher)
    assert p["extra_params"] == 4 * 8 + 8  # the 1×1 regressor: weights and biases
    assert p["cached"] == ["kd", "fitnets"] and p["cache"].startswith("cached by sample index")
    assert p["stages"]["fitnets"] == {"student": ["stage1"], "teacher": ["stage1"]}
    aug = method_preview(
        replace(student_cfg("kd"), train=replace(student_cfg("kd").train, augment=True)), digits, cnn_teacher
    )
    assert (
        aug["extra_params"] == 0 and aug["cache"] == "computed per batch: augmentation changes every view of an image"
    )


# ---------------------------------------------------------------- command line


def test_cli_distills_with_dkd_and_reports_its_named_terms(tmp_path, digits, cnn_teacher, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_checkpoint(tmp_path / "t.pt", cnn_teacher, CNN_TEACHER, (1, 8, 8), digits.classes, "digits")
    code = main(["distill", "--teacher", "t.pt", "--family", "cnn", "--size", "4", "--epochs", "1", "--quiet",
                 "--json", "--method", "dkd", "--method-param", "beta=8", "--lambda", "0.5"])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["config"]["distill"]["methods"] == [{"name": "dkd", "weight": 1.0, "params": [["beta", 8.0]]}]
    assert out["config"]["distill"]["alpha"] == 0.5
    (run_,) = out["runs"]
    assert set(run_["loss_terms"]) == {"ce", "tckd", "nckd"} and run_["teacher_cache"].startswith("cached")
    terms = Store(tmp_path / "kd_runs").epochs(run_["run_id"])[0]["terms"]
    assert terms == pytest.approx(run_["loss_terms"])


@pytest.mark.slow
def test_a_torchvision_student_serves_feature_and_relation_methods(digits, cnn_teacher):
    """The zoo's families name their stages like ours: FX reads a ResNet-18's stages."""
    cfg = student_cfg("kd+fitnets+rkd", model=ModelSpec("resnet18", 16, 1, 0.25), epochs=1, threads=1)
    result, rec = run(cfg, digits, cnn_teacher)
    assert set(rec.of("epoch")[0].terms) == {"ce", "kd", "hint", "rkd_dist", "rkd_angle"}
    assert result.extra[1]["regressor"] is not None and result.cache.startswith("cached by sample index")
