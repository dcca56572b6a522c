"""Mean ± std over seeds and the paired test, against sums written out by hand."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from kd_core.stats import ZERO_SPREAD, pair_by_seed, paired_test, summarize


def hand_mean_std(xs):
    n = len(xs)
    mean = sum(xs) / n
    return mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))


def hand_paired_t(a, b):
    d = [x - y for x, y in zip(a, b)]
    mean, sd = hand_mean_std(d)
    t = mean / (sd / math.sqrt(len(d)))
    return t, 2 * sps.t.sf(abs(t), len(d) - 1)


def test_summary_is_mean_and_sample_std_with_count():
    xs = [0.91, 0.93, 0.96, 0.90]
    s = summarize(xs)
    mean, std = hand_mean_std(xs)
    assert s.n == 4
    assert s.mean == pytest.approx(mean, abs=1e-15)
    assert s.std == pytest.approx(std, abs=1e-15)
    assert s.text() == f"{mean:.4f} ± {std:.4f} (n=4)"


def test_summary_skips_missing_results_and_has_no_std_for_one_value():
    s = summarize([0.5, float("nan"), None])
    assert (s.mean, s.n) == (0.5, 1) and math.isnan(s.std)
    assert s.text() == "0.5000 (n=1)"
    empty = summarize([])
    assert empty.n == 0 and math.isnan(empty.mean) and empty.text() == "no runs"


@pytest.mark.parametrize(
    "a, b",
    [
        ([0.85, 0.86, 0.83, 0.88], [0.80, 0.82, 0.79, 0.81]),  # a clear gain
        ([0.81, 0.80, 0.84], [0.80, 0.82, 0.79]),  # a noisy one
        ([0.70, 0.75], [0.72, 0.71]),  # two seeds
    ],
)
def test_paired_test_matches_hand_computed_t_and_p(a, b):
    res = paired_test(a, b)
    t, p = hand_paired_t(a, b)
    mean_d, sd_d = hand_mean_std([x - y for x, y in zip(a, b)])
    assert res.n == len(a)
    assert res.mean_diff == pytest.approx(mean_d, abs=1e-15)
    assert res.std_diff == pytest.approx(sd_d, abs=1e-15)
    assert res.t == pytest.approx(t, rel=1e-12)
    assert res.p == pytest.approx(p, rel=1e-9)
    assert res.significant is bool(p < 0.05)
    assert "ttest_rel" in res.test and "paired" in res.test


def test_clear_gain_is_significant_and_noise_is_not():
    assert paired_test([0.85, 0.86, 0.83, 0.88], [0.80, 0.82, 0.79, 0.81]).significant is True
    res = paired_test([0.81, 0.80, 0.84], [0.80, 0.82, 0.79])
    assert res.significant is False and res.reason.startswith("not significant")


def test_pairing_is_by_seed_not_by_position():
    """The test must differ from an unpaired one: pairs matter, so a shuffle changes the answer."""
    treated = {2: 0.90, 0: 0.80, 1: 0.70, 5: 0.99}  # seed 5 has no baseline
    control = {0: 0.78, 1: 0.69, 2: 0.87, 3: 0.50}  # seed 3 has no student
    seeds, a, b = pair_by_seed(treated, control)
    assert seeds == [0, 1, 2]
    np.testing.assert_array_equal(a, [0.80, 0.70, 0.90])
    np.testing.assert_array_equal(b, [0.78, 0.69, 0.87])
    t, _ = hand_paired_t(a, b)
    assert paired_test(a, b).t == pytest.approx(t)
    assert sps.ttest_ind(a, b).statistic != pytest.approx(t)


def test_pairing_drops_seeds_without_a_finite_result():
    seeds, a, b = pair_by_seed({0: 0.8, 1: float("nan"), 2: None}, {0: 0.7, 1: 0.7, 2: 0.7})
    assert seeds == [0] and a.tolist() == [0.8] and b.tolist() == [0.7]


def test_fewer_than_two_pairs_give_no_verdict_and_say_why():
    one = paired_test([0.9], [0.8])
    assert one.significant is None and one.n == 1
    assert one.mean_diff == pytest.approx(0.1) and math.isnan(one.p)
    assert "2 seeds" in one.reason
    none = paired_test([], [])
    assert none.significant is None and none.n == 0 and "no seed" in none.reason


def test_the_same_gain_on_every_seed_gives_no_verdict():
    # accuracies that went through float32: the nominal gain 3/144 is not bit-identical per seed
    a = np.float32([130 / 144, 120 / 144, 101 / 144]).astype(np.float64)
    b = np.float32([127 / 144, 117 / 144, 98 / 144]).astype(np.float64)
    assert 0 < np.std(a - b, ddof=1) < ZERO_SPREAD
    res = paired_test(a, b)
    assert res.significant is None
    assert res.t == math.inf and "zero variance" in res.reason
    # the metric may be test or validation accuracy: the message names neither split
    assert "larger evaluation split" in res.reason and "validation" not in res.reason


def test_identical_results_are_no_difference():
    res = paired_test([0.8, 0.9, 0.7], [0.8, 0.9, 0.7])
    assert res.significant is False and res.p == 1.0 and "no difference" in res.reason


def test_unequal_lengths_are_an_error():
    with pytest.raises(ValueError):
        paired_test([0.1, 0.2], [0.1])
