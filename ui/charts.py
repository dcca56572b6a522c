"""Plotly figures for training curves, and traces the other chart modules share. Inputs are pandas
DataFrames from kd_core.views."""

from __future__ import annotations

import itertools

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import plotly.io as pio

DASH_SEQUENCE = ["solid", "dot", "dash", "longdash", "dashdot", "longdashdot"]  # plotly express's


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
        margin=dict(l=10, r=10, t=40, b=10),
        annotations=[dict(text=note, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")],
    )
    return fig


def _colorway() -> list:
    """The colours plotly express would use: the default template's colorway (Streamlit's own
    theme when it is loaded)."""
    template = pio.templates[pio.templates.default] if pio.templates.default else None
    colorway = template.layout.colorway if template is not None else None
    return list(colorway) if colorway else list(px.colors.qualitative.Plotly)


def _lines(df: pd.DataFrame, x: str, y: str, color: str, dash: str, mode: str) -> list[go.Scatter]:
    """One line per (color, dash) group, as `px.line(color=..., line_dash=...)` draws them,
    built directly: px costs 5-50 ms a figure (3 ms this way), and the live view redraws every second
    while the worker thread trains in the same process. Always SVG (px switches to WebGL
    above 1000 points, which costs a browser without a GPU far more)."""
    colors = {v: c for v, c in zip(dict.fromkeys(df[color]), itertools.cycle(_colorway()))}
    dashes = {v: d for v, d in zip(dict.fromkeys(df[dash]), itertools.cycle(DASH_SEQUENCE))}
    groups = df.groupby([color, dash], sort=False)
    traces = []
    for c, d in itertools.product(colors, dashes):
        if (c, d) not in groups.groups:
            continue
        part = groups.get_group((c, d))
        traces.append(
            go.Scatter(
                x=part[x].to_numpy(),
                y=part[y].to_numpy(),
                mode=mode,
                name=f"{c}, {d}",
                legendgroup=f"{c}, {d}",
                line=dict(color=colors[c], dash=dashes[d]),
                marker=dict(symbol="circle"),
                hovertemplate=f"{color}={c}<br>{dash}={d}<br>{x}=%{{x}}<br>{y}=%{{y}}<extra></extra>",
            )
        )
    return traces


def _curve_layout(title: str, x: str, yaxis: dict) -> dict:
    """The live curves' layout: both charts the same height, margins and legend."""
    return dict(
        title=title,
        height=340,
        margin=dict(l=10, r=10, t=40, b=10),
        xaxis_title=x,
        yaxis=yaxis,
        legend=dict(title_text="", tracegroupgap=0),
    )


def loss_curves(steps: pd.DataFrame) -> go.Figure:
    """Per-step loss components (smoothed), one colour per component, one dash per run."""
    if steps.empty:
        return _empty("Loss per step", "waiting for the first steps…")
    return go.Figure(
        _lines(steps, "step", "loss", "component", "run", "lines"),
        _curve_layout(
            "Loss per step (smoothed)", "step", dict(title="loss", type="log", dtick=_log_dtick(steps["loss"]))
        ),
    )


def _log_dtick(values: pd.Series):
    """Ticks at whole decades (0.1, 1, 10) when the curve spans more than one: plotly's default
    then labels the 2s and 5s between decades with a bare digit, which reads as a wrong value."""
    positive = values[values > 0]
    if positive.empty:
        return None
    return 1 if positive.max() / positive.min() > 10 else None


def accuracy_curves(epochs: pd.DataFrame) -> go.Figure:
    """Train and validation accuracy per epoch for each run."""
    if epochs.empty:
        return _empty("Accuracy per epoch", "the first epoch is running…")
    long = epochs.melt(
        id_vars=["run", "epoch"], value_vars=["train_acc", "val_acc"], var_name="split", value_name="accuracy"
    )
    long["split"] = long["split"].map({"train_acc": "train", "val_acc": "validation"})
    return go.Figure(
        _lines(long, "epoch", "accuracy", "run", "split", "lines+markers"),
        _curve_layout("Accuracy per epoch", "epoch", dict(title="accuracy")),
    )
