"""The Distill page's method picker: one method or a weighted mix, each method's parameters
with its formula and paper, all bound to the URL so a copied link opens the same mix."""

from __future__ import annotations

import streamlit as st


def _mix_help(catalogue: list[dict]) -> str:
    families: dict[str, list[str]] = {}
    for m in catalogue:
        families.setdefault(m["family"], []).append(f"{m['name']} ({m['title']})")
    return (
        "One method, or a weighted mix. The student minimises (1 − λ)·CE + λ·Σ w·(the method's terms); "
        "each method's terms carry its paper's coefficients. "
        + "; ".join(f"{family}: {', '.join(names)}" for family, names in families.items())
    )


def _param_widget(method: str, p: dict, container):
    key, label, help_ = f"mp_{method}_{p['name']}", p["name"], p["help"]
    if p["type"] == "bool":
        return container.checkbox(label, value=p["default"], key=key, bind="query-params", help=help_)
    if p["type"] == "str":
        return container.text_input(label, value=p["default"], key=key, bind="query-params", help=help_)
    if p["type"] == "int":
        return container.number_input(label, value=p["default"], step=1, key=key, bind="query-params", help=help_)
    return container.number_input(
        label, value=float(p["default"]), format="%g", key=key, bind="query-params", help=help_
    )


def method_widgets(catalogue: list[dict]) -> tuple[list[str], dict[str, float], dict[str, dict]]:
    """(selected names, weight per name, {name: {param: value}}) from the widgets."""
    by_name = {m["name"]: m for m in catalogue}
    selected = st.multiselect(
        "Distillation methods",
        list(by_name),
        default=["kd"],
        key="methods",
        bind="query-params",
        help=_mix_help(catalogue),
    )
    weights: dict[str, float] = {}
    params: dict[str, dict] = {}
    for name in selected:
        m = by_name[name]
        with st.expander(f"{m['title']} — {m['paper']}", expanded=len(selected) > 1 or bool(m["params"])):
            st.markdown(f"`{m['formula']}`")
            cols = st.columns(max(1, len(m["params"]) + (len(selected) > 1)))
            if len(selected) > 1:  # one method alone: λ is its weight
                weights[name] = cols[0].number_input(
                    "weight w", min_value=0.0, value=1.0, step=0.1, format="%g", key=f"w_{name}",
                    bind="query-params", help="this method's share of the distillation terms",
                )  # fmt: skip
            offset = len(selected) > 1
            params[name] = {p["name"]: _param_widget(name, p, cols[offset + i]) for i, p in enumerate(m["params"])}
    return selected, weights, params


def preview_line(preview: dict, flags: str) -> None:
    """What the mix adds before it trains: extra trainables and how the teacher's targets are
    served; `flags`: the same mix on the command line."""
    if "error" in preview:
        st.error(preview["error"])
        return
    c = st.columns([1, 3])
    c[0].metric("Extra trainable parameters", f"{preview['extra_params']:,}", help="e.g. FitNets' regressor")
    stages = "; ".join(
        f"{name}: student {', '.join(s['student'])} → teacher {', '.join(s['teacher'])}"
        for name, s in preview["stages"].items()
        if s["student"] or s["teacher"]
    )
    c[1].caption(f"Teacher targets: {preview['cache']}." + (f" Stages read: {stages}." if stages else ""))
    c[1].caption(f"On the command line: `{flags}`")
