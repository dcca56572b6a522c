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
from numpy.typing import ArrayLike

from kd_core.fmt import num, signed

SIGNIFICANCE = 0.05  # the level a p-value is judged at (α in the UI; never λ, the distillation weight)
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
    level: float = SIGNIFICANCE  # the significance level the verdict is at
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


def paired_test(treated: ArrayLike, control: ArrayLike, level: float = SIGNIFICANCE) -> PairedTest:
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
            level,
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
            level,
        )
    if std <= ZERO_SPREAD:
        return _constant_difference(n, mean, std, level)
    from scipy import stats

    res = stats.ttest_rel(a, b)
    t, p = float(res.statistic), float(res.pvalue)
    significant = p < level
    word = "significant" if significant else "not significant"
    return PairedTest(
        n,
        mean,
        std,
        t,
        p,
        significant,
        f"{word} at {level:g}: mean gain {signed(mean)}, t={t:.3g}, p={p:.3g}, n={n}",
        level,
    )


def _constant_difference(n: int, mean: float, std: float, level: float) -> PairedTest:
    if abs(mean) <= ZERO_SPREAD:
        return PairedTest(n, mean, std, float("nan"), 1.0, False, f"identical on all {n} seeds: no difference", level)
    return PairedTest(
        n,
        mean,
        std,
        math.copysign(math.inf, mean),
        float("nan"),
        None,
        f"the gain is {signed(mean)} on every one of the {n} seeds (zero variance), so the "
        "t-test is undefined; more seeds or a larger evaluation split would tell",
        level,
    )


# ---------------------------------------------------------------- one comparison, with its noise

Z95 = 1.959963984540054  # two-sided 95% normal quantile


@dataclass(frozen=True)
class Difference:
    """Accuracy a − b on a test set of `n_test` images, over `seeds` paired seeds, with the
    half-width of its 95% interval (`noise`, in accuracy) and how that was estimated (`basis`).

    One seed: the test set's own sampling noise, from the share of images on which the two
    models can differ in correctness: at most the share where their top-1 disagrees
    (`disagreement`, when known: paired), else each accuracy's binomial variance (unpaired,
    wider). Several seeds: the paired t-test over seeds, whose spread includes the seed's effect.
    """

    diff: float
    n_test: int
    seeds: int
    noise: float
    within_noise: bool
    basis: str
    p: float = float("nan")

    @property
    def images(self) -> int:
        """The difference in test images (a − b correct), rounded from the mean over seeds."""
        return round(self.diff * self.n_test) if self.n_test else 0

    def text(self) -> str:
        """'−0.0028 (−1 of 360 test images) · 1 seed · within noise (±5 images, 95%)'."""
        if not math.isfinite(self.diff):
            return "no comparable result"
        seeds = f"{self.seeds} seed{'s' if self.seeds != 1 else ''}"
        verdict = "within noise" if self.within_noise else "beyond noise"
        noise = f"±{self.noise * self.n_test:.0f} images, 95%" if self.n_test and math.isfinite(self.noise) else ""
        if math.isfinite(self.p):
            noise = f"{noise}; p={self.p:.2g}" if noise else f"p={self.p:.2g}"
        return f"{signed(self.diff)} ({self.images:+d} of {self.n_test} test images) · {seeds} · {verdict}" + (
            f" ({noise})" if noise else ""
        )


def sampling_noise(acc_a: float, acc_b: float, n_test: int, disagreement: float | None = None) -> float:
    """Half-width of the 95% interval of acc_a − acc_b from the test set's sampling alone.

    Per image the paired difference X is −1, 0 or 1; Var X = P(X ≠ 0) − Δ². X ≠ 0 needs the
    top-1 predictions to differ, so P(X ≠ 0) ≤ `disagreement` (an upper bound: paired).
    Without it, the unpaired variance a(1 − a) + b(1 − b)."""
    if n_test <= 0:
        return float("nan")
    delta = acc_a - acc_b
    if disagreement is not None and math.isfinite(disagreement):
        var = max(disagreement - delta * delta, 0.0)
    else:
        var = acc_a * (1 - acc_a) + acc_b * (1 - acc_b)
    return Z95 * math.sqrt(var / n_test)


def accuracy_difference(
    a: Mapping[int, float],
    b: Mapping[int, float],
    n_test: int,
    disagreement: float | None = None,
    level: float = SIGNIFICANCE,
) -> Difference:
    """a − b (accuracies by seed) with its uncertainty: see `Difference`. `disagreement` is the
    share of test images where the two top-1 predictions differ (used for one seed only)."""
    seeds, x, y = pair_by_seed(a, b)
    if not seeds:
        return Difference(float("nan"), n_test, 0, float("nan"), True, "no seed with both results")
    if len(seeds) == 1:
        noise = sampling_noise(float(x[0]), float(y[0]), n_test, disagreement)
        diff = float(x[0] - y[0])
        basis = "test-set sampling, " + ("paired by image" if disagreement is not None else "unpaired")
        return Difference(diff, n_test, 1, noise, abs(diff) <= noise, basis)
    test = paired_test(x, y, level)
    if test.significant is None:  # the same difference on every seed: judge it by the test set's noise
        noise = sampling_noise(float(x.mean()), float(y.mean()), n_test * len(seeds))
        return Difference(test.mean_diff, n_test, len(seeds), noise, abs(test.mean_diff) <= noise, test.reason)
    from scipy import stats

    half = float(stats.t.ppf(1 - level / 2, len(seeds) - 1)) * test.std_diff / math.sqrt(len(seeds))
    return Difference(test.mean_diff, n_test, len(seeds), half, not test.significant, TEST_NAME, test.p)
