"""Plotly figures for the Deployment section of the Compare page.

Inputs are kd_core.views.deploy's frames; nothing here reads the store or imports torch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ui import colors

# The bar's colour is the model's role (int8: a lighter shade of it); its hatching, the runtime.
RUNTIME_PATTERNS = {"eager": "", "torchscript": "/", "onnxruntime": "x", "onnxruntime-cuda": ".", "eager-bf16": "-"}
MARGIN = dict(l=10, r=10, t=80, b=10)


def model_color(model: str) -> str:
    """'student' -> the student's colour; 'student-int8' -> a lighter shade of it."""
    role, _, variant = model.partition("-")
    base = colors.role_color(role)
    return colors.lighter(base) if variant else base


def _spans_decades(values) -> bool:
    v = pd.Series(values, dtype=float)
    v = v[v > 0]
    return bool(len(v)) and float(v.max() / v.min()) >= 10


def times(x) -> str:
    """A speed-up as text: 0.42×, 3.1×, 27×."""
    if x is None or not np.isfinite(x):
        return ""
    return f"{x:.2g}×" if x < 10 else f"{x:.0f}×"


def latency_bars(frame: pd.DataFrame, batch_sizes: list[int]) -> go.Figure:
    """One panel per batch size: x = model (teacher, student, student-int8), a bar per runtime,
    height = median latency, whisker up to the p90; the label is the speed-up over the teacher
    in eager PyTorch at that batch size. A panel whose bars span a factor of 10 or more has a
    log axis (a student 30× faster than its teacher stays visible). `frame` is
    deploy_ui.latency_frame."""
    models = list(dict.fromkeys(frame["model"]))
    fig = make_subplots(
        rows=1, cols=len(batch_sizes), subplot_titles=[f"batch {b}" for b in batch_sizes], horizontal_spacing=0.07
    )
    for col, batch in enumerate(batch_sizes, start=1):
        at_batch = frame[frame["batch_size"] == batch]
        for runtime, part in at_batch.groupby("runtime", sort=False):
            part = part.set_index("model").reindex([m for m in models if m in set(part["model"])])
            med, p90 = part["median_ms"], part["p90_ms"]
            speedup = part["speedup_vs_teacher_eager"].astype(float)
            fig.add_trace(
                go.Bar(
                    x=part.index,
                    y=med,
                    name=part["runtime_label"].iloc[0],
                    legendgroup=runtime,
                    showlegend=False,  # the legend's own neutral swatches below name the hatching
                    marker=dict(
                        color=[model_color(m) for m in part.index],
                        pattern=dict(shape=RUNTIME_PATTERNS.get(runtime, ""), fgcolor=colors.NEUTRAL, solidity=0.3),
                        line=dict(color=colors.NEUTRAL, width=0.5),
                    ),
                    error_y=dict(
                        type="data",
                        symmetric=False,
                        array=(p90 - med).clip(lower=0),
                        arrayminus=np.zeros(len(part)),
                        thickness=1.2,
                        width=3,
                    ),
                    text=[times(s) for s in speedup],
                    textposition="inside",
                    insidetextanchor="end",
                    textangle=0,
                    textfont=dict(size=11),
                    customdata=np.column_stack([p90, speedup.fillna(np.nan), part["samples_per_s"]]),
                    hovertemplate=(
                        f"%{{x}} · {part['runtime_label'].iloc[0]} · batch {batch}<br>"
                        "median %{y:.4g} ms, p90 %{customdata[0]:.4g} ms<br>"
                        "%{customdata[1]:.2f}× the teacher in eager PyTorch<br>"
                        "%{customdata[2]:,.0f} samples/s<extra></extra>"
                    ),
                ),
                row=1,
                col=col,
            )
    for runtime, label in dict(zip(frame["runtime"], frame["runtime_label"])).items():
        fig.add_trace(  # a legend entry only: the runtime's hatching on grey, not a model's colour
            go.Bar(
                x=[None],
                y=[None],
                name=label,
                legendgroup=runtime,
                marker=dict(
                    color="rgba(0,0,0,0)",
                    pattern=dict(shape=RUNTIME_PATTERNS.get(runtime, ""), fgcolor=colors.NEUTRAL, solidity=0.5),
                    line=dict(color=colors.NEUTRAL, width=1),
                ),
            ),
            row=1,
            col=1,
        )
    for col, batch in enumerate(batch_sizes, start=1):
        at_batch = frame[frame["batch_size"] == batch]
        if _spans_decades(pd.concat([at_batch["median_ms"], at_batch["p90_ms"]])):
            fig.update_yaxes(type="log", dtick=1, row=1, col=col)
        else:
            fig.update_yaxes(rangemode="tozero", row=1, col=col)
    fig.update_yaxes(title_text="ms (median, whisker to p90)", row=1, col=1)
    fig.update_layout(
        title=dict(
            text="Latency by runtime<br><sup>colour: the model · hatching: the runtime · bar labels: "
            "speed-up over the teacher in eager PyTorch at the same batch size</sup>"
        ),
        height=480,
        margin=dict(MARGIN, b=colors.LEGEND_MARGIN),
        barmode="group",
        legend=dict(colors.LEGEND_BELOW, title_text="runtime"),
        uniformtext=dict(minsize=9, mode="hide"),
    )
    return fig
