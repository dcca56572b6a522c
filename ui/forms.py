"""Widgets shared by the Teacher and Distill pages: model size and training budget.

Each widget has a key and is bound to the URL query string, so a copied link
opens the same experiment. A link whose value a widget cannot take (out of range,
not one of its choices) is dropped by Streamlit without a word; `slider` and
`select_slider` say so on the page instead (`link_notice`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import streamlit as st

from kd_core.views import label_view, studio
from kd_core.views.sweep_view import DataConfig, TrainConfig
from ui import state

LEARNING_RATES = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 1.0, 10.0]
BATCH_SIZES = [16, 32, 64, 128, 256, 512]
# Widths on a log-like scale (powers of two and the halfway points): a linear 4–2048 slider
# crammed every small student into its first few pixels.
WIDTH_STEPS = [4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048]


def _number(raw: str) -> float | None:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def link_notice(key: str, label: str, valid: Callable[[str], bool], expected: str) -> None:
    """On the first run of a session (the widget has no state yet), a visible notice when the
    URL sets `key` to a value the widget cannot take."""
    raw = st.query_params.get(key)
    if raw is None or key in st.session_state or valid(raw):
        return
    st.warning(f"The link's {label} “{raw}” is not {expected}: the default is used.", icon=":material/link_off:")


def slider(container, label: str, lo, hi, value, key: str, **kw):
    """`container.slider` bound to the URL, with a notice for a linked value outside lo–hi."""
    link_notice(key, label, lambda raw: (v := _number(raw)) is not None and lo <= v <= hi, f"within {lo:g}–{hi:g}")
    return container.slider(label, lo, hi, value, key=key, bind="query-params", **kw)


def select_slider(container, label: str, options: Sequence, value, key: str, fmt: Callable = str, **kw):
    """`container.select_slider` bound to the URL, with a notice for a linked value that is not
    one of `options` (written as the option or as its label)."""
    names = {str(o) for o in options} | {fmt(o) for o in options}
    numbers = {float(o) for o in options if isinstance(o, int | float)}
    shown = f"one of {fmt(options[0])}, {fmt(options[1])} … {fmt(options[-1])}" if len(options) > 3 else "offered"
    link_notice(key, label, lambda raw: raw in names or _number(raw) in numbers, shown)
    return container.select_slider(label, options, value, key=key, bind="query-params", format_func=fmt, **kw)


def width_choices(lo: int, hi: int, start: int) -> list[int]:
    """The log-like width steps within lo–hi, with `start` (a preset) among them."""
    return sorted({w for w in WIDTH_STEPS if lo <= w <= hi} | {start})


def model_widgets(prefix: str, role: str, dataset: str) -> dict:
    """Family and its size knobs (MLP width and depth, CNN width, torchvision width
    multiplier), each family starting at its preset for this role and dataset."""
    families = studio.FAMILIES
    preset = studio.presets(dataset)[role]
    cols = st.columns(3)
    fam = cols[0].selectbox(
        "Family", families, index=families.index(preset.family), key=f"{prefix}_family", bind="query-params"
    )
    start = studio.family_preset(fam, role, dataset)
    knobs = studio.family_knobs(fam)
    out = {"family": fam, "size": start.size, "depth": start.depth, "width": 1.0}
    if "width" in knobs:
        w = knobs["width"]
        out["width"] = cols[1].select_slider(
            w["label"],
            w["choices"],
            start.width,
            key=f"{prefix}_width",
            bind="query-params",
            format_func=lambda v: f"×{v:g}",
        )
        cols[2].caption(studio.family_note(fam))
        return out
    k = knobs["size"]
    begin = min(max(start.size, k["min"]), k["max"])
    out["size"] = select_slider(cols[1], k["label"], width_choices(k["min"], k["max"], begin), begin, f"{prefix}_size")
    out["depth"] = slider(cols[2], "Hidden layers", 0, 4, start.depth, f"{prefix}_depth", disabled=not knobs["depth"])
    return out


def budget_widgets(prefix: str, epochs: int, lr: float) -> dict:
    """Epochs, learning rate, batch size, optimizer, schedule and seed."""
    cols = st.columns(3)
    out = {
        "epochs": slider(cols[0], "Epochs", 1, 100, epochs, f"{prefix}_epochs"),
        "lr": select_slider(cols[1], "Learning rate", LEARNING_RATES, lr, f"{prefix}_lr", fmt=lambda v: f"{v:g}"),
        "batch_size": select_slider(cols[2], "Batch size", BATCH_SIZES, 64, f"{prefix}_bs"),
    }
    with st.expander("Optimizer and seed"):
        c = st.columns(3)
        out["optimizer"] = c[0].selectbox("Optimizer", ["adam", "sgd"], key=f"{prefix}_opt", bind="query-params")
        out["cosine"] = c[1].checkbox("Cosine schedule", key=f"{prefix}_cosine", bind="query-params")
        out["seed"] = c[2].number_input("Seed", 0, 10_000, 0, key=f"{prefix}_seed", bind="query-params")
    return out


def label_widgets(prefix: str, data, transfer: bool) -> dict | None:
    """'Labels available' with a live count of labelled and transfer images (Distill), or the
    teacher's own budget (Teacher, `transfer` False). None when the budget cannot be drawn."""
    choices = label_view.label_choices(data)
    cols = st.columns([2, 1, 1] if transfer else [2, 1])
    labels = cols[0].select_slider(
        "Labels available",
        choices,
        0,
        key=f"{prefix}_labels",
        bind="query-params",
        format_func=label_view.budget_label,
        help="A stratified subset of the training split keeps its labels; the rest can still be shown to the "
        "teacher and the student as unlabelled transfer images (the student never sees their labels).",
    )
    seed = cols[1].number_input("Label seed", 0, 10_000, 0, key=f"{prefix}_label_seed", bind="query-params")
    out = {"labels": labels, "label_seed": seed, "transfer": "rest" if transfer else "none", "transfer_ratio": 1.0}
    if transfer:
        folder = st.text_input(
            "Unlabelled image folder (optional)",
            key=f"{prefix}_transfer_folder",
            bind="query-params",
            placeholder="/path/to/images",
            help="Your own images without class folders, resized and normalised like the dataset: the student "
            "imitates the teacher on them too, beside the unlabelled rest of the training split.",
        )
        out["transfer"] = label_view.transfer_spec(folder)
        out["transfer_ratio"] = cols[2].select_slider(
            "Transfer : labelled rows",
            label_view.TRANSFER_RATIOS,
            1.0,
            key=f"{prefix}_ratio",
            bind="query-params",
            format_func=lambda r: f"{r:g} : 1",
            help="Transfer images per labelled image in each batch.",
        )
    counts, text = label_view.count_text(data, labels, out["transfer"], seed)
    (st.caption if counts is not None else st.error)(text)
    return out if counts is not None else None


def consistency_widgets(prefix: str) -> dict:
    """Consistent augmentation (function matching) and a long schedule's early stopping."""
    with st.expander("Consistent augmentation and long schedules"):
        c = st.columns(2)
        fm = c[0].checkbox(
            "Function matching",
            key=f"{prefix}_fm",
            bind="query-params",
            help="Teacher and student see the same augmented view: shifts, flips where the dataset allows "
            "them, mixup between images (Beyer et al., CVPR 2022). The teacher then runs on every batch.",
        )
        patience = c[1].number_input(
            "Early stopping patience (epochs, 0: off)",
            0,
            100,
            0,
            key=f"{prefix}_patience",
            bind="query-params",
            help="With many epochs, stop when validation accuracy has not improved for this many.",
        )
    return {"function_matching": fm, "patience": int(patience)}


def run_config(kind: str, data, family: str, size: int, depth: int, **kw):
    """`studio.make_config` with the sidebar's data folder, image size, device, threads and precision."""
    s = state.settings()
    return studio.make_config(
        kind,
        data.name,
        s.get("data_root", "data"),
        int(s.get("image_size", 32)),
        family,
        size,
        depth,
        device=s.get("device", "auto"),
        threads=int(s.get("threads", 0)),
        precision=s.get("precision", "fp32"),
        **kw,
    )


def budget_configs(data, b: dict) -> tuple[DataConfig, TrainConfig]:
    """The data and training configs of many runs (Sweep, Methods) from `budget_widgets`' values and
    the sidebar's settings (device, threads, precision), keeping a core free for the dashboard."""
    s = state.settings()
    data_cfg = DataConfig(dataset=data.name, root=s.get("data_root", "data"), image_size=int(s.get("image_size", 32)))
    train = TrainConfig(
        epochs=int(b["epochs"]),
        batch_size=int(b["batch_size"]),
        lr=float(b["lr"]),
        optimizer=b["optimizer"],
        cosine=bool(b["cosine"]),
        device=s.get("device", "auto"),
        threads=int(s.get("threads", 0)),
        precision=s.get("precision", "fp32"),
        spare_cores=studio.DASHBOARD_SPARE_CORES,
    )
    return data_cfg, train
