"""Plotly figures for the Compare and Soft targets pages.

Inputs are the DataFrames and dicts of kd_core.views.compare and
kd_core.views.studio.soft_target_view; nothing here reads the store.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ui import charts, colors

KIND_COLORS = colors.ROLE
MARGIN = dict(l=10, r=10, t=50, b=10)
LEGEND_MARGIN = dict(MARGIN, b=colors.LEGEND_MARGIN)


def _bar_names(table: pd.DataFrame) -> list[str]:
    """Bar labels: the short names of kd_core.views.compare (kind, then what tells runs apart)."""
    return list(table["name"]) if "name" in table else [str(k) for k in table["kind"]]


def spans_decades(values) -> bool:
    """True when the positive values span a factor of 10 or more: a log axis shows them all."""
    v = pd.Series(values, dtype=float)
    v = v[v > 0]
    return bool(len(v)) and float(v.max() / v.min()) >= 10


def metric_bars(
    table: pd.DataFrame, column: str, title: str, axis: str, fmt: str = ".3f", log: bool = False
) -> go.Figure:
    """One bar per run of the compare table, coloured by kind (teacher, student, baseline)."""
    df = table.assign(name=_bar_names(table))
    fig = px.bar(
        df,
        x="name",
        y=column,
        color="kind",
        color_discrete_map=KIND_COLORS,
        title=title,
        text_auto=fmt,
        log_y=log,
        hover_data={"title": True, "id": True, "name": False} if "title" in df else {"id": True, "name": False},
    )
    # inside the bar when the number fits, above it when not (a student's sliver on a log axis)
    fig.update_traces(textangle=0, textposition="auto", insidetextanchor="end", cliponaxis=False)
    fig.update_layout(height=360, margin=MARGIN, xaxis_title="", yaxis_title=axis, showlegend=False)
    if log:
        fig.update_yaxes(dtick=1)  # one tick per power of ten
    if column == "test_acc":  # bars from 0: a cut axis made a point of accuracy look like half the bar
        fig.update_yaxes(range=[0.0, 1.0])
    return fig


def latency_bars(table: pd.DataFrame) -> go.Figure:
    """Median latency at batch 1 and at batch 256 side by side; the whisker reaches the p90."""
    df = table.assign(name=_bar_names(table))
    fig = make_subplots(rows=1, cols=2, subplot_titles=("batch 1", "batch 256"))
    for col, batch in enumerate(("b1", "b256"), start=1):
        for kind, part in df.groupby("kind", sort=False):
            med, p90 = part[f"{batch}_median_ms"], part[f"{batch}_p90_ms"]
            fig.add_trace(
                go.Bar(
                    x=part["name"],
                    y=med,
                    name=kind,
                    legendgroup=kind,
                    showlegend=col == 1,
                    marker_color=KIND_COLORS.get(kind),
                    error_y=dict(
                        type="data", symmetric=False, array=(p90 - med).clip(lower=0), arrayminus=np.zeros(len(part))
                    ),
                    hovertemplate="%{x}<br>median %{y:.3f} ms<extra></extra>",
                ),
                row=1,
                col=col,
            )
    for col, batch in enumerate(("b1", "b256"), start=1):
        values = pd.concat([df[f"{batch}_median_ms"], df[f"{batch}_p90_ms"]])
        if spans_decades(values):  # a student 30× faster than its teacher stays visible
            fig.update_yaxes(type="log", dtick=1, row=1, col=col)
    fig.update_yaxes(title_text="ms (median, whisker to p90)", row=1, col=1)
    fig.update_layout(title="Latency", height=380, margin=MARGIN, barmode="group", showlegend=False)
    return fig


def pareto_scatter(runs: pd.DataFrame, front: pd.DataFrame, x: str, x_title: str, title: str) -> go.Figure:
    """Test accuracy against `x` for every stored run (colour = kind), the teacher in use
    ringed, and the Pareto front (most accurate for its cost) as a staircase."""
    fig = px.scatter(
        runs,
        x=x,
        y="test_acc",
        color="kind",
        color_discrete_map=KIND_COLORS,
        log_x=True,
        hover_data={"label": True, "id": True, "params": ":,"},
        title=title,
    )
    fig.update_traces(marker=dict(size=10, opacity=0.9))
    if not front.empty:
        fig.add_trace(charts.pareto_trace(front, x, "test_acc", dict(color=colors.NEUTRAL, width=2)))
    mine = runs[runs["is_teacher_in_use"]]
    if not mine.empty:
        fig.add_trace(
            go.Scatter(
                x=mine[x],
                y=mine["test_acc"],
                mode="markers",
                name="teacher in use",
                marker=dict(size=20, color="rgba(0,0,0,0)", line=dict(width=3, color=colors.NEUTRAL)),
                hoverinfo="skip",
            )
        )
    xs = runs[x][runs[x] > 0]
    if len(xs) and xs.max() / xs.min() >= 10:
        fig.update_xaxes(dtick=1)  # spans decades: label the powers of ten only
    fig.update_layout(
        height=460, margin=LEGEND_MARGIN, xaxis_title=x_title, yaxis_title="test accuracy", legend=colors.LEGEND_BELOW
    )
    return fig


def confusion_heatmap(cm: np.ndarray, classes: list[str], title: str, zmax: float) -> go.Figure:
    """Counts, rows = true class, columns = predicted; a shared `zmax` makes two comparable."""
    fig = px.imshow(
        cm,
        x=classes,
        y=classes,
        text_auto=True,
        color_continuous_scale=colors.scale(colors.SEQUENTIAL),  # light cells under dark text
        zmin=0,
        zmax=zmax,
        labels=dict(x="predicted", y="true", color="images"),
        title=title,
        aspect="equal",
    )
    fig.update_traces(textfont=dict(color=colors.CELL_TEXT))
    fig.update_xaxes(type="category", side="bottom")
    fig.update_yaxes(type="category")
    fig.update_layout(height=460, margin=MARGIN)
    return fig


def per_class_bars(diff: pd.DataFrame, who: str) -> go.Figure:
    """`who` (student or baseline) − teacher accuracy per class: the bar takes the colour of
    whichever model does better on that class."""
    better = np.where(diff["difference"] >= 0, colors.role_color(who), colors.role_color("teacher"))
    fig = go.Figure(
        go.Bar(
            x=diff["class"],
            y=diff["difference"],
            marker_color=better,
            customdata=diff[["teacher", "student"]].to_numpy(),
            hovertemplate="%{x}: %{y:+.3f}<br>teacher %{customdata[0]:.3f}, "
            + who
            + " %{customdata[1]:.3f}<extra></extra>",
        )
    )
    fig.add_hline(y=0, line_color=colors.NEUTRAL)
    fig.update_layout(
        title=f"Per-class accuracy: {who} − teacher (bar colour: the better of the two)",
        height=340,
        margin=MARGIN,
        xaxis_title="class",
        yaxis_title="Δ accuracy",
        xaxis_type="category",
    )
    return fig


def soft_target_bars(view: dict, names: dict | None = None, student_kind: str = "student") -> go.Figure:
    """softmax(z/T) over the classes: teacher and student side by side; the true class is starred.
    `names` maps "teacher"/"student" to legend entries; the second model's bars take the colour
    of its role (`student_kind`: a baseline shown there is drawn as a baseline)."""
    names = names or {}
    classes = [f"{c} ★" if c == view["label"] else str(c) for c in view["classes"]]
    fig = go.Figure()
    for name in ("teacher", "student"):
        if name in view:
            fig.add_trace(
                go.Bar(
                    x=classes,
                    y=view[name]["probs"],
                    name=names.get(name, name),
                    marker_color=colors.role_color("teacher" if name == "teacher" else student_kind),
                    hovertemplate="%{x}: %{y:.4f}<extra>" + name + "</extra>",
                )
            )
    fig.update_layout(
        title=f"Soft targets at T = {view['temperature']:g} (★ = true class)",
        barmode="group",
        height=420,
        margin=dict(MARGIN, b=colors.LEGEND_MARGIN),
        xaxis_title="class",
        yaxis_title="probability",
        xaxis_type="category",
        yaxis_range=[0, 1],
        legend=colors.LEGEND_BELOW,
    )
    return fig


def enlarge(img: np.ndarray, side: int = 224) -> np.ndarray:
    """A small image scaled up by whole pixels (nearest neighbour), so 8×8 digits stay crisp."""
    factor = max(1, side // max(img.shape[:2]))
    return img.repeat(factor, axis=0).repeat(factor, axis=1)
