"""Headline comparisons state their uncertainty: kd_core.stats.accuracy_difference against
independent float64 computations, and the words Compare builds from it (kd_core.views.compare)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from kd_core import stats
from kd_core.config import DistillConfig
from kd_core.views import compare

N = 360


def test_one_seed_unpaired_noise_is_the_binomial_interval():
    a, b = 0.9694, 0.9722  # 349 and 350 of 360
    d = stats.accuracy_difference({0: a}, {0: b}, N)
    expected = 1.959963984540054 * math.sqrt((a * (1 - a) + b * (1 - b)) / N)
    assert d.noise == pytest.approx(expected, rel=1e-12)
    assert d.seeds == 1 and d.images == -1 and d.within_noise
    assert d.text().startswith("-0.0028 (-1 of 360 test images) · 1 seed · within noise (±")


def test_one_seed_paired_noise_matches_the_per_image_variance():
    """Two models whose every disagreement is one right and one wrong: the bound is exact."""
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 10, N)
    a_pred = truth.copy()
    b_pred = truth.copy()
    a_wrong = rng.choice(N, 20, replace=False)
    rest = np.setdiff1d(np.arange(N), a_wrong)
    b_wrong = rng.choice(rest, 8, replace=False)
    a_pred[a_wrong] = (truth[a_wrong] + 1) % 10
    b_pred[b_wrong] = (truth[b_wrong] + 1) % 10
    x = (a_pred == truth).astype(np.float64) - (b_pred == truth).astype(np.float64)
    se = math.sqrt(np.mean(x**2) - np.mean(x) ** 2) / math.sqrt(N)
    disagreement = float(np.mean(a_pred != b_pred))
    acc_a, acc_b = float(np.mean(a_pred == truth)), float(np.mean(b_pred == truth))
    d = stats.accuracy_difference({3: acc_a}, {3: acc_b}, N, disagreement=disagreement)
    assert d.noise == pytest.approx(1.959963984540054 * se, rel=1e-9)
    assert d.images == -12 and not d.within_noise  # 12 images against a ±~5-image interval
    assert "beyond noise" in d.text()


def test_several_seeds_use_the_paired_t_interval():
    a = {0: 0.97, 1: 0.975, 2: 0.965, 3: 0.98}
    b = {0: 0.96, 1: 0.97, 2: 0.967, 3: 0.97, 9: 0.5}  # seed 9 has no partner: left out
    d = stats.accuracy_difference(a, b, N)
    diffs = np.array([a[s] - b[s] for s in (0, 1, 2, 3)], dtype=np.float64)
    half = sps.t.ppf(0.975, 3) * diffs.std(ddof=1) / math.sqrt(4)
    assert d.seeds == 4 and d.diff == pytest.approx(diffs.mean(), abs=1e-15)
    assert d.noise == pytest.approx(half, rel=1e-12)
    p = sps.ttest_rel(list(a.values()), [b[s] for s in a]).pvalue
    assert d.p == pytest.approx(p, rel=1e-12) and d.within_noise == (p >= 0.05)
    assert "· 4 seeds ·" in d.text() and f"p={p:.2g}" in d.text()


def test_no_common_seed_says_so():
    d = stats.accuracy_difference({0: 0.9}, {1: 0.8}, N)
    assert d.seeds == 0 and d.text() == "no comparable result"


@pytest.mark.parametrize(
    "distill, name",
    [
        (None, "KD"),
        ({"temperature": 4, "alpha": 0.9}, "KD"),
        ({"methods": [{"name": "dkd", "weight": 1.0}]}, "DKD"),
        ({"methods": [{"name": "kd"}, {"name": "at", "weight": 1.0}]}, "KD+AT"),
        ({"methods": [{"name": "kd", "weight": 0.5}, {"name": "at", "weight": 1.0}]}, "0.5×KD+1×AT"),
    ],
)
def test_method_names(distill, name):
    assert compare.method_name(None if distill is None else DistillConfig.from_dict(distill)) == name


def test_short_names_add_only_what_tells_runs_apart():
    facts = [
        {"id": "t1", "kind": "teacher", "model": "mlp 512", "method": None, "T": None, "lam": None, "seed": 0},
        {"id": "s1", "kind": "student", "model": "mlp 32", "method": "KD", "T": 4.0, "lam": 0.9, "seed": 0},
        {"id": "s2", "kind": "student", "model": "mlp 32", "method": "KD", "T": 2.0, "lam": 0.9, "seed": 0},
        {"id": "b1", "kind": "baseline", "model": "mlp 32", "method": None, "T": None, "lam": None, "seed": 0},
        {"id": "b2xx", "kind": "baseline", "model": "mlp 32", "method": None, "T": None, "lam": None, "seed": 0},
    ]
    assert compare.short_names(facts) == ["teacher", "student T=4", "student T=2", "baseline ·b1", "baseline ·b2xx"]


# ---------------------------------------------------------------- the Deployment headline


def deploy_result(int8_ms: float, int8_acc: float, agreement: float = 0.99) -> dict:
    """A complete measurement of a student: teacher, student and student-int8 under eager
    PyTorch and ONNX Runtime at batch 1 and 256 (times in ms), float32 ONNX the fastest float."""
    times = {
        ("teacher", "eager"): (0.5, 20.0),
        ("teacher", "onnxruntime"): (0.3, 15.0),
        ("student", "eager"): (0.03, 0.5),
        ("student", "onnxruntime"): (0.0096, 0.2),
        ("student-int8", "eager"): (0.05, 0.6),
        ("student-int8", "onnxruntime"): (int8_ms, 0.3),
    }
    sizes = {"teacher": 2_000_000, "student": 40_000, "student-int8": 12_000}
    rows = [
        {"model": m, "runtime": r, "precision": "int8" if "int8" in m else "float32", "batch_size": b,
         "median_ms": ms, "p90_ms": ms * 1.2, "bytes": sizes[m]}
        for (m, r), pair in times.items() for b, ms in zip((1, 256), pair)
    ]  # fmt: skip
    quant = [
        {"precision": "float32", "runtime": "eager", "test_acc": 0.95, "agreement": 1.0},
        {"precision": "int8", "runtime": "eager", "test_acc": 0.95, "agreement": 0.995},
        {"precision": "float32", "runtime": "onnxruntime", "test_acc": 0.95, "agreement": 1.0},
        {"precision": "int8", "runtime": "onnxruntime", "test_acc": int8_acc, "agreement": agreement},
    ]
    return {
        "kind": "student",
        "models": ["teacher", "student", "student-int8"],
        "accuracy": {"teacher": 0.97, "student": 0.95},
        "batch_sizes": [1, 256],
        "rows": rows,
        "quantization": {"rows": quant, "samples": N},
        "complete": True,
    }


def test_the_fastest_equal_option_wins_and_a_slower_int8_is_shown_for_its_size():
    from kd_core.views import deploy as dep

    hl = dep.headline(deploy_result(int8_ms=0.0219, int8_acc=0.95))
    final = hl["final"]
    assert (final["model"], final["precision"], final["runtime"]) == ("student", "float32", "ONNX Runtime")
    assert hl["speedup"][1] == pytest.approx(0.5 / 0.0096) and hl["size_ratio"] == pytest.approx(50.0)
    assert hl["smallest"]["bytes"] == 12_000 and hl["smallest"]["precision"] == "int8"
    assert hl["accuracy"].diff == pytest.approx(0.95 - 0.97) and hl["accuracy"].images == round(-0.02 * N)
    assert hl["choices"] == 4


def test_a_faster_int8_wins_only_at_equal_accuracy():
    from kd_core.views import deploy as dep

    equal = dep.headline(deploy_result(int8_ms=0.005, int8_acc=0.9472, agreement=0.99))  # -1 image of 360
    assert (equal["final"]["precision"], equal["final"]["runtime"]) == ("int8", "ONNX Runtime")
    assert equal["smallest"] is None  # the headline already is the int8 file
    worse = dep.headline(deploy_result(int8_ms=0.005, int8_acc=0.90, agreement=0.94))  # -18 images
    assert (worse["final"]["precision"], worse["final"]["runtime"]) == ("float32", "ONNX Runtime")
    noise = 1.959963984540054 * math.sqrt((0.06 - 0.05**2) / N)  # paired bound, in float64 here
    assert noise < 0.05  # what made it unequal


def with_bf16(result: dict, ms: float, acc: float | None, agreement: float = 0.99) -> dict:
    """`result` plus the float student under eager bf16 at `ms` (batch 1), its accuracy
    measured on the test split as `acc` (None: not measured)."""
    rows = [
        {"model": "student", "runtime": "eager-bf16", "precision": "bfloat16", "batch_size": b,
         "median_ms": t, "p90_ms": t * 1.2, "bytes": 40_000}
        for b, t in ((1, ms), (256, 0.4))
    ]  # fmt: skip
    quant = (
        []
        if acc is None
        else [{"precision": "bfloat16", "runtime": "eager-bf16", "test_acc": acc, "agreement": agreement}]
    )
    return {
        **result,
        "rows": result["rows"] + rows,
        "quantization": {**result["quantization"], "rows": result["quantization"]["rows"] + quant},
    }


def test_a_faster_bf16_wins_only_at_equal_accuracy_measured_in_bf16():
    from kd_core.views import deploy as dep

    base = deploy_result(int8_ms=0.0219, int8_acc=0.95)
    equal = dep.headline(with_bf16(base, ms=0.004, acc=0.9472))  # -1 image of 360, agreement 0.99
    assert (equal["final"]["precision"], equal["final"]["runtime"]) == ("bfloat16", "eager PyTorch, bf16")
    assert equal["final"]["acc"] == 0.9472 and equal["choices"] == 5
    worse = dep.headline(with_bf16(base, ms=0.004, acc=0.90, agreement=0.94))  # -18 images
    assert (worse["final"]["precision"], worse["final"]["runtime"]) == ("float32", "ONNX Runtime")
    unmeasured = dep.headline(with_bf16(base, ms=0.004, acc=None))  # timed, accuracy never measured
    opt = next(o for o in dep.options(with_bf16(base, ms=0.004, acc=None)) if o["precision"] == "bfloat16")
    assert opt["acc"] is None and not opt["equal"]
    assert unmeasured["final"]["precision"] == "float32"
