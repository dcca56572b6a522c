"""kd_core.fmt: a gain that rounds to zero prints without a minus sign, everywhere it is shown.

Accuracies pass through float32, and a mean over seeds of gains that cancel is a few
1e-18 either side of zero: `f"{x:+.4f}"` printed such a value as "-0.0000".
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from kd_core import fmt
from kd_core.deploy.runtimes import quantization_markdown
from kd_core.stats import paired_test, summarize

TINY_NEGATIVE = (-2.4e-8, -1e-18, -0.0, -4.9e-5, np.float32(-3e-8), np.float64(-1e-12))


@pytest.mark.parametrize("value", TINY_NEGATIVE)
def test_a_value_that_rounds_to_zero_has_no_minus_sign(value):
    assert f"{float(value):+.4f}" == "-0.0000"  # what the old format strings printed
    assert fmt.signed(value) == "+0.0000"
    assert fmt.num(value) == "0.0000"
    assert fmt.num(value, 2, sign=True) == "+0.00"
    r = fmt.rounded(value)
    assert r == 0.0 and not math.copysign(1.0, r) < 0


@pytest.mark.parametrize(
    "value, signed, plain",
    [
        (0.01234, "+0.0123", "0.0123"),
        (-0.01236, "-0.0124", "-0.0124"),
        (-5.1e-5, "-0.0001", "-0.0001"),
        (0.0, "+0.0000", "0.0000"),
        (3, "+3.0000", "3.0000"),
        (np.float32(0.5), "+0.5000", "0.5000"),
    ],
)
def test_other_values_print_as_the_format_would(value, signed, plain):
    assert fmt.signed(value) == signed == f"{float(value):+.4f}"
    assert fmt.num(value) == plain == f"{float(value):.4f}"


def test_missing_values_and_infinities():
    for missing in (None, float("nan"), np.float32("nan")):
        assert fmt.signed(missing) == "—" and fmt.num(missing, missing="n/a") == "n/a"
        assert fmt.rounded(missing) is None if missing is None else math.isnan(fmt.rounded(missing))
    assert fmt.signed(math.inf) == "+inf" and fmt.signed(-math.inf) == "-inf"
    assert fmt.rounded_all([-1e-9, None, 0.123456, -0.5]) == [0.0, None, 0.1235, -0.5]
    assert all(math.copysign(1.0, v) > 0 for v in fmt.rounded_all([-1e-9, -0.0]))


def test_seed_summaries_and_verdicts_use_it():
    gains = [0.0055, -0.0055, 0.0030, -0.0030 - 1e-17]  # mean a hair below zero
    assert np.mean(gains) < 0
    text = summarize(gains).text()
    assert text.startswith("0.0000 ± ") and "-0.0000" not in text
    assert summarize([-1e-9]).text() == "0.0000 (n=1)"
    # a constant gain a little below zero: zero variance, so no verdict, but said without "-0.0000"
    res = paired_test([0.90003 - 3e-5] * 3, [0.90003] * 3)
    assert res.significant is None and "the gain is +0.0000 on every one" in res.reason
    spread = paired_test([0.5, 0.5101, 0.4899 - 2e-6], [0.5, 0.51, 0.49])
    assert "-0.0000" not in spread.reason and "mean gain +0.0000" in spread.reason


def test_quantization_table_and_sweep_heatmap_cells_use_it():
    from ui.experiment_charts import _cell_text

    row = {
        "model": "student",
        "runtime": "eager",
        "method": "dynamic",
        "test_acc": 0.9,
        "acc_delta": -1e-9,
        "agreement": 1.0,
        "bytes": 1000,
        "size_ratio": 1.0,
        "median_ms_b1": 0.1,
        "speedup_vs_float": 1.0,
    }
    lines = quantization_markdown({"batch_sizes": [1], "rows": [row]})
    assert "| +0.0000 |" in lines[-1] and "-0.0000" not in "\n".join(lines)
    assert _cell_text(-1e-18, 0.004, 3, signed=True) == "+0.000 ± 0.004<br>n=3"
    assert _cell_text(-1e-18, float("nan"), 1) == "0.000<br>n=1"
    assert _cell_text(-0.0004, 0.004, 3, signed=True, second="p=0.42") == "+0.000 ± 0.004<br>p=0.42"
