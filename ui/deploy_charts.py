"""Plotly figures for the Deployment section of the Compare page.

Inputs are kd_core.views.deploy's frames; nothing here reads the store or imports torch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

RUNTIME_COLORS = {"eager": "#636EFA", "torchscript": "#AB63FA", "onnxruntime": "#FFA15A", "onnxruntime-cuda": "#19D3F3"}
MARGIN = dict(l=10, r=10, t=80, b=10)


def times(x) -> str:
    """A speed-up as text: 0.42×, 3.1×, 27×."""
    if x is None or not np.isfinite(x):
        return ""
    return f"{x:.2g}×" if x < 10 else f"{x:.0f}×"


def latency_bars(frame: pd.DataFrame, batch_sizes: list[int]) -> go.Figure:
    """One panel per batch size: x = model (teacher, student, student-int8), a bar per runtime,
    height = median latency, whisker up to the p90; the label is the speed-up over the teacher
    in eager PyTorch at that batch size. `frame` is deploy_ui.latency_frame."""
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
                    showlegend=col == 1,
                    marker_color=RUNTIME_COLORS.get(runtime),
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
    fig.update_yaxes(title_text="ms (median, whisker to p90)", row=1, col=1)
    fig.update_yaxes(rangemode="tozero")
    fig.update_layout(
        title=dict(
            text="Latency by runtime<br><sup>bar labels: speed-up over the teacher "
            "in eager PyTorch at the same batch size</sup>"
        ),
        height=420,
        margin=MARGIN,
        barmode="group",
        legend_title_text="",
        uniformtext=dict(minsize=9, mode="hide"),
    )
    return fig
