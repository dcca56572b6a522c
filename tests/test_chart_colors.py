"""The charts speak ui/colors.py's language: a role keeps its colour on every chart, loss terms
keep theirs, train is solid and validation dashed; a diverged run and an empty chart say what
happened; heatmap colour scales are no narrower than the sampling noise of one comparison."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from kd_core.views import compare as compare_view
from ui import charts, colors, compare_charts, experiment_charts, method_charts


def steps_frame(runs: dict[str, dict[str, list[float]]]) -> pd.DataFrame:
    rows = [
        {"step": i, "component": comp, "loss": v, "run": run}
        for run, comps in runs.items()
        for comp, values in comps.items()
        for i, v in enumerate(values)
    ]
    return pd.DataFrame(rows)


def test_loss_chart_colours_the_runs_total_by_role_and_each_term_by_its_own():
    fig = charts.loss_curves(
        steps_frame({"student": {"total": [2, 1], "CE": [1, 0.5], "KD": [3, 2]}, "baseline": {"total": [2, 1.5]}})
    )
    got = {t.name: (t.line.color, t.line.dash) for t in fig.data}
    assert got == {
        "student": (colors.ROLE["student"], "solid"),
        "student · CE": (colors.TERM["ce"], "solid"),
        "student · KD": (colors.TERM["kd"], "solid"),
        "baseline": (colors.ROLE["baseline"], "solid"),
    }
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.yref == "container"  # under the plot


def test_a_diverged_run_is_named_and_its_non_finite_steps_left_out():
    fig = charts.loss_curves(steps_frame({"student": {"total": [2.0, 1.0, float("nan"), float("inf")]}}))
    assert list(fig.data[0].y) == [2.0, 1.0]
    assert "not finite from step 2 (diverged)" in fig.layout.annotations[0].text


@pytest.mark.parametrize(
    "status, note",
    [("running", "is running"), ("stopped", "stopped before"), ("failed", "failed before")],
)
def test_an_empty_accuracy_chart_says_why(status, note):
    fig = charts.accuracy_curves(pd.DataFrame(columns=["run", "epoch", "train_acc", "val_acc"]), status)
    assert note in fig.layout.annotations[0].text


def test_accuracy_chart_train_solid_validation_dashed_in_the_role_colour():
    epochs = pd.DataFrame({"run": ["teacher"] * 2, "epoch": [1, 2], "train_acc": [0.5, 0.7], "val_acc": [0.4, 0.6]})
    fig = charts.accuracy_curves(epochs)
    assert {(t.name, t.line.color, t.line.dash) for t in fig.data} == {
        ("teacher, train", colors.ROLE["teacher"], "solid"),
        ("teacher, validation", colors.ROLE["teacher"], "dash"),
    }


def test_runs_overlay_uses_shades_of_each_role():
    curves = pd.DataFrame(
        {
            "label": ["s1", "s2", "t"],
            "kind": ["student", "student", "teacher"],
            "epoch": [1, 1, 1],
            "loss": [1.0, 1.0, 1.0],
            "val_acc": [0.5, 0.5, 0.5],
        }
    )
    fig = experiment_charts.curves_overlay(curves)
    val = {t.name: (t.line.color, t.line.dash) for t in fig.data if t.showlegend is not False}
    assert val["t"] == (colors.ROLE["teacher"], "dash")
    assert {val["s1"][0], val["s2"][0]} == set(colors.shades("student", 2))
    assert all(t.line.dash == "solid" for t in fig.data if t.showlegend is False)  # training loss


def test_compare_bars_and_scatter_use_role_colours_and_a_neutral_front_and_ring():
    table = pd.DataFrame(
        {
            "id": ["t", "s", "b"],
            "kind": ["teacher", "student", "baseline"],
            "name": ["teacher", "student", "baseline"],
            "title": ["t", "s", "b"],
            "test_acc": [0.97, 0.96, 0.95],
            "size_mb": [1.0, 0.01, 0.01],
            "b1_median_ms": [1.0, 0.03, 0.03],
            "b1_p90_ms": [1.2, 0.04, 0.04],
            "b256_median_ms": [30.0, 0.2, 0.2],
            "b256_p90_ms": [31.0, 0.3, 0.3],
        }
    )
    bars = compare_charts.metric_bars(table, "test_acc", "Test accuracy", "accuracy")
    assert {t.name: t.marker.color for t in bars.data} == colors.ROLE
    latency = compare_charts.latency_bars(table)
    assert latency.layout.yaxis.type == "log" and latency.layout.yaxis2.type == "log"  # 30 ms vs 0.2 ms
    runs = table.assign(label=table["title"], params=1, teacher_id=None, is_teacher_in_use=[True, False, False])
    front = compare_view.pareto_front(runs, "size_mb", "test_acc")
    scatter = compare_charts.pareto_scatter(runs, front, "size_mb", "size", "Accuracy vs size")
    by_name = {t.name: t for t in scatter.data}
    assert by_name["Pareto front"].line.color == colors.NEUTRAL
    assert by_name["teacher in use"].marker.line.color == colors.NEUTRAL
    assert by_name["student"].marker.color == colors.ROLE["student"]


def test_per_class_bars_take_the_colour_of_the_better_model():
    diff = pd.DataFrame({"class": ["0", "1"], "teacher": [0.9, 0.9], "student": [0.95, 0.85]})
    diff["difference"] = diff["student"] - diff["teacher"]
    fig = compare_charts.per_class_bars(diff, "student")
    assert list(fig.data[0].marker.color) == [colors.ROLE["student"], colors.ROLE["teacher"]]


def test_heatmap_scales_span_at_least_the_noise_of_one_comparison():
    """A 0.967–0.972 grid on 360 test images: the scale spans at least ±1.96·sqrt(2p(1−p)/n)."""
    values = np.array([0.967, 0.9694, 0.972])
    p = values.mean()
    noise = 1.959963984540054 * math.sqrt(2 * p * (1 - p) / 360)
    lo, hi = experiment_charts.colour_range(values, diverging=False, floor=experiment_charts.noise_floor(p, 360))
    assert hi - lo == pytest.approx(2 * noise, rel=1e-9) and lo < 0.967 and hi > 0.972
    lo, hi = experiment_charts.colour_range(np.array([-0.0056, 0.0028]), True, experiment_charts.noise_floor(p, 360))
    assert (lo, hi) == pytest.approx((-noise, noise), rel=1e-9)  # a 2-image gain stays pale
    wide = np.array([0.5, 0.9])
    assert experiment_charts.colour_range(wide, False, 0.02) == pytest.approx((0.5, 0.9))  # real spread kept


def test_leaderboard_points_baseline_vermillion_methods_green_only_the_best_ringed():
    table = pd.DataFrame(
        {
            "method": ["baseline", "kd", "dist"],
            "n": [3, 3, 0],  # dist has no finished run yet: left out
            "mean": [0.90, 0.93, float("nan")],
            "std": [0.01, 0.02, float("nan")],
            "best": [False, True, False],
        }
    )
    fig = method_charts.leaderboard_bars(table, "test accuracy", "baseline")
    [points] = fig.data
    assert points.type == "scatter" and list(points.x) == ["baseline", "kd"]  # points: the axis is cut
    assert list(points.marker.color) == [colors.ROLE["baseline"], colors.ROLE["student"]]
    assert list(points.marker.line.width) == [0, 3]
    assert list(points.error_y.array) == [0.01, 0.02]
    [line] = fig.layout.shapes  # the baseline's mean across, solid: dashes mean validation
    assert line.y0 == 0.90 and line.line.color == colors.NEUTRAL and line.line.dash in (None, "solid")
