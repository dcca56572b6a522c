"""Results over seeds: mean ± std with the count, and the paired test of a gain.

A single training run's accuracy moves by a point or more with the seed, so a
configuration is shown as mean ± sample std over its seeds, with n. Whether
distillation beats the no-KD baseline is judged on the per-seed differences
(student and baseline trained from the same seed), with a paired t-test,
`scipy.stats.ttest_rel`. Pure numbers in, plain dataclasses out: no torch, so
the dashboard's pages may call it directly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from kd_core.fmt import num, signed

TEST_NAME = "paired t-test over seeds (scipy.stats.ttest_rel)"
# Accuracies pass through float32, whose rounding near 1 is about 6e-8, so a gain
# that is really the same on every seed differs in the 8th decimal. Differences
# that spread less than this are treated as constant rather than as a huge t.
ZERO_SPREAD = 1e-6


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation (ddof=1) of n values; std is NaN for n < 2."""

    mean: float
    std: float
    n: int

    def text(self, digits: int = 4) -> str:
        if self.n == 0:
            return "no runs"
        if self.n == 1:
            return f"{num(self.mean, digits)} (n=1)"
        return f"{num(self.mean, digits)} ± {num(self.std, digits)} (n={self.n})"

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(values: Sequence[float]) -> Summary:
    """Summary of the finite values (a failed run's NaN is not a result)."""
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return Summary(float("nan"), float("nan"), 0)
    std = float(np.std(x, ddof=1)) if len(x) > 1 else float("nan")
    return Summary(float(np.mean(x)), std, len(x))


@dataclass(frozen=True)
class PairedTest:
    """The gain treated − control over paired seeds, and whether it is significant.

    `significant` is None when the test cannot give a verdict; `reason` says why,
    or states the result in words.
    """

    n: int
    mean_diff: float
    std_diff: float
    t: float
    p: float
    significant: bool | None
    reason: str
    alpha: float = 0.05
    test: str = TEST_NAME

    def to_dict(self) -> dict:
        return asdict(self)


def pair_by_seed(
    treated: Mapping[int, float], control: Mapping[int, float]
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """The seeds both sides have a finite result for, and the two aligned arrays."""
    seeds = sorted(s for s in treated.keys() & control.keys() if _finite(treated[s]) and _finite(control[s]))
    a = np.asarray([treated[s] for s in seeds], dtype=np.float64)
    b = np.asarray([control[s] for s in seeds], dtype=np.float64)
    return seeds, a, b


def _finite(v) -> bool:
    return v is not None and math.isfinite(v)


def paired_test(treated: Sequence[float], control: Sequence[float], alpha: float = 0.05) -> PairedTest:
    """Paired t-test of treated − control (two-sided), with the cases it cannot judge.

    n < 2 has no spread to compare the mean difference against; differences that
    are the same on every seed make t infinite (or 0/0), which says more about
    too few or too coarse measurements than about the gain, so both get no
    verdict but a reason. Identical results on every seed are "no difference".
    """
    a, b = np.asarray(treated, dtype=np.float64), np.asarray(control, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have the same length, got {len(a)} and {len(b)}")
    d = a - b
    n = len(d)
    if n == 0:
        return PairedTest(
            0,
            float("nan"),
            float("nan"),
            float("nan"),
            float("nan"),
            None,
            "no seed has both a distilled and a baseline result",
            alpha,
        )
    mean, std = float(d.mean()), float(d.std(ddof=1)) if n > 1 else float("nan")
    if n < 2:
        return PairedTest(
            1,
            mean,
            std,
            float("nan"),
            float("nan"),
            None,
            "one seed only: a paired test needs at least 2 seeds to estimate the spread",
            alpha,
        )
    if std <= ZERO_SPREAD:
        return _constant_difference(n, mean, std, alpha)
    from scipy import stats

    res = stats.ttest_rel(a, b)
    t, p = float(res.statistic), float(res.pvalue)
    significant = p < alpha
    word = "significant" if significant else "not significant"
    return PairedTest(
        n,
        mean,
        std,
        t,
        p,
        significant,
        f"{word} at {alpha:g}: mean gain {signed(mean)}, t={t:.3g}, p={p:.3g}, n={n}",
        alpha,
    )


def _constant_difference(n: int, mean: float, std: float, alpha: float) -> PairedTest:
    if abs(mean) <= ZERO_SPREAD:
        return PairedTest(n, mean, std, float("nan"), 1.0, False, f"identical on all {n} seeds: no difference", alpha)
    return PairedTest(
        n,
        mean,
        std,
        math.copysign(math.inf, mean),
        float("nan"),
        None,
        f"the gain is {signed(mean)} on every one of the {n} seeds (zero variance), so the "
        "t-test is undefined; more seeds or a larger evaluation split would tell",
        alpha,
    )
