"""The dashboard benchmark's verdict on its target from the pairs of repeats (benchmarks/bench_dashboard.py)."""

from __future__ import annotations

import importlib.util
import sys

from helpers import REPO

_spec = importlib.util.spec_from_file_location("bench_dashboard", REPO / "benchmarks" / "bench_dashboard.py")
bench = sys.modules["bench_dashboard"] = importlib.util.module_from_spec(_spec)  # its dataclasses look it up
_spec.loader.exec_module(bench)


def test_pairs_are_repeat_i_over_repeat_i():
    dashboard, cli = [4.4, 5.0, 3.9], [4.0, 4.0, 4.2]
    assert bench.pair_ratios(dashboard, cli) == [4.4 / 4.0, 5.0 / 4.0, 3.9 / 4.2]


def test_the_verdict_needs_every_pair_on_one_side_of_the_target():
    assert bench.verdict([1.02, 1.10, 1.15]) == "met (75%)"  # 1 - 2 * 0.5**3
    assert bench.verdict([1.16, 1.30, 1.20, 1.18, 1.40]) == "missed (94%)"  # 1 - 2 * 0.5**5 = 0.9375
    assert bench.verdict([1.05, 1.12, 1.19]) == "within noise"
    assert bench.verdict([1.30]) == "n/a (1 pair)"  # one pair says nothing about the noise


def test_the_spread_shows_the_median_pair_and_its_range():
    assert bench.spread([1.30, 1.10, 1.20, 0.95, 1.25]) == "1.20× [0.95–1.30]"
