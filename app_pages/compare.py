"""Compare: the teacher in use against its students — size, speed and accuracy, with the noise."""

import streamlit as st

from kd_core import fmt
from kd_core.views import compare
from ui import compare_charts as charts
from ui import deploy_section, state

# Key columns first: what a run is, how accurate, by how much against the teacher, then cost.
TABLE_FORMAT = {
    "title": st.column_config.TextColumn("run", pinned=True, width="large"),
    "test_acc": st.column_config.NumberColumn("test acc", format="%.4f"),
    "acc_vs_teacher": st.column_config.NumberColumn("Δ vs teacher", format="%+.4f"),
    "images_vs_teacher": st.column_config.NumberColumn(
        "Δ images", format="%+d", help="The difference in test images the run gets right, against the teacher."
    ),
    "x_smaller": st.column_config.NumberColumn("× fewer params", format="%.1f×"),
    "size_mb": st.column_config.NumberColumn("size (MB)", format="%.3f"),
    "b1_median_ms": st.column_config.NumberColumn("b1 median (ms)", format="%.3f"),
    "b256_median_ms": st.column_config.NumberColumn("b256 median (ms)", format="%.3f"),
    "samples_per_s": st.column_config.NumberColumn("throughput (samples/s, b256)", format="compact"),
    "agreement": st.column_config.NumberColumn(
        "agreement with teacher",
        format="%.4f",
        help="Share of test images where the top-1 class matches this teacher's. Empty for runs of another teacher.",
    ),
    "params": st.column_config.NumberColumn("params", format="localized"),
    "b1_p90_ms": st.column_config.NumberColumn("b1 p90 (ms)", format="%.3f"),
    "b256_p90_ms": st.column_config.NumberColumn("b256 p90 (ms)", format="%.3f"),
    "id": st.column_config.TextColumn("run id"),
}
KINDS = ["student", "baseline"]
STATUSES = ["finished", "stopped", "failed"]


def filters(frame) -> tuple[list[str], str, bool, list[str]]:
    """The picker's filters: kinds, sweep, this teacher's runs only, statuses (all in the URL)."""
    sweeps = sorted(s for s in frame["sweep"].dropna().unique())
    c = st.columns([2, 2, 2, 2])
    kinds = c[0].pills("Kind", KINDS, selection_mode="multi", default=KINDS, key="cmp_kinds", bind="query-params")
    sweep = c[1].selectbox(
        "Sweep",
        ["any", "none", *sweeps],
        key="cmp_sweep",
        bind="query-params",
        format_func=lambda v: {"any": "any (or none)", "none": "outside sweeps"}.get(v, f"sweep {v}"),
    )
    mine = c[2].toggle("This teacher's runs only", value=True, key="cmp_mine", bind="query-params")
    everything = c[3].toggle(
        "Stopped and failed too",
        key="cmp_all",
        bind="query-params",
        help="Stopped runs were trained only partly; failed ones have no results.",
    )
    return kinds, sweep, mine, STATUSES if everything else ["finished"]


def pick_runs(store, dataset: str, teacher_id: str) -> tuple[list[str], list[str]]:
    """Students and baselines to set against the teacher; by default its latest student and
    that student's baseline. The filters narrow what is offered, never what is picked.
    Returns the picked run ids and the statuses asked for."""
    everything = compare.picker_frame(store, dataset, STATUSES)
    kinds, sweep, mine, statuses = filters(everything)
    frame = everything[everything["status"].isin(statuses)]
    shown = compare.filter_picker(frame, kinds, sweep, teacher_id if mine else None)
    default = compare.default_selection(store, dataset, teacher_id)
    if st.session_state.get("cmp_for_teacher", teacher_id) != teacher_id:  # teacher changed: its own runs
        st.session_state["cmp_runs"], default = default, None
    st.session_state["cmp_for_teacher"] = teacher_id
    known = set(everything["id"])
    picked = [r for r in st.session_state.get("cmp_runs", default or []) if r in known]
    titles = dict(zip(everything["id"], everything["title"]))
    alike = {t for t in titles.values() if list(titles.values()).count(t) > 1}
    titles = {rid: f"{t} · {rid[-4:]}" if t in alike else t for rid, t in titles.items()}
    st.caption(f"{len(shown)} of {len(everything)} students and baselines of {dataset} match the filters.")
    picked = st.multiselect(
        "Students and baselines",
        list(dict.fromkeys([*picked, *shown["id"]])),
        format_func=lambda rid: titles.get(rid, rid),
        default=default,
        key="cmp_runs",
        bind="query-params",
        help="By default: the latest student of the teacher in use and its no-KD baseline.",
    )
    return picked, statuses


def headline(store, teacher_id: str, table) -> None:
    """The picked student against its baseline and the teacher, each with its uncertainty."""
    students = table[table["kind"] == "student"]
    if students.empty:
        return
    row = students.iloc[0]
    diffs = compare.headline_differences(store, teacher_id, row["id"])
    lines = [f"**{row['title']}**"]
    if "baseline" in diffs:
        lines.append(f"- against its no-KD baseline: {diffs['baseline'].text()}")
    else:
        lines.append("- no no-KD baseline trained beside it: what distillation bought is unknown")
    if "teacher" in diffs:
        lines.append(f"- against the teacher: {diffs['teacher'].text()}")
    st.markdown("\n".join(lines))
    st.caption(
        "± images: half-width of the 95% interval. One seed: the test set's own sampling noise; "
        "several seeds of the same configuration: a paired t-test over seeds. Within noise means "
        "the difference could be chance."
    )


def table_section(table) -> None:
    st.subheader("Side by side")
    table = table.assign(acc_vs_teacher=fmt.rounded_all(table["acc_vs_teacher"]))  # no "-0.0000" from %+.4f
    st.dataframe(table, key="cmp_table", hide_index=True, column_config=TABLE_FORMAT, column_order=[*TABLE_FORMAT])
    st.caption(
        "Latency: CPU, median of timed calls after warm-up, at the thread count of the run "
        "(p90 in its own column). Throughput is measured at batch 256."
    )


def bar_section(table) -> None:
    left, right = st.columns(2)
    with left:
        st.plotly_chart(
            charts.metric_bars(table, "test_acc", "Test accuracy", "accuracy", ".3f"),
            key="cmp_bar_acc",
            width="stretch",
        )
    with right:
        st.plotly_chart(
            charts.metric_bars(table, "size_mb", "Size", "MB", ".3f", log=True), key="cmp_bar_size", width="stretch"
        )
    st.plotly_chart(charts.latency_bars(table), key="cmp_bar_latency", width="stretch")


def pareto_section(store, dataset: str, teacher_id: str, statuses: list[str]) -> None:
    st.subheader("Accuracy for its cost: every stored run")
    runs = compare.scatter_frame(store, dataset, teacher_id, statuses)
    st.caption(
        f"{len(runs)} {' and '.join(s for s in statuses if s != 'failed')} runs of {dataset}. The grey "
        "staircase is the Pareto front: no run is both smaller (or faster) and more accurate than a run on it."
    )
    left, right = st.columns(2)
    for col, x, axis, title, key in (
        (left, "size_mb", "size (MB, log)", "Accuracy vs size", "cmp_pareto_size"),
        (right, "b1_median_ms", "latency at batch 1 (ms, log)", "Accuracy vs latency", "cmp_pareto_latency"),
    ):
        front = compare.pareto_front(runs, x, "test_acc")
        col.plotly_chart(charts.pareto_scatter(runs, front, x, axis, title), key=key, width="stretch")


def confusion_section(store, teacher_id: str, table, classes: list[str]) -> None:
    st.subheader("Where they differ, class by class")
    others = table[table["kind"] != "teacher"].sort_values("kind", key=lambda k: k != "student", kind="mergesort")
    titles = dict(zip(others["id"], others["title"]))
    run_id = st.selectbox(
        "Run beside the teacher", list(titles), format_func=titles.get, key="cmp_cm_student", bind="query-params"
    )
    kind = str(others.set_index("id").loc[run_id, "kind"]).capitalize()
    pair = compare.confusion_pair(store, teacher_id, run_id, classes)
    if pair is None:
        st.info("These two runs have no comparable confusion matrices.")
        return
    zmax = float(max(pair["teacher"].max(), pair["student"].max()))
    left, right = st.columns(2)
    with left:
        st.plotly_chart(
            charts.confusion_heatmap(pair["teacher"], pair["classes"], f"Teacher: {pair['teacher_label']}", zmax),
            key="cmp_cm_teacher",
            width="stretch",
        )
    with right:
        st.plotly_chart(
            charts.confusion_heatmap(pair["student"], pair["classes"], f"{kind}: {pair['student_label']}", zmax),
            key="cmp_cm_student_fig",
            width="stretch",
        )
    diff = compare.per_class_difference(store, teacher_id, run_id, classes)
    st.plotly_chart(charts.per_class_bars(diff, kind.lower()), key="cmp_per_class", width="stretch")


st.title("Compare")
st.caption("The teacher in use against the students: how much smaller and faster, at what cost in accuracy.")
data = state.current_data()
if data is None:
    st.stop()
teacher_id, _ = state.teacher_or_stop(data, "train one (or upload a checkpoint) first.")
store = state.current_store()
picked, statuses = pick_runs(store, data.name, teacher_id)
if compare.student_options(store, data.name).empty:
    st.info(f"No students for {data.name} yet: distil one from this teacher.")
    st.page_link("app_pages/distill.py", label="Distil a student", icon=":material/compress:")
elif not picked:
    st.info("Pick one or more students above.")
for run in compare.left_out(store, picked):
    st.caption(f"Not compared: {run['title']} — {run['reason']}.")
table = compare.compare_table(store, teacher_id, picked)
if table.empty:
    st.warning(f"Teacher {teacher_id} has no test metrics to compare.")
    st.stop()
side_by_side, deployment = st.tabs(["Teacher vs students", "Deployment"], key="dep_tab", bind="query-params")
if side_by_side.open:
    with side_by_side:
        headline(store, teacher_id, table)
        table_section(table)
        bar_section(table)
        pareto_section(store, data.name, teacher_id, statuses)
        if len(table) > 1:
            confusion_section(store, teacher_id, table, data.classes)
if deployment.open:
    with deployment:
        deploy_section.render(store, data, teacher_id, picked)
