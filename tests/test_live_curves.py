"""The live view's curves from a job snapshot: smoothing against an independent EMA, the
components each kind of run shows, and readable log-axis ticks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kd_core.records import JobSnapshot, RunCurves
from kd_core.views import studio
from ui import charts


def snapshot(runs: dict[str, list[tuple]]) -> JobSnapshot:
    """A running job's snapshot with these runs' step points, as `Job.snapshot` returns it."""
    curves = tuple(RunCurves(label, label, steps, [], None) for label, steps in runs.items())
    return JobSnapshot("j1", "a job", "distill", "running", "", curves, (), {}, 0.0, None, False)


def ema(values: list[float], smooth: float) -> list[float]:
    """TensorBoard's debiased exponential moving average, written out as a loop."""
    out, acc, weight = [], 0.0, 0.0
    for v in values:
        acc = smooth * acc + (1 - smooth) * v
        weight = smooth * weight + (1 - smooth)
        out.append(acc / weight)
    return out


def test_every_named_term_is_a_curve_smoothed_like_an_ema():
    """A DKD + AT student: the total, CE and each method's terms, each its own curve."""
    rng = np.random.default_rng(0)
    names = ["ce", "tckd", "nckd", "at"]
    steps = [(i, rng.uniform(0.1, 3.0), dict(zip(names, rng.uniform(0.1, 3.0, 4)))) for i in range(50)]
    frame = studio.step_frame(snapshot({"student": steps}), smooth=0.8)
    assert sorted(frame["component"].unique()) == ["AT", "CE", "NCKD", "TCKD", "total"]
    for name, value in [("total", lambda s: s[1])] + [(n.upper(), lambda s, n=n: s[2][n]) for n in names]:
        got = frame[frame["component"] == name].sort_values("step")["loss"].to_numpy()
        assert np.allclose(got, ema([value(s) for s in steps], 0.8), rtol=1e-12)


def test_runs_without_a_teacher_show_only_their_total():
    student = [(i, 1.0 / (i + 1), {"ce": 0.5, "kd": 0.8}) for i in range(10)]
    baseline = [(i, 0.9 / (i + 1), {"ce": 0.9 / (i + 1)}) for i in range(10)]
    frame = studio.step_frame(snapshot({"student": student, "baseline": baseline}), smooth=0)
    shown = frame.groupby("run")["component"].unique().map(sorted).to_dict()
    assert shown == {"student": ["CE", "KD", "total"], "baseline": ["total"]}
    assert np.allclose(frame[frame["run"] == "baseline"]["loss"], [s[1] for s in baseline])


def test_term_labels_and_epoch_columns_per_term():
    assert [studio.term_label(n) for n in ("ce", "kd_std", "rkd_angle", "dist.inter")] == [
        "CE",
        "KD std",
        "RKD angle",
        "DIST.INTER",
    ]
    epochs = {
        "s": [{"epoch": 1, "loss": 2.0, "terms": {"ce": 1.5, "hint": 3.0}, "train_acc": 0.5, "val_acc": 0.4}],
        "b": [{"epoch": 1, "loss": 1.0, "terms": {"ce": 1.0}, "train_acc": 0.6, "val_acc": 0.5}],
    }
    curves = tuple(RunCurves(label, label, [], rows, None) for label, rows in epochs.items())
    snap = JobSnapshot("j1", "a job", "distill", "running", "", curves, (), {}, 0.0, None, False)
    frame = studio.epoch_frame(snap)
    assert list(frame.columns) == ["run", "epoch", "loss", "train_acc", "val_acc", "CE", "HINT"]
    assert frame["HINT"].isna().tolist() == [False, True] and frame["CE"].tolist() == [1.5, 1.0]


@pytest.mark.parametrize("low, high, want", [(0.01, 5.0, 1), (0.3, 0.9, None)])
def test_log_axis_ticks_at_decades_only_when_the_curve_spans_one(low, high, want):
    steps = pd.DataFrame({"step": [0, 1], "loss": [high, low], "component": "total", "run": "r"})
    assert charts.loss_curves(steps).layout.yaxis.dtick == want
