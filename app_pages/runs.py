"""Runs: every run in the store — filter, fold seeds, overlay curves, reproduce, export, delete."""

import streamlit as st

from kd_core.views import runs_table
from ui import experiment_charts, state

NO_SWEEP = "(no sweep)"
FILTER_LABELS = {"dataset": "Dataset", "teacher": "Teacher", "kind": "Kind", "status": "Status", "sweep": "Sweep"}
MAX_COMMANDS = 20

RUN_COLUMNS = {
    "id": st.column_config.TextColumn("Run", pinned=True),
    "kind": st.column_config.TextColumn("Kind"),
    "teacher": st.column_config.TextColumn("Teacher"),
    "model": st.column_config.TextColumn("Model", help="family and width (MLP: one number per hidden layer)"),
    "T": st.column_config.NumberColumn("T", format="%g"),
    "λ": st.column_config.NumberColumn("λ", format="%g"),
    "method": st.column_config.TextColumn("Method", help="distillation method(s) as --method writes them"),
    "labels": st.column_config.TextColumn("Labels", help="the labelled images the run trained on (--labels)"),
    "seed": st.column_config.NumberColumn("Seed", format="%d"),
    "status": st.column_config.TextColumn("Status"),
    "val_acc_curve": st.column_config.LineChartColumn(
        "Val acc per epoch", width="small", help="validation accuracy per epoch, scaled per run"
    ),
    "best_val_acc": st.column_config.NumberColumn("Best val acc", format="%.4f"),
    "final_val_acc": st.column_config.NumberColumn("Final val acc", format="%.4f"),
    "test_acc": st.column_config.NumberColumn("Test acc", format="%.4f"),
    "params": st.column_config.NumberColumn("Params", format="localized"),
    "latency_b1_ms": st.column_config.NumberColumn(
        "Latency b1 (ms)", format="%.3f", help="median latency of one image, batch 1, CPU"
    ),
    "duration_s": st.column_config.NumberColumn("Duration (s)", format="%.1f", help="wall-clock, start to end"),
    "dataset": st.column_config.TextColumn("Dataset"),
    "epochs": st.column_config.NumberColumn("Epochs", format="%d"),
    "sweep": st.column_config.TextColumn("Sweep"),
    "created": st.column_config.DatetimeColumn("Created", format="YYYY-MM-DD HH:mm:ss"),
    "error": st.column_config.TextColumn("Error"),
}
GROUP_COLUMNS = {
    "kind": RUN_COLUMNS["kind"],
    "teacher": RUN_COLUMNS["teacher"],
    "model": RUN_COLUMNS["model"],
    "T": RUN_COLUMNS["T"],
    "λ": RUN_COLUMNS["λ"],
    "method": RUN_COLUMNS["method"],
    "labels": RUN_COLUMNS["labels"],
    "epochs": RUN_COLUMNS["epochs"],
    "n": st.column_config.NumberColumn("n", format="%d", help="finished runs (seeds) of this configuration"),
    "seeds": st.column_config.TextColumn("Seeds"),
    "best_val_acc": st.column_config.TextColumn("Best val acc (mean ± std)"),
    "final_val_acc": st.column_config.TextColumn("Final val acc (mean ± std)"),
    "test_acc": st.column_config.TextColumn("Test acc (mean ± std)"),
    "params": RUN_COLUMNS["params"],
    "latency_b1_ms": st.column_config.NumberColumn("Latency b1 (ms, median)", format="%.3f"),
    "dataset": RUN_COLUMNS["dataset"],
    "sweeps": st.column_config.TextColumn("Sweeps"),
}


def filter_widgets(options: dict) -> dict:
    """One multiselect per filter (empty = all), kept in the URL."""
    chosen = {}
    for col, (name, label) in zip(st.columns(len(FILTER_LABELS)), FILTER_LABELS.items()):
        shown = [NO_SWEEP if v is None else v for v in options[name]]
        picked = col.multiselect(label, shown, key=f"runs_f_{name}", placeholder="all", bind="query-params")
        chosen[name] = [None if v == NO_SWEEP else v for v in picked]
    return chosen


def table_height(rows: int) -> int:
    """Every row up to about 16, then scroll."""
    return min(600, 38 + 35 * max(1, rows))


def pickable(frame, columns: dict, key: str) -> list[int]:
    """`frame` as a table whose rows can be picked; the picked rows' positions."""
    event = st.dataframe(
        frame,
        column_config=columns,
        column_order=list(columns),
        hide_index=True,
        height=table_height(len(frame)),
        placeholder="—",
        on_select="rerun",
        selection_mode="multi-row",
        key=key,
    )
    return list(event.selection.rows)


def table(frame, grouped: bool) -> list[str]:
    """The runs (or configurations) table; returns the ids of the picked rows' runs."""
    gen = st.session_state.setdefault("runs_gen", 0)  # a new key after a delete clears the selection
    if grouped:
        shown = runs_table.group_by_config(frame)
        rows = pickable(shown, GROUP_COLUMNS, f"runs_groups_{gen}")
        st.caption(
            "Finished runs only, folded over seeds: mean ± sample std (n). Picking a configuration picks all its runs."
        )
        return [i for row in rows for i in shown["ids"].iloc[row]]
    return frame["id"].iloc[pickable(frame, RUN_COLUMNS, f"runs_table_{gen}")].tolist()


def curves(ids: list[str]) -> None:
    data = runs_table.curves_frame(state.current_store(), ids)
    st.plotly_chart(experiment_charts.curves_overlay(data), key="runs_curves", width="stretch")


def reproduce(ids: list[str]) -> None:
    store = state.current_store()
    with st.expander(f"Reproduce ({len(ids)} run{'s' * (len(ids) > 1)})", expanded=len(ids) <= 3):
        st.caption("Each command trains the run again from its stored configuration, into this store.")
        for run_id in ids[:MAX_COMMANDS]:
            run = store.get_run(run_id)
            if run is None:
                continue
            command = runs_table.command_for(run, store)
            st.markdown(f"**{run_id}** · {run.kind} · {run.label}")
            if command is None:
                st.caption("An uploaded checkpoint: trained elsewhere, so no command here makes it again.")
            else:
                st.code(command, language="bash", wrap_lines=True)
        if len(ids) > MAX_COMMANDS:
            st.caption(f"… and {len(ids) - MAX_COMMANDS} more; pick fewer runs to see their commands.")


def delete(frame, ids: list[str]) -> None:
    """Delete the picked runs (not running ones) and their files, once confirmed."""
    status = dict(zip(frame["id"], frame["status"]))
    running = [i for i in ids if status.get(i) == "running"]
    doomed = [i for i in ids if i not in running]
    if running:
        st.caption(f"{len(running)} running run(s) are left alone: stop them first.")
    if not doomed:
        return
    students = runs_table.runs_frame(state.current_store(), {"kind": ["student"]})
    taught = students[students["teacher"].isin(doomed)]
    if len(taught):
        st.warning(
            f"{len(taught)} student run(s) were distilled from the teacher(s) picked; their records "
            "stay, but they will name a teacher that is gone."
        )
    gen = st.session_state["runs_gen"]
    c = st.columns([3, 1])
    sure = c[0].checkbox(
        f"Delete {len(doomed)} run{'s' * (len(doomed) > 1)} with their weight files (this cannot be undone)",
        key=f"runs_confirm_{gen}",
    )
    if c[1].button("Delete", key="runs_delete", type="primary", disabled=not sure, icon=":material/delete:"):
        store = state.current_store()
        for run_id in doomed:
            store.delete_run(run_id)
        st.session_state["runs_gen"] = gen + 1
        st.session_state["runs_deleted"] = len(doomed)
        st.rerun()


st.title("Runs")
store = state.current_store()
deleted = st.session_state.pop("runs_deleted", None)
if deleted:
    st.success(f"Deleted {deleted} run{'s' * (deleted > 1)} and their files.")
everything = runs_table.runs_frame(store)
if everything.empty:
    st.info(f"No runs in the store at `{store.root}` yet: train a teacher, distil a student or run a sweep.")
    st.page_link("app_pages/teacher.py", label="Train a teacher", icon="➡️")
    st.page_link("app_pages/sweep.py", label="Run a sweep", icon="➡️")
else:
    picked_filters = filter_widgets(runs_table.filter_options(store))
    frame = runs_table.runs_frame(store, picked_filters)
    top = st.columns([3, 2])
    top[0].caption(
        f"{len(frame)} of {len(everything)} runs in `{store.root}` · pick rows to compare, reproduce or delete them."
    )
    grouped = top[1].toggle(
        "Group seeds by configuration",
        key="runs_group",
        bind="query-params",
        help="One row per configuration: mean ± std over its seeds, with n.",
    )
    ids = table(frame, grouped)
    shown = runs_table.group_by_config(frame) if grouped else frame
    c = st.columns([1, 1, 4])
    c[0].download_button(
        "Download CSV",
        runs_table.to_csv(shown),
        file_name="kd_runs.csv",
        mime="text/csv",
        key="runs_csv",
        on_click="ignore",
        icon=":material/download:",
        help="The table as shown: filtered" + (", seeds folded." if grouped else "."),
    )
    c[1].button("Refresh", key="runs_refresh", icon=":material/refresh:", help="Read the store again.")
    if ids:
        st.subheader(f"{len(ids)} run{'s' * (len(ids) > 1)} picked")
        curves(ids)
        reproduce(ids)
        delete(frame, ids)
