"""Plotly figures for the Runs and Sweep pages. Inputs are pandas tables from kd_core
(runs_table.curves_frame, sweep_results.sweep_grids)."""
from __future__ import annotations

import math
from typing import Optional

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from kd_core import fmt

MARGIN = dict(l=10, r=10, t=60, b=10)
METRIC_NAMES = {"best_val_acc": "best validation accuracy", "final_val_acc": "final validation accuracy",
                "test_acc": "test accuracy"}


def _empty(title: str, note: str, height: int = 320) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=title, height=height, margin=MARGIN, xaxis_visible=False, yaxis_visible=False,
                      annotations=[dict(text=note, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")])
    return fig


# ---------------------------------------------------------------- Runs


def curves_overlay(curves: pd.DataFrame) -> go.Figure:
    """Validation accuracy and training loss per epoch of several runs, one colour per run."""
    if curves.empty:
        return _empty("Curves of the selected runs", "the selected runs have no finished epoch yet")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Validation accuracy", "Training loss"),
                        horizontal_spacing=0.08)
    colours = qualitative.Plotly + qualitative.D3
    for i, (label, part) in enumerate(curves.groupby("label", sort=False)):
        colour = colours[i % len(colours)]
        fig.add_trace(go.Scatter(x=part["epoch"], y=part["val_acc"], name=label, legendgroup=label,
                                 mode="lines+markers", line=dict(color=colour)), row=1, col=1)
        fig.add_trace(go.Scatter(x=part["epoch"], y=part["loss"], name=label, legendgroup=label,
                                 mode="lines+markers", line=dict(color=colour, dash="dash"), showlegend=False),
                      row=1, col=2)
    fig.update_xaxes(title_text="epoch", dtick=1 if curves["epoch"].max() <= 12 else None)
    fig.update_yaxes(title_text="accuracy", row=1, col=1)
    fig.update_yaxes(title_text="loss", row=1, col=2)
    fig.update_layout(title="Curves of the selected runs", height=420, margin=MARGIN,
                      legend=dict(orientation="h", yanchor="top", y=-0.18, x=0))
    return fig


# ---------------------------------------------------------------- Sweep


def _yes(v) -> bool:
    """True for a True verdict (None, NaN and False are not)."""
    return v is not None and not (isinstance(v, float) and math.isnan(v)) and bool(v)


def _cell_text(mean: float, std: float, n: int, signed: bool = False, mark: str = "") -> str:
    if not n or not math.isfinite(mean):
        return "—"
    spread = f" ± {fmt.num(std)}" if n > 1 and math.isfinite(std) else ""
    return f"{fmt.num(mean, sign=signed)}{spread}<br>(n={int(n)}){mark}"


def _heatmap(z: pd.DataFrame, text: list[list[str]], title: str, colorbar: str, best: Optional[dict],
             diverging: bool) -> go.Figure:
    temps, alphas = list(z.index), list(z.columns)
    values = z.to_numpy(dtype=float)
    finite = values[~pd.isna(values)]
    heat = dict(z=values, x=list(range(len(alphas))), y=list(range(len(temps))), text=text,
                texttemplate="%{text}", textfont=dict(size=13), hoverinfo="skip", xgap=2, ygap=2,
                colorbar=dict(title=dict(text=colorbar, side="right"), thickness=14,
                              tickformat="+.3f" if diverging else ".3f"))
    if diverging:
        bound = max(abs(finite).max(), 0.005) if finite.size else 0.01   # at least ±half a point
        heat.update(colorscale="RdBu", zmid=0, zmin=-bound, zmax=bound)
    else:
        heat.update(colorscale="Viridis")
    fig = go.Figure(go.Heatmap(**heat))
    if best is not None:
        j, i = alphas.index(best["alpha"]), temps.index(best["temperature"])
        fig.add_shape(type="rect", x0=j - 0.5, x1=j + 0.5, y0=i - 0.5, y1=i + 0.5,
                      line=dict(color="#ff2d55", width=4))
        fig.add_trace(go.Scatter(x=[j + 0.36], y=[i + 0.3], mode="markers", name="best mean",
                                 marker=dict(symbol="star", size=18, color="#ff2d55",
                                             line=dict(color="white", width=1.5)),
                                 hovertemplate=f"best mean: T={best['temperature']:g}, "
                                               f"λ={best['alpha']:g}<extra></extra>"))
    fig.update_xaxes(tickvals=list(range(len(alphas))), ticktext=[f"λ={a:g}" for a in alphas],
                     title_text="λ (weight of the teacher)", range=[-0.5, len(alphas) - 0.5], showgrid=False,
                     zeroline=False)
    fig.update_yaxes(tickvals=list(range(len(temps))), ticktext=[f"T={t:g}" for t in temps],
                     title_text="temperature T", range=[-0.5, len(temps) - 0.5], showgrid=False, zeroline=False)
    fig.update_layout(title=dict(text=title, font=dict(size=15)), height=max(300, 150 + 80 * len(temps)),
                      margin=MARGIN, showlegend=False, plot_bgcolor="rgba(0,0,0,0)")
    return fig


def sweep_accuracy_heatmap(grids: dict, label: str, metric: str = "best_val_acc") -> go.Figure:
    """Mean over seeds per T × λ, each cell "mean ± std (n)", the best mean outlined and starred."""
    mean, std, n = grids["mean"], grids["std"], grids["n"]
    text = [[_cell_text(mean.iat[i, j], std.iat[i, j], n.iat[i, j]) for j in range(mean.shape[1])]
            for i in range(mean.shape[0])]
    return _heatmap(mean, text, f"{label}: {METRIC_NAMES.get(metric, metric)}", "accuracy", grids["best"],
                    diverging=False)


def sweep_gain_heatmap(grids: dict, label: str, alpha: float = 0.05) -> go.Figure:
    """Mean per-seed gain over the no-KD baseline of the same size; "*" marks a significant
    paired t-test; the best mean accuracy is outlined as on the accuracy map."""
    gain, std, n, sig = grids["gain_mean"], grids["gain_std"], grids["gain_n"], grids["significant"]
    text = [[_cell_text(gain.iat[i, j], std.iat[i, j], n.iat[i, j], signed=True,
                        mark=" *" if _yes(sig.iat[i, j]) else "") for j in range(gain.shape[1])]
            for i in range(gain.shape[0])]
    base = grids["baseline"]
    base_text = f"baseline {base['text']}" if base.get("n") else "baseline not run yet"
    return _heatmap(gain, text, f"{label}: gain over the no-KD baseline · {base_text}<br>"
                                f"<sup>* significant at {alpha:g} (paired t-test over seeds)</sup>",
                    "gain", grids["best"], diverging=True)
