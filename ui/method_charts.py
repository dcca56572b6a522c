"""The Methods page's chart: each method's mean accuracy over seeds with ± std error bars."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go

BASE_COLOUR, METHOD_COLOUR, BEST_COLOUR = "#9e9e9e", "#4c78a8", "#f58518"


def leaderboard_bars(table: pd.DataFrame, metric_name: str, baseline: str) -> go.Figure:
    """Bars: mean per entry (the baseline grey, the marked best orange), error bars: sample std over
    seeds; the baseline's mean as a dotted line, so a gain inside the bars' spread reads as noise."""
    shown = table[table["n"] > 0]
    colours = [
        BASE_COLOUR if m == baseline else BEST_COLOUR if best else METHOD_COLOUR
        for m, best in zip(shown["method"], shown["best"])
    ]
    fig = go.Figure(
        go.Bar(
            x=shown["method"],
            y=shown["mean"],
            error_y=dict(type="data", array=shown["std"].fillna(0).tolist(), visible=True),
            marker_color=colours,
            text=[f"n={n}" for n in shown["n"]],
            textposition="inside",
            hovertemplate="%{x}: %{y:.4f} ± %{error_y.array:.4f}<extra></extra>",
        )
    )
    base = table[table["method"] == baseline]
    if len(base) and base["n"].iloc[0] > 0 and not math.isnan(base["mean"].iloc[0]):
        fig.add_hline(y=float(base["mean"].iloc[0]), line_dash="dot", line_color=BASE_COLOUR)
    lo = (shown["mean"] - shown["std"].fillna(0)).min() if len(shown) else 0.0
    hi = (shown["mean"] + shown["std"].fillna(0)).max() if len(shown) else 1.0
    pad = max(0.01, (hi - lo) * 0.3) if len(shown) else 0.0
    fig.update_layout(
        title=f"{metric_name}: mean ± std over seeds",
        yaxis=dict(title=metric_name, range=[max(0.0, lo - pad), min(1.0, hi + pad)] if len(shown) else None),
        showlegend=False,
        margin=dict(t=50, b=40, l=50, r=20),
        height=360,
    )
    return fig
