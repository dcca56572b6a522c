"""The Methods page's chart: each method's mean accuracy over seeds with ± std error bars.

Points, not bars: the differences between methods are a point or two, so the axis starts near
the data, and a bar on a cut axis would make a small gap look like half a bar."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go

from ui import colors

# The roles' colours (ui/colors.py): the no-KD baseline vermillion, distilled students green;
# the marked best is the student's colour with a ring, the one thing that stands out.
BASE_COLOUR, METHOD_COLOUR = colors.ROLE["baseline"], colors.ROLE["student"]


def leaderboard_bars(table: pd.DataFrame, metric_name: str, baseline: str) -> go.Figure:
    """A point per entry at its mean (the baseline vermillion, methods green, the marked best
    ringed), error bars: sample std over seeds; the baseline's mean as a thin grey line across,
    so a gain inside the points' spread reads as noise."""
    shown = table[table["n"] > 0]
    colours = [BASE_COLOUR if m == baseline else METHOD_COLOUR for m in shown["method"]]
    fig = go.Figure(
        go.Scatter(
            x=shown["method"],
            y=shown["mean"],
            mode="markers+text",
            error_y=dict(type="data", array=shown["std"].fillna(0).tolist(), visible=True),
            marker=dict(
                color=colours,
                size=[16 if best else 11 for best in shown["best"]],
                line=dict(color=colors.NEUTRAL, width=[3 if best else 0 for best in shown["best"]]),
            ),
            text=[f"n={n}" for n in shown["n"]],
            textposition="middle right",
            hovertemplate="%{x}: %{y:.4f} ± %{error_y.array:.4f}<extra></extra>",
        )
    )
    base = table[table["method"] == baseline]
    if len(base) and base["n"].iloc[0] > 0 and not math.isnan(base["mean"].iloc[0]):
        fig.add_hline(y=float(base["mean"].iloc[0]), line=dict(color=colors.NEUTRAL, width=1))
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
