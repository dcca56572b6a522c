"""Every method's loss against the float64 references in method_refs.py, the DKD ↔ KD
identity, per-sample teacher targets (what makes caching by index valid), stage selection,
parameter parsing and the registry. Pure tensors: no engine here (see test_methods_engine.py)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

import method_refs as ref
from kd_core.config import DistillConfig, MethodSpec, RunConfig
from kd_core.errors import ConfigError
from kd_core.methods import (
    FAMILIES,
    METHODS,
    Outputs,
    format_methods,
    format_params,
    get_method,
    make_params,
    param_info,
    parse_methods,
    resolve_stages,
    validate_methods,
)
from kd_core.methods.dkd import dkd_parts

B, K = 12, 7
TOL = {"rel": 1e-5, "abs": 1e-6}


def rand(seed: int, *shape: int, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def labels(seed: int, n: int = B) -> torch.Tensor:
    return torch.randint(0, K, (n,), generator=torch.Generator().manual_seed(seed))


def as_dtype(o: Outputs, dtype) -> Outputs:
    return Outputs(o.logits.to(dtype), {k: v.to(dtype) for k, v in o.features.items()})


def run(name: str, s: Outputs, t: Outputs, T: float = 4.0, y=None, extra=None, dtype=torch.float32, **overrides):
    m = get_method(name)
    p = make_params(m, overrides)
    return {k: v.item() for k, v in m(as_dtype(s, dtype), as_dtype(t, dtype), p, extra, T, y).items()}


def f32_tol(T: float) -> dict:
    """At T = 100 a KL of ~1e-4 is a difference of logs near 1: float32 keeps ~3 digits of it."""
    return TOL if T <= 10 else {"rel": 5e-3, "abs": 1e-6}


F64 = {"rel": 1e-9, "abs": 1e-12}


def np64(x: torch.Tensor) -> np.ndarray:
    return x.detach().double().numpy()


# ------------------------------------------------------------------ response methods

SETTINGS = [(1.0, 3.0), (4.0, 3.0), (100.0, 3.0), (2.0, 0.1)]  # (T, logit scale): large T, near-flat logits


@pytest.mark.parametrize("T,scale", SETTINGS)
def test_kd_matches_reference(T, scale):
    zs, zt = rand(1, B, K, scale=scale), rand(2, B, K, scale=scale)
    want = ref.kd(np64(zs), np64(zt), T)
    assert run("kd", Outputs(zs), Outputs(zt), T)["kd"] == pytest.approx(want, **f32_tol(T))
    assert run("kd", Outputs(zs), Outputs(zt), T, dtype=torch.float64)["kd"] == pytest.approx(want, **F64)


@pytest.mark.parametrize("T,scale", SETTINGS)
@pytest.mark.parametrize("alpha,beta", [(1.0, 8.0), (0.5, 2.0), (0.0, 1.0)])
def test_dkd_matches_reference(T, scale, alpha, beta):
    zs, zt, y = rand(3, B, K, scale=scale), rand(4, B, K, scale=scale), labels(5)
    tckd, nckd = ref.dkd(np64(zs), np64(zt), y.numpy(), T, alpha, beta)
    for dtype, tol in ((torch.float32, f32_tol(T)), (torch.float64, F64)):
        got = run("dkd", Outputs(zs), Outputs(zt), T, y, dtype=dtype, alpha=alpha, beta=beta)
        assert got["tckd"] == pytest.approx(tckd, **tol)
        assert got["nckd"] == pytest.approx(nckd, **tol)
        assert set(got) == {"tckd", "nckd"}


def test_dkd_one_dominant_class_stays_exact():
    """The teacher is all but certain (p_t ≈ 1 − 1e-13): 1 − p_t must not round to 0."""
    zs, y = rand(6, B, K), labels(7)
    zt = rand(8, B, K, scale=0.5)
    zt[torch.arange(B), y] += 30.0
    got = run("dkd", Outputs(zs), Outputs(zt), 1.0, y)
    tckd, nckd = ref.dkd(np64(zs), np64(zt), y.numpy(), 1.0, 1.0, 8.0)
    assert got["tckd"] == pytest.approx(tckd, **TOL) and got["nckd"] == pytest.approx(nckd, **TOL)
    assert tckd > 1.0  # the student is far from certain: the binary term is large


@pytest.mark.parametrize("T", [1.0, 4.0, 50.0])
def test_kd_is_tckd_plus_confidence_weighted_nckd_per_sample(T):
    """Zhao et al. 2022, Eq. 4: KL(p^T‖p^S) = TCKD + (1 − p_t^T)·NCKD, for every sample."""
    zs, zt, y = rand(9, B, K), rand(10, B, K), labels(11)
    tckd, nckd = dkd_parts(zs.double(), zt.double(), y, T)
    p_t = torch.softmax(zt.double() / T, 1)[torch.arange(B), y]
    kd_i = ref.kd_per_sample(np64(zs), np64(zt), T)
    np.testing.assert_allclose((tckd + (1 - p_t) * nckd).numpy(), kd_i, rtol=1e-9, atol=1e-12)


def test_dkd_reduces_to_kd_at_alpha_one_beta_one_minus_teacher_confidence():
    """So DKD with α = 1, β = 1 − p_t^T is KD, sample by sample (β is one number, so one sample
    at a time); DKD's point is that β is then free, not tied to the teacher's confidence."""
    for i in range(4):
        zs, zt, y = rand(20 + i, 1, K), rand(30 + i, 1, K), labels(40 + i, 1)
        T = 4.0
        beta = 1 - torch.softmax(zt / T, 1)[0, y[0]].item()
        got = run("dkd", Outputs(zs), Outputs(zt), T, y, alpha=1.0, beta=beta)
        assert got["tckd"] + got["nckd"] == pytest.approx(run("kd", Outputs(zs), Outputs(zt), T)["kd"], rel=1e-5)
    # ...and at the paper's β = 8 it is not KD.
    zs, zt, y = rand(50, B, K), rand(51, B, K), labels(52)
    dkd = run("dkd", Outputs(zs), Outputs(zt), 4.0, y)
    assert dkd["tckd"] + dkd["nckd"] > 1.5 * run("kd", Outputs(zs), Outputs(zt), 4.0)["kd"]


@pytest.mark.parametrize("T,scale", SETTINGS)
def test_dist_matches_reference(T, scale):
    zs, zt = rand(12, B, K, scale=scale), rand(13, B, K, scale=scale)
    inter, intra = ref.dist(np64(zs), np64(zt), T, 1.0, 2.0)
    for dtype, tol in ((torch.float32, {"rel": 1e-4, "abs": 1e-6} if T <= 10 else {"rel": 5e-3}), (torch.float64, F64)):
        got = run("dist", Outputs(zs), Outputs(zt), T, dtype=dtype, beta=1.0, gamma=2.0)
        assert got["inter"] == pytest.approx(inter, **tol)
        assert got["intra"] == pytest.approx(intra, **tol)


def test_dist_single_sample_has_no_intra_term():
    zs, zt = rand(14, 1, K), rand(15, 1, K)
    got = run("dist", Outputs(zs), Outputs(zt))
    assert got["intra"] == 0.0
    assert got["inter"] == pytest.approx(ref.dist(np64(zs), np64(zt), 4.0, 1.0, 1.0)[0], rel=1e-4)


@pytest.mark.parametrize("T,scale", SETTINGS)
def test_logit_std_matches_reference(T, scale):
    zs, zt = rand(16, B, K, scale=scale), rand(17, B, K, scale=scale)
    want = ref.logit_std(np64(zs), np64(zt), T)
    assert run("logit_std", Outputs(zs), Outputs(zt), T)["kd_std"] == pytest.approx(want, **f32_tol(T))
    assert run("logit_std", Outputs(zs), Outputs(zt), T, dtype=torch.float64)["kd_std"] == pytest.approx(want, **F64)


def test_logit_std_ignores_the_teachers_scale_and_shift():
    """Z-scoring makes a teacher 5× sharper and shifted by 3 the same teacher; KD is not blind to it."""
    zs, zt = rand(18, B, K), rand(19, B, K)
    a = run("logit_std", Outputs(zs), Outputs(zt))["kd_std"]
    b = run("logit_std", Outputs(zs), Outputs(5 * zt + 3))["kd_std"]
    assert a == pytest.approx(b, rel=1e-4)
    sharper = run("kd", Outputs(zs), Outputs(5 * zt))["kd"]
    assert run("kd", Outputs(zs), Outputs(zt))["kd"] != pytest.approx(sharper, rel=0.1)


# ------------------------------------------------------------------ feature and relation methods


def test_fitnets_conv_regressor_matches_reference():
    v, u = rand(21, B, 4, 3, 3, scale=1.0), rand(22, B, 6, 3, 3, scale=1.0)
    m = get_method("fitnets")
    p = make_params(m, {"coef": 2.0})
    extra = m.modules(p, {"stage1": (4, 3, 3)}, {"stage1": (6, 3, 3)})
    conv = extra["regressor"]
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1)
    got = m(Outputs(rand(0, B, K), {"stage1": v}), Outputs(rand(0, B, K), {"stage1": u}), p, extra)["hint"]
    want = ref.fitnets_conv(np64(v), np64(u), np64(conv.weight[:, :, 0, 0]), np64(conv.bias), 2.0)
    assert got.item() == pytest.approx(want, **TOL)


def test_fitnets_linear_regressor_between_flat_and_spatial_stages():
    """An MLP student's hidden layer guided by a CNN teacher's map: a linear regressor."""
    v, u = rand(23, B, 10, scale=1.0), rand(24, B, 3, 2, 2, scale=1.0)
    m = get_method("fitnets")
    p = m.Params()
    extra = m.modules(p, {"hidden1": (10,)}, {"stage1": (3, 2, 2)})
    lin = extra["regressor"][1]
    got = m(Outputs(rand(0, B, K), {"hidden1": v}), Outputs(rand(0, B, K), {"stage1": u}), p, extra)["hint"]
    want = ref.fitnets_linear(np64(v), np64(u), np64(lin.weight), np64(lin.bias), 1.0)
    assert got.item() == pytest.approx(want, **TOL)


def test_fitnets_is_zero_when_the_regressor_maps_the_student_onto_the_teacher():
    v = rand(25, B, 4, 3, 3, scale=1.0)
    m = get_method("fitnets")
    p = m.Params()
    extra = m.modules(p, {"s": (4, 3, 3)}, {"t": (4, 3, 3)})
    with torch.no_grad():
        extra["regressor"].weight.copy_(torch.eye(4)[:, :, None, None])
        extra["regressor"].bias.zero_()
    got = m(Outputs(rand(0, B, K), {"s": v}), Outputs(rand(0, B, K), {"t": v.clone()}), p, extra)["hint"]
    assert got.item() == pytest.approx(0.0, abs=1e-10)


def spatial_pair(seed: int, channels=((3, 5), (6, 8)), sides=(4, 2)):
    """Two stages of student/teacher maps with different channel counts and equal sides."""
    pairs = list(enumerate(zip(channels, sides)))
    s = {f"stage{j + 1}": rand(seed + j, B, cs, h, h, scale=1.0) for j, ((cs, _), h) in pairs}
    t = {f"stage{j + 1}": rand(seed + 10 + j, B, ct, h, h, scale=1.0) for j, ((_, ct), h) in pairs}
    return s, t


@pytest.mark.parametrize("beta,p", [(1000.0, 2.0), (10.0, 1.0), (1000.0, 4.0)])
def test_at_matches_reference(beta, p):
    s, t = spatial_pair(26)
    got = run("at", Outputs(rand(0, B, K), s), Outputs(rand(0, B, K), t), beta=beta, p=p)["at"]
    want = ref.at([np64(a) for a in s.values()], [np64(a) for a in t.values()], beta, p)
    assert got == pytest.approx(want, **TOL)
    assert want > 1e-3


@pytest.mark.parametrize("gamma", [3000.0, 1.0])
def test_sp_matches_reference(gamma):
    s, t = spatial_pair(27)
    got = run("sp", Outputs(rand(0, B, K), s), Outputs(rand(0, B, K), t), gamma=gamma)["sp"]
    want = ref.sp([np64(a) for a in s.values()], [np64(a) for a in t.values()], gamma)
    assert got == pytest.approx(want, **TOL)


@pytest.mark.parametrize("b,dim_s,dim_t,scale", [(6, 5, 9, 1.0), (5, 3, 3, 10.0), (2, 4, 4, 0.01)])
def test_rkd_matches_reference(b, dim_s, dim_t, scale):
    es, et = rand(28, b, dim_s, scale=scale), rand(29, b, dim_t, scale=scale)
    got = run("rkd", Outputs(rand(0, b, K), {"embedding": es}), Outputs(rand(0, b, K), {"embedding": et}))
    d, a = ref.rkd(np64(es), np64(et), 25.0, 50.0)
    assert got["rkd_dist"] == pytest.approx(d, rel=1e-4, abs=1e-6)
    assert got["rkd_angle"] == pytest.approx(a, rel=1e-4, abs=1e-6)


def test_relation_losses_are_finite_for_a_batch_of_one():
    """The last batch of an epoch can hold one sample: no pairs, nothing to relate."""
    for name in ("rkd", "sp", "dist"):
        got = run(name, outputs_for(name, 1, b=1), outputs_for(name, 2, b=1))
        assert all(math.isfinite(v) for v in got.values()), (name, got)


# ------------------------------------------------------------------ properties of every method


def outputs_for(name: str, seed: int, b: int = B) -> Outputs:
    """Logits plus features in the layout each method reads."""
    feats = {
        "at": lambda: spatial_pair(seed)[0],
        "sp": lambda: {"stage3": rand(seed, b, 4, 2, 2)},
        "rkd": lambda: {"embedding": rand(seed, b, 6)},
        "fitnets": lambda: {"stage1": rand(seed, b, 4, 3, 3)},
    }
    return Outputs(rand(seed + 100, b, K), feats.get(name, dict)())


@pytest.mark.parametrize("name", list(METHODS))
def test_identical_teacher_and_student_give_zero_loss(name):
    m = get_method(name)
    p = m.Params()
    s = outputs_for(name, 31)
    shapes = {k: tuple(v.shape[1:]) for k, v in s.features.items()}
    extra = m.modules(p, shapes, shapes)
    if name == "fitnets":
        with torch.no_grad():
            extra["regressor"].weight.copy_(torch.eye(4)[:, :, None, None])
            extra["regressor"].bias.zero_()
    got = m(s, s, p, extra, 4.0, labels(32))
    assert got and all(abs(v.item()) < 1e-3 for v in got.values()), got
    # ...while a different teacher gives a clearly positive loss.
    other = m(s, outputs_for(name, 77), p, extra, 4.0, labels(32))
    assert sum(v.item() for v in other.values()) > 1e-2


@pytest.mark.parametrize("name", list(METHODS))
def test_teacher_targets_are_per_sample_so_they_can_be_cached_by_index(name):
    m = get_method(name)
    p = m.Params()
    t = outputs_for(name, 33)
    whole = m.teacher_targets(t, p)
    rows = [
        m.teacher_targets(Outputs(t.logits[i : i + 1], {k: v[i : i + 1] for k, v in t.features.items()}), p)
        for i in range(B)
    ]
    torch.testing.assert_close(whole.logits, torch.cat([r.logits for r in rows]))
    for k in whole.features:
        torch.testing.assert_close(whole.features[k], torch.cat([r.features[k] for r in rows]))


@pytest.mark.parametrize("name", list(METHODS))
def test_gradients_match_finite_differences(name):
    """Every loss is differentiable in the student's outputs, in float64."""
    m = get_method(name)
    p = m.Params()
    s, t = outputs_for(name, 34, b=4), outputs_for(name, 35, b=4)
    s = Outputs(s.logits.double(), {k: v.double() for k, v in s.features.items()})
    t = Outputs(t.logits.double(), {k: v.double() for k, v in t.features.items()})
    shapes = {k: tuple(v.shape[1:]) for k, v in s.features.items()}
    extra = m.modules(p, shapes, {k: tuple(v.shape[1:]) for k, v in t.features.items()}).double()
    y = labels(36, 4)
    names = list(s.features)

    def f(logits, *feats):
        out = m(Outputs(logits, dict(zip(names, feats))), t, p, extra, 4.0, y)
        return sum(out.values())

    inputs = [s.logits.requires_grad_()] + [v.requires_grad_() for v in s.features.values()]
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-4)


# ------------------------------------------------------------------ registry, params, stages


def test_registry_describes_every_method():
    assert list(METHODS) == ["kd", "dkd", "dist", "logit_std", "fitnets", "at", "sp", "rkd"]
    for name, m in METHODS.items():
        assert m.name == name and m.title and m.family in FAMILIES
        assert any(ch.isdigit() for ch in m.paper)  # the citation has a year
        # The loss's docstring gives the formula, naming every term it returns, and the paper.
        first_author, year = m.paper.split()[0].rstrip(","), m.paper.rstrip(")")[-4:]
        assert f"({first_author}" in m.loss.__doc__ and year in m.loss.__doc__, name
        assert " = " in m.loss.__doc__.split("\n\n")[0]
        assert dataclasses.is_dataclass(m.Params) and m.Params.__dataclass_params__.frozen
        for info in param_info(m):
            assert info.help and info.type in ("float", "int", "bool", "str"), (name, info)


def test_paper_defaults():
    d = {n: dataclasses.asdict(get_method(n).Params()) for n in METHODS}
    assert d["dkd"] == {"alpha": 1.0, "beta": 8.0}
    assert d["at"]["beta"] == 1000.0 and d["at"]["p"] == 2.0
    assert d["rkd"]["distance"] == 25.0 and d["rkd"]["angle"] == 50.0
    assert d["sp"]["gamma"] == 3000.0
    assert d["dist"] == {"beta": 1.0, "gamma": 1.0}


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown distillation method 'dkdd'.*kd, dkd, dist"):
        get_method("dkdd")


@pytest.mark.parametrize(
    "text,params,want",
    [
        ("kd", [], (MethodSpec("kd"),)),
        ("dkd", ["beta=8"], (MethodSpec("dkd", 1.0, (("beta", 8.0),)),)),
        ("kd+at", [], (MethodSpec("kd"), MethodSpec("at"))),
        (
            "0.5*kd + 2*at",
            ["at.beta=500", "p=1"],
            (MethodSpec("kd", 0.5), MethodSpec("at", 2.0, (("beta", 500.0), ("p", 1.0)))),
        ),
        (
            "DKD+dist",
            ["dkd.beta=2", "dist.beta=3"],
            (MethodSpec("dkd", 1.0, (("beta", 2.0),)), MethodSpec("dist", 1.0, (("beta", 3.0),))),
        ),
    ],
)
def test_parse_methods(text, params, want):
    got = parse_methods(text, params)
    assert got == want
    assert parse_methods(format_methods(got), format_params(got)) == got  # round trip for reproduce commands


@pytest.mark.parametrize(
    "text,params,message",
    [
        ("", [], "not a method mix"),
        ("kd++at", [], "not a method mix"),
        ("x*kd", [], "weight 'x'"),
        ("-1*kd", [], "finite number >= 0"),
        ("0*kd", [], "weight 0"),
        ("kd+kd", [], "appears twice"),
        ("dkd+dist", ["beta=2"], r"several methods have 'beta' \(dkd, dist\); write e.g. dkd.beta=2"),
        ("kd", ["beta=2"], "no method in kd has a parameter 'beta'"),
        ("dkd", ["gamma=2"], "no method in dkd has"),
        ("dkd", ["at.beta=2"], "'at', which is not in the mix"),
        ("dkd", ["beta"], "not key=value"),
        ("dkd", ["beta=eight"], "dkd.beta must be a number"),
        ("dkd", ["beta=nan"], "finite"),
        ("dkd", ["beta=-1"], "beta must be >= 0"),
        ("at", ["p=0"], "p must be > 0"),
        ("fitnets", ["student_stage=stage1,stage2"], "must name one stage"),
    ],
)
def test_parse_methods_refuses_bad_input(text, params, message):
    with pytest.raises(ConfigError, match=message):
        parse_methods(text, params)


def test_validate_methods_checks_stored_specs():
    assert validate_methods((MethodSpec("dkd", 1.0, (("beta", 4),)),))[0].beta == 4.0
    for bad, message in [
        ((), "at least one method"),
        ((MethodSpec("nope"),), "unknown distillation method"),
        ((MethodSpec("kd", float("inf")),), "finite"),
        ((MethodSpec("kd", True),), "finite"),
        ((MethodSpec("dkd", 1.0, (("gamma", 1),)),), "has no parameter 'gamma'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            validate_methods(bad)


MLP = {"hidden1": (32,), "hidden2": (32,), "embedding": (32,)}
CNN = {"stage1": (8, 14, 14), "stage2": (16, 7, 7), "stage3": (32, 3, 3), "embedding": (32,)}


@pytest.mark.parametrize(
    "shapes,selector,want",
    [
        (CNN, "middle", ("stage2",)),
        (CNN, "last", ("stage3",)),
        (CNN, "spatial", ("stage1", "stage2", "stage3")),
        (CNN, "embedding", ("embedding",)),
        (CNN, "stage1,stage3", ("stage1", "stage3")),
        (CNN, "stage1,spatial", ("stage1", "stage2", "stage3")),
        (MLP, "middle", ("hidden1",)),
        (MLP, "last", ("hidden2",)),
        ({"embedding": (64,)}, "middle", ("embedding",)),
    ],
)
def test_resolve_stages(shapes, selector, want):
    assert resolve_stages((selector,), shapes, "x", "student") == want


def test_attention_transfer_on_an_mlp_is_refused_with_a_reason():
    with pytest.raises(ConfigError, match=r"method 'at' needs spatial feature maps.*student.*use a CNN student"):
        resolve_stages(get_method("at").needs(get_method("at").Params()).student_features, MLP, "at", "student")
    with pytest.raises(ConfigError, match="the teacher has no stage 'stage9'; its stages: stage1"):
        resolve_stages(("stage9",), CNN, "sp", "teacher")


def test_at_refuses_maps_of_different_sizes_or_counts():
    at = get_method("at")
    with pytest.raises(ConfigError, match=r"equal size.*7×7.*3×3"):
        at.check_shapes(at.Params(), {"stage2": (16, 7, 7)}, {"stage3": (32, 3, 3)})
    with pytest.raises(ConfigError, match="pairs stages"):
        at.check_shapes(at.Params(), {"stage1": (8, 14, 14)}, {"stage1": (8, 14, 14), "stage2": (16, 7, 7)})


# ------------------------------------------------------------------ configs


def test_old_configs_without_methods_load_as_kd():
    old = (
        '{"kind": "student", "distill": {"temperature": 3.0, "alpha": 0.7, "cache_teacher_logits": true},'
        ' "model": {"family": "mlp", "size": 16, "depth": 1}}'
    )
    cfg = RunConfig.from_json(old)
    assert cfg.distill == DistillConfig(3.0, 0.7, True, (MethodSpec("kd", 1.0, ()),))


def test_method_mix_round_trips_through_json():
    specs = parse_methods("0.5*kd+1*at", ["at.beta=500"])
    cfg = RunConfig(kind="student", distill=DistillConfig(methods=specs))
    back = RunConfig.from_json(cfg.to_json())
    assert back == cfg and hash(back) == hash(cfg)
