"""Plotly figures for the Runs and Sweep pages. Inputs are pandas tables from kd_core
(runs_table.curves_frame, sweep_results.sweep_grids)."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from kd_core import fmt
from kd_core.stats import sampling_noise
from kd_core.views.sweep_view import SIGNIFICANCE
from ui import colors

MARGIN = dict(l=10, r=10, t=60, b=10)
METRIC_NAMES = {
    "best_val_acc": "best validation accuracy",
    "final_val_acc": "final validation accuracy",
    "test_acc": "test accuracy",
}


def _empty(title: str, note: str, height: int = 320) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(
        title=title,
        height=height,
        margin=MARGIN,
        xaxis_visible=False,
        yaxis_visible=False,
        annotations=[dict(text=note, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")],
    )
    return fig


# ---------------------------------------------------------------- Runs


def curves_overlay(curves: pd.DataFrame) -> go.Figure:
    """Validation accuracy (dashed) and training loss (solid) per epoch of several runs; each
    run in a shade of its role's colour (ui/colors.py), so students stay green among teachers."""
    if curves.empty:
        return _empty("Curves of the selected runs", "the selected runs have no finished epoch yet")
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("Validation accuracy", "Training loss"), horizontal_spacing=0.08
    )
    kinds = curves.drop_duplicates("label").set_index("label")["kind"] if "kind" in curves else None
    shade = {}
    if kinds is not None:
        for kind, labels in kinds.groupby(kinds, sort=False).groups.items():
            shade.update(zip(labels, colors.shades(kind, len(labels))))
    for label, part in curves.groupby("label", sort=False):
        colour = shade.get(label, colors.NEUTRAL)
        for col, y, dash in ((1, "val_acc", colors.VALIDATION_DASH), (2, "loss", colors.TRAIN_DASH)):
            fig.add_trace(
                go.Scatter(
                    x=part["epoch"],
                    y=part[y],
                    name=label,
                    legendgroup=label,
                    mode="lines+markers",
                    line=dict(color=colour, dash=dash),
                    showlegend=col == 1,  # one legend entry per run
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="epoch", dtick=1 if curves["epoch"].max() <= 12 else None)
    fig.update_yaxes(title_text="accuracy", row=1, col=1)
    fig.update_yaxes(title_text="loss", row=1, col=2)
    fig.update_layout(
        title="Curves of the selected runs",
        height=480,
        margin=dict(MARGIN, b=colors.LEGEND_MARGIN),
        legend=colors.LEGEND_BELOW,
    )
    return fig


# ---------------------------------------------------------------- Sweep

CELL_DIGITS = 3  # in the cells; the hover and the tables keep 4
WIDE_GRID = 6  # more λ columns than this: the std moves to the hover


def _yes(v) -> bool:
    """True for a True verdict (None, NaN and False are not)."""
    return v is not None and not (isinstance(v, float) and math.isnan(v)) and bool(v)


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def p_text(p: float | None, significant) -> str:
    """A gain cell's verdict: "p=0.20", "p=0.035 *" (* significant), "p<0.001 *" (two decimals from 0.1,
    three significant digits below, so nothing just under 0.05 reads as 0.05); "no test" where the
    paired test gives no verdict (one seed, or the same gain on every seed)."""
    if significant is None or (isinstance(significant, float) and math.isnan(significant)) or not _finite(p):
        return "no test"
    text = "p<0.001" if p < 0.001 else f"p={p:.2f}" if p >= 0.1 else f"p={p:.3g}"
    return text + (" *" if _yes(significant) else "")


def _cell_text(mean: float, std: float, n: int, signed: bool = False, second: str = "", wide: bool = False) -> str:
    """Two short lines: "0.970 ± 0.003" (the std only when n > 1 and the grid is not wide), then
    `second` (default "n=3")."""
    if not n or not _finite(mean):
        return "—"
    spread = f" ± {fmt.num(std, CELL_DIGITS)}" if n > 1 and _finite(std) and not wide else ""
    return f"{fmt.num(mean, CELL_DIGITS, sign=signed)}{spread}<br>{second or f'n={int(n)}'}"


def nice_ticks(lo: float, hi: float, target: int = 6) -> tuple[float, str]:
    """(dtick, tickformat) for a colour bar from lo to hi: a 1, 2 or 5 × 10^k step giving at most
    about `target` ticks, and as many decimals as that step needs, so no two ticks read the same."""
    span = max(hi - lo, 1e-9)
    raw = span / target
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return step, f".{max(0, -math.floor(math.log10(step) + 1e-9))}f"


def _cell_axis(labels: list[str], title: str) -> dict:
    """A heatmap axis with one tick per cell, labelled, and no grid or zero line over the cells."""
    return dict(
        tickvals=list(range(len(labels))),
        ticktext=labels,
        title_text=title,
        range=[-0.5, len(labels) - 0.5],
        showgrid=False,
        zeroline=False,
    )


def noise_floor(accuracy: float, images: int) -> float:
    """Half-width of the 95% sampling noise of one accuracy difference at this accuracy on
    `images` evaluation images (unpaired): colour scales span at least ± this, so a difference
    chance alone could make stays pale. 0 when the image count is unknown."""
    if images <= 0 or not math.isfinite(accuracy):
        return 0.0
    return sampling_noise(accuracy, accuracy, images)


def colour_range(finite, diverging: bool, floor: float) -> tuple[float, float]:
    """(zmin, zmax): the values' range, widened to at least ±`floor` (around 0 for a gain,
    around the middle of the values for an accuracy), so that a two-image difference does not
    span the whole colour scale."""
    if diverging:
        bound = max(float(abs(finite).max()) if finite.size else 0.0, floor, 0.005)
        return -bound, bound
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    half = max((hi - lo) / 2, floor, 0.001)
    mid = (lo + hi) / 2
    return max(0.0, mid - half), min(1.0, mid + half)


def _heatmap(
    z: pd.DataFrame,
    text: list[list[str]],
    hover: list[list[str]],
    title: str,
    colorbar: str,
    best: list[dict],
    diverging: bool,
    floor: float = 0.0,
) -> go.Figure:
    temps, alphas = list(z.index), list(z.columns)
    values = z.to_numpy(dtype=float)
    finite = values[~pd.isna(values)]
    lo, hi = colour_range(finite, diverging, floor)
    dtick, tickformat = nice_ticks(lo, hi)
    heat = dict(
        z=values,
        x=list(range(len(alphas))),
        y=list(range(len(temps))),
        text=text,
        texttemplate="%{text}",
        textfont=dict(size=12, color=colors.CELL_TEXT),
        customdata=hover,
        hovertemplate="%{customdata}<extra></extra>",
        xgap=2,
        ygap=2,
        zmin=lo,
        zmax=hi,
        colorbar=dict(
            title=dict(text=colorbar, side="right"),
            thickness=14,
            tick0=0,
            dtick=dtick,
            tickformat=("+" if diverging else "") + tickformat,
        ),
    )
    # light scales under dark text: readable in every cell, on the light and the dark theme
    heat.update(colorscale=colors.scale(colors.DIVERGING if diverging else colors.SEQUENTIAL))
    if diverging:
        heat.update(zmid=0)
    fig = go.Figure(go.Heatmap(**heat))
    xs, ys = [], []
    for b in best:
        j, i = alphas.index(b["alpha"]), temps.index(b["temperature"])
        fig.add_shape(
            type="rect", x0=j - 0.5, x1=j + 0.5, y0=i - 0.5, y1=i + 0.5, line=dict(color=colors.CELL_TEXT, width=4)
        )
        xs.append(j + 0.38)
        ys.append(i + 0.28)
    if best:
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="markers",
                name="best mean",
                marker=dict(symbol="star", size=16, color=colors.CELL_TEXT, line=dict(color="white", width=1.5)),
                hovertemplate="best mean, above the baseline<extra></extra>",
            )
        )
    fig.update_xaxes(**_cell_axis([f"λ={a:g}" for a in alphas], "λ (weight of the teacher)"))
    fig.update_yaxes(**_cell_axis([f"T={t:g}" for t in temps], "temperature T"))
    fig.update_layout(
        title=dict(text=title, font=dict(size=15)),
        height=max(280, 150 + 64 * len(temps)),
        margin=MARGIN,
        showlegend=False,
        plot_bgcolor="rgba(0,0,0,0)",
    )
    return fig


def _hover(grids: dict, i: int, j: int) -> str:
    """A cell's full numbers: T, λ, mean ± std (n), the gain, the test's verdict and the
    Benjamini–Hochberg adjusted p."""
    g = {k: grids[k].iat[i, j] for k in ("text", "gain_text", "verdict", "p_bh") if k in grids}
    t, a = grids["mean"].index[i], grids["mean"].columns[j]
    lines = [f"T={t:g}, λ={a:g}", f"accuracy {g.get('text', '')}", f"gain {g.get('gain_text', '')}"]
    if g.get("verdict"):
        lines.append(str(g["verdict"]))
    if _finite(g.get("p_bh")):
        lines.append(f"Benjamini–Hochberg adjusted p={g['p_bh']:.3g}")
    return "<br>".join(lines)


def _colorbar_title(name: str, images: int) -> str:
    return f"{name}<br><sup>1 image = {1 / images:.4f}</sup>" if images > 0 else name


def sweep_accuracy_heatmap(grids: dict, label: str, metric: str = "test_acc", images: int = 0) -> go.Figure:
    """Mean over seeds per T × λ, each cell "mean ± std" over "n=…" (3 decimals; 4 in the hover);
    the marked best cells (every tie; none when the best mean does not beat the baseline)
    outlined and starred. `images`: the evaluation images behind the metric; the colour scale
    spans at least the sampling noise of one comparison on them (noise_floor)."""
    mean, std, n = grids["mean"], grids["std"], grids["n"]
    wide = mean.shape[1] > WIDE_GRID
    shape = range(mean.shape[0]), range(mean.shape[1])
    text = [[_cell_text(mean.iat[i, j], std.iat[i, j], n.iat[i, j], wide=wide) for j in shape[1]] for i in shape[0]]
    hover = [[_hover(grids, i, j) for j in shape[1]] for i in shape[0]]
    floor = noise_floor(float(pd.Series(mean.to_numpy().ravel()).mean()), images)
    return _heatmap(
        mean,
        text,
        hover,
        f"{label}: {METRIC_NAMES.get(metric, metric)}",
        _colorbar_title("accuracy", images),
        grids["best"],
        diverging=False,
        floor=floor,
    )


def sweep_gain_heatmap(grids: dict, label: str, level: float = SIGNIFICANCE, images: int = 0) -> go.Figure:
    """Mean per-seed gain over the no-KD baseline of the same size, each cell "gain ± std" over the
    paired test's p ("p=0.20", "p=0.035 *" when p < level, "no test" without a verdict); the
    marked best cells outlined as on the accuracy map. The diverging scale spans at least the
    sampling noise of one comparison on `images` evaluation images."""
    gain, std, n, sig, p = grids["gain_mean"], grids["gain_std"], grids["gain_n"], grids["significant"], grids["p"]
    wide = gain.shape[1] > WIDE_GRID
    shape = range(gain.shape[0]), range(gain.shape[1])
    text = [
        [
            _cell_text(
                gain.iat[i, j],
                std.iat[i, j],
                n.iat[i, j],
                signed=True,
                second=p_text(p.iat[i, j], sig.iat[i, j]),
                wide=wide,
            )
            for j in shape[1]
        ]
        for i in shape[0]
    ]
    hover = [[_hover(grids, i, j) for j in shape[1]] for i in shape[0]]
    base = grids["baseline"]
    base_text = f"baseline {base['text']}" if base.get("n") else "baseline not run yet"
    return _heatmap(
        gain,
        text,
        hover,
        f"{label}: gain over the no-KD baseline · {base_text}<br>"
        f"<sup>p: paired t-test over seeds · * p < {level:g} (uncorrected) · "
        f"no test: one seed, or the same gain on every seed</sup>",
        _colorbar_title("gain", images),
        grids["best"],
        diverging=True,
        floor=noise_floor(float(pd.Series(grids["mean"].to_numpy().ravel()).mean()), images),
    )


def gain_curve_chart(curve: pd.DataFrame, metric: str = "test_acc", level: float = SIGNIFICANCE) -> go.Figure:
    """The gain-versus-labels curve (views.sweep_view.gain_curve): per (size, method, T, λ), student and
    baseline mean ± std over seeds against the label budget (left), and the mean paired gain ± its
    std with each point's p-value (right). Budgets are categories in order, "all" last."""
    if curve.empty or not (curve["n"] > 0).any():
        return _empty("Gain versus labels", "No finished run yet.")
    fig = make_subplots(rows=1, cols=2, subplot_titles=(METRIC_NAMES.get(metric, metric), "gain over the baseline"))
    names = [("all" if b == 0 else f"{b:,}") for b in curve["budget"]]
    curve = curve.assign(labels=names)
    several = curve["method"].nunique() > 1
    groups = list(curve.groupby(["size", "method", "temperature", "alpha"], sort=False))
    # The roles' colours (ui/colors.py): students and their gains green, baselines vermillion,
    # one shade per setting; solid lines, since dashes mean validation on every chart.
    students, baselines = colors.shades("student", len(groups)), colors.shades("baseline", len(groups))
    for k, ((size, m, t, a), part) in enumerate(groups):
        name = f"size {size} · {m + ' · ' if several else ''}T={t:g} · λ={a:g}"
        for col, y, std, colour, who in (
            (1, "mean", "std", students[k], "distilled"),
            (1, "baseline_mean", "baseline_std", baselines[k], "baseline"),
            (2, "gain_mean", "gain_std", students[k], "gain"),
        ):
            fig.add_trace(
                go.Scatter(
                    x=part["labels"],
                    y=part[y],
                    error_y=dict(type="data", array=part[std].fillna(0)),
                    mode="lines+markers+text" if col == 2 else "lines+markers",
                    text=[p_text(p, s) for p, s in zip(part["p"], part["significant"])] if col == 2 else None,
                    textposition="top center",
                    line=dict(color=colour),
                    name=f"{name} · {who}",
                    legendgroup=name,
                ),
                row=1,
                col=col,
            )
    fig.add_hline(y=0, line=dict(color=colors.NEUTRAL, width=1), row=1, col=2)
    fig.update_xaxes(title_text="labelled training images", type="category")
    fig.update_layout(
        height=420,
        margin=MARGIN,
        title=f"Gain versus labels<br><sup>mean ± std over seeds · p: paired t-test per budget · * p < {level:g}</sup>",
    )
    return fig
