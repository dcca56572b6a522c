"""Plotly figures for training curves. Inputs are pandas DataFrames from kd_core.studio."""
from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

DASH = {"student": "solid", "baseline": "dash", "teacher": "solid"}


def _empty(title: str, note: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=title, height=320, margin=dict(l=10, r=10, t=40, b=10),
                      annotations=[dict(text=note, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")])
    return fig


def loss_curves(steps: pd.DataFrame) -> go.Figure:
    """Per-step loss components (smoothed), one colour per component, one dash per run."""
    if steps.empty:
        return _empty("Loss per step", "waiting for the first steps…")
    fig = px.line(steps, x="step", y="loss", color="component", line_dash="run",
                  title="Loss per step (smoothed)", log_y=True)
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=40, b=10), legend_title_text="")
    return fig


def accuracy_curves(epochs: pd.DataFrame) -> go.Figure:
    """Train and validation accuracy per epoch for each run."""
    if epochs.empty:
        return _empty("Accuracy per epoch", "the first epoch is running…")
    long = epochs.melt(id_vars=["run", "epoch"], value_vars=["train_acc", "val_acc"],
                       var_name="split", value_name="accuracy")
    long["split"] = long["split"].map({"train_acc": "train", "val_acc": "validation"})
    fig = px.line(long, x="epoch", y="accuracy", color="run", line_dash="split", markers=True,
                  title="Accuracy per epoch")
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=40, b=10), legend_title_text="")
    return fig
