"""Divergence advice that works: the rate suggested after a run blows up is one that a short run
from the same start learned at, and a full run at it trains instead of diverging again."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from helpers import TEACHER_SPEC, make_config
from kd_core.config import LabelConfig
from kd_core.train.engine import fit


def suggested(message: str) -> float:
    found = re.search(r"try a learning rate of ([0-9.e+-]+)\.$", message)
    assert found, message
    return float(found.group(1))


@pytest.mark.parametrize("optimizer, lr", [("adam", 10.0), ("sgd", 1000.0)])
def test_the_suggested_rate_trains_where_one_notch_down_diverges(digits, optimizer, lr):
    cfg = make_config("teacher", TEACHER_SPEC, epochs=4, lr=lr, optimizer=optimizer)
    bad = fit(cfg, digits)
    assert bad.status == "failed" and "training diverged" in bad.message
    rate = suggested(bad.message)
    assert rate <= lr / 10
    one_notch = fit(replace(cfg, train=replace(cfg.train, lr=lr / 10)), digits)
    assert one_notch.status == "failed" or one_notch.best_val_acc < 0.5  # the old advice did not work
    good = fit(replace(cfg, train=replace(cfg.train, lr=rate)), digits)
    assert good.status == "finished" and good.best_val_acc > 0.85, (rate, good.best_val_acc)


def test_when_nothing_learns_the_message_says_so_instead_of_guessing(digits):
    cfg = make_config("teacher", TEACHER_SPEC, epochs=1, lr=1e30, optimizer="sgd")
    result = fit(cfg, digits)
    assert result.status == "failed"
    assert "did not learn either" in result.message and "try a learning rate" not in result.message


def test_advice_for_a_run_on_a_label_budget_larger_than_the_probes_subset(digits):
    """The probes train on the first 30 batches (120 rows at batch 4): a 500-label budget cannot be
    drawn there, so they train with every row of that subset labelled instead of failing on it."""
    cfg = make_config("teacher", TEACHER_SPEC, epochs=1, lr=1e30, optimizer="sgd", batch_size=4)
    cfg = replace(cfg, labels=LabelConfig(labels=500))
    result = fit(cfg, digits)
    assert result.status == "failed" and "training diverged" in result.message
    assert "did not learn either" in result.message or "try a learning rate" in result.message
    assert result.labels["labelled"] == 500
