"""Plotly figures for training curves, and traces the other chart modules share. Inputs are pandas
DataFrames from kd_core.views.

Colours and dashes follow ui/colors.py: a run's role colours its own total loss and its
accuracy curves; each loss term has its colour; train is solid, validation dashed. Legends
sit below the plot, so at narrow widths they never cover the curves.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ui import colors

MARGIN = dict(l=10, r=10, t=40, b=10)
LEGEND_MARGIN = dict(MARGIN, b=colors.LEGEND_MARGIN)
EMPTY_NOTES = {
    "running": "the first epoch is running…",
    "stopped": "stopped before the first epoch ended",
    "failed": "failed before the first epoch ended",
    "finished": "no epoch was recorded",
}


def pareto_trace(front: pd.DataFrame, x: str, y: str, line: dict) -> go.Scatter:
    """A Pareto front as the staircase it is (no point between two runs is reachable), unhovered."""
    return go.Scatter(
        x=front[x], y=front[y], mode="lines", line_shape="hv", line=line, name="Pareto front", hoverinfo="skip"
    )


def _empty(title: str, note: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(
        title=title,
        height=320,
        margin=MARGIN,
        xaxis_visible=False,
        yaxis_visible=False,
        annotations=[dict(text=note, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")],
    )
    return fig


def _line(x, y, name: str, color: str, dash: str, mode: str, hover: str, width: float = 2.0) -> go.Scatter:
    """One curve, built directly: px costs 5-50 ms a figure (3 ms this way), and the live view
    redraws every second while the worker thread trains in the same process. Always SVG (px
    switches to WebGL above 1000 points, which costs a browser without a GPU far more)."""
    return go.Scatter(
        x=np.asarray(x),
        y=np.asarray(y),
        mode=mode,
        name=name,
        legendgroup=name,
        line=dict(color=color, dash=dash, width=width),
        marker=dict(symbol="circle", size=6),
        hovertemplate=hover,
    )


def _curve_layout(title: str, xaxis: dict, yaxis: dict, **extra) -> dict:
    """The live curves' layout: both charts the same height, margins and legend."""
    return dict(
        title=title,
        height=400,
        margin=LEGEND_MARGIN,
        xaxis=xaxis,
        yaxis=yaxis,
        legend=dict(colors.LEGEND_BELOW, tracegroupgap=0),
        **extra,
    )


def _term_color(component: str, run: str) -> str:
    """A run's own total loss in its role's colour; a named term in the term's colour."""
    return colors.role_color(colors.role_of(run)) if component == "total" else colors.term_color(component)


def _diverged(steps: pd.DataFrame) -> str | None:
    """Words for the first non-finite loss (a diverged run), or None."""
    bad = steps[~np.isfinite(steps["loss"].astype(float))]
    if bad.empty:
        return None
    first = bad.sort_values("step").iloc[0]
    return f"{first['run']}: {first['component']} loss not finite from step {int(first['step'])} (diverged)"


def loss_curves(steps: pd.DataFrame) -> go.Figure:
    """Per-step loss (smoothed) on a log axis: each run's total in its role's colour and, for a
    distilled student, each loss term in its own colour; all training (solid). Steps whose loss
    is not finite or not positive are left out, and a diverged run is named on the chart."""
    if steps.empty:
        return _empty("Loss per step", "waiting for the first steps…")
    diverged = _diverged(steps)
    shown = steps[np.isfinite(steps["loss"].astype(float)) & (steps["loss"].astype(float) > 0)]
    several = steps["run"].nunique() > 1
    traces = []
    # The totals first and wide, the terms on top and thin: at λ near 1 a student's total runs along
    # its KD term, which it would otherwise hide.
    order = shown.assign(_term=shown["component"] != "total").sort_values("_term", kind="mergesort")
    for (run, component), part in order.groupby(["run", "component"], sort=False):
        if component == "total":  # the run's own loss: named (and coloured) as the run
            name = run
        else:
            name = f"{run} · {component}" if several else component
        traces.append(
            _line(
                part["step"],
                part["loss"],
                name,
                _term_color(component, run),
                colors.TRAIN_DASH,
                "lines",
                f"{run} · {component}<br>step %{{x}}<br>loss %{{y:.4g}}<extra></extra>",
                width=1.5 if component != "total" else 4.0,
            )
        )
    notes = [dict(text=diverged, showarrow=False, x=0, y=1.0, xref="paper", yref="paper", xanchor="left")]
    return go.Figure(
        traces,
        _curve_layout(
            "Loss per step (smoothed)",
            dict(title="step"),
            dict(title="loss", type="log", dtick=_log_dtick(shown["loss"])),
            annotations=notes if diverged else [],
        ),
    )


def _log_dtick(values: pd.Series):
    """Ticks at whole decades (0.1, 1, 10) when the curve spans more than one: plotly's default
    then labels the 2s and 5s between decades with a bare digit, which reads as a wrong value."""
    positive = values[values > 0]
    if positive.empty:
        return None
    return 1 if positive.max() / positive.min() > 10 else None


def accuracy_curves(epochs: pd.DataFrame, status: str = "running") -> go.Figure:
    """Train (solid) and validation (dashed) accuracy per epoch, each run in its role's colour.
    Without an epoch, the note says why: still running, or stopped or failed before one ended."""
    if epochs.empty:
        return _empty("Accuracy per epoch", EMPTY_NOTES.get(status, EMPTY_NOTES["running"]))
    traces = []
    for run, part in epochs.groupby("run", sort=False):
        color = colors.role_color(colors.role_of(run))
        for column, split, dash in (
            ("train_acc", "train", colors.TRAIN_DASH),
            ("val_acc", "validation", colors.VALIDATION_DASH),
        ):
            traces.append(
                _line(
                    part["epoch"],
                    part[column],
                    f"{run}, {split}",
                    color,
                    dash,
                    "lines+markers",
                    f"{run}, {split}<br>epoch %{{x}}<br>accuracy %{{y:.4f}}<extra></extra>",
                )
            )
    dtick = 1 if epochs["epoch"].max() <= 12 else None
    return go.Figure(
        traces,
        _curve_layout("Accuracy per epoch", dict(title="epoch", dtick=dtick), dict(title="accuracy")),
    )
