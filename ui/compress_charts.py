"""Plotly figures for the Compress page: validation accuracy against latency (or size) for every
trial of a study, drawn from kd_core.views.compress_view.study_state.

Each kind of trial keeps one look: trained and meeting the goal (the student's colour), trained
but missing it (hollow), stopped early by the pruner (×, at the last accuracy it reported), and
over the budget (▽ on the bottom edge: timed, never trained). The teacher is a star, the chosen
student is ringed, the Pareto front is a grey staircase, and the goal's bounds are dashed lines.
"""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go

from ui import charts
from ui.colors import NEUTRAL, ROLE

MARGIN = dict(l=10, r=10, t=50, b=10)
AXES = {
    "latency": ("latency_ms", "latency (ms, log)", "Accuracy vs latency"),
    "size": ("size_mb", "size (MB, log)", "Accuracy vs size"),
}


def _hover(df: pd.DataFrame) -> list[str]:
    return [
        f"trial {n}: {label}<br>{state}" + (f" — {why}" if isinstance(why, str) and why else "")
        for n, label, state, why in zip(df["number"], df["label"], df["state"], df["why"])
    ]


def _points(fig: go.Figure, df: pd.DataFrame, x: str, y: str, name: str, marker: dict) -> None:
    if len(df):
        fig.add_trace(
            go.Scatter(
                x=df[x], y=df[y], mode="markers", name=name, marker=marker, hovertext=_hover(df), hoverinfo="text+x+y"
            )
        )


def _bottom(state: dict, rows: pd.DataFrame) -> float:
    """Where the untrained (over-budget) trials sit: just below every accuracy drawn."""
    ys = [v for v in [*rows["val_acc"], *rows["last_reported_acc"]] if isinstance(v, float) and math.isfinite(v)]
    ref = state["reference"]
    low = min([*ys, ref["val_acc"] if ref else 1.0, state["floor_acc"] or 1.0])
    return low - 0.03


def pareto_figure(state: dict, which: str) -> go.Figure:
    """Every trial's validation accuracy against latency ("latency") or size ("size")."""
    x, x_title, title = AXES[which]
    rows = state["rows"]
    fig = go.Figure()
    if len(rows):
        done = rows[rows["state"] == "complete"]
        _points(fig, done[done["feasible"]], x, "val_acc", "meets the goal", dict(size=10, color=ROLE["student"]))
        _points(
            fig,
            done[~done["feasible"]],
            x,
            "val_acc",
            "trained, misses the goal",
            dict(size=10, color="rgba(0,0,0,0)", line=dict(width=2, color=ROLE["student"])),
        )
        pruned = rows[(rows["state"] == "pruned") & (rows["pruned_by"] == "pruner")]
        _points(fig, pruned, x, "last_reported_acc", "stopped by the pruner", dict(size=10, symbol="x", color=NEUTRAL))
        over = rows[(rows["state"] == "pruned") & (rows["pruned_by"] == "budget")].assign(bottom=_bottom(state, rows))
        _points(
            fig, over, x, "bottom", "over budget (not trained)", dict(size=9, symbol="triangle-down", color=NEUTRAL)
        )
        front = state["fronts"][which]
        if len(front) > 1:
            fig.add_trace(charts.pareto_trace(front, x, "val_acc", dict(color=NEUTRAL, dash="dot")))
    _teacher_and_choice(fig, state, x)
    _bounds(fig, state, which)
    fig.update_xaxes(type="log")
    fig.update_layout(
        title=title,
        height=400,
        margin=MARGIN,
        xaxis_title=x_title,
        yaxis_title="validation accuracy",
        legend_title_text="",
    )
    return fig


def _teacher_and_choice(fig: go.Figure, state: dict, x: str) -> None:
    ref, pick = state["reference"], state["chosen"]
    if ref:
        fig.add_trace(
            go.Scatter(
                x=[ref[x]],
                y=[ref["val_acc"]],
                mode="markers",
                name="teacher",
                marker=dict(size=16, symbol="star", color=ROLE["teacher"]),
                hovertext=[f"teacher {ref['teacher_id']}"],
                hoverinfo="text+x+y",
            )
        )
    if pick is not None:
        fig.add_trace(
            go.Scatter(
                x=[pick[x]],
                y=[pick["val_acc"]],
                mode="markers",
                name="chosen student",
                marker=dict(size=22, color="rgba(0,0,0,0)", line=dict(width=3, color=ROLE["student"])),
                hovertext=[f"chosen: trial {pick['number']}, {pick['label']}"],
                hoverinfo="text+x+y",
            )
        )


def _bounds(fig: go.Figure, state: dict, which: str) -> None:
    """The goal as dashed lines: the lowest accuracy allowed, and the latency or size budget."""
    line = dict(color=NEUTRAL, dash="dash", width=1)
    if state["floor_acc"] is not None:
        fig.add_hline(y=state["floor_acc"], line=line, annotation_text="accuracy floor", annotation_position="top left")
    bound = state["budget_ms"] if which == "latency" else state["config"].goal.max_size_mb
    if bound:
        fig.add_vline(x=bound, line=line, annotation_text="budget", annotation_position="top right")
