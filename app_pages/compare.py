"""Compare: the teacher in use against its students — size, speed and accuracy."""

import streamlit as st

from kd_core import fmt
from kd_core.views import compare
from ui import compare_charts as charts
from ui import deploy_section, state

TABLE_FORMAT = {
    "label": st.column_config.TextColumn("run"),
    "kind": st.column_config.TextColumn("kind"),
    "params": st.column_config.NumberColumn("params", format="localized"),
    "size_mb": st.column_config.NumberColumn("size (MB)", format="%.3f"),
    "x_smaller": st.column_config.NumberColumn("× fewer params", format="%.1f×"),
    "b1_median_ms": st.column_config.NumberColumn("b1 median (ms)", format="%.3f"),
    "b1_p90_ms": st.column_config.NumberColumn("b1 p90 (ms)", format="%.3f"),
    "b256_median_ms": st.column_config.NumberColumn("b256 median (ms)", format="%.3f"),
    "b256_p90_ms": st.column_config.NumberColumn("b256 p90 (ms)", format="%.3f"),
    "samples_per_s": st.column_config.NumberColumn("throughput (samples/s, b256)", format="compact"),
    "test_acc": st.column_config.NumberColumn("test acc", format="%.4f"),
    "acc_vs_teacher": st.column_config.NumberColumn("Δ acc vs teacher", format="%+.4f"),
    "agreement": st.column_config.NumberColumn(
        "agreement with teacher",
        format="%.4f",
        help="Share of test images where the top-1 class matches this teacher's. Empty for runs of another teacher.",
    ),
    "id": st.column_config.TextColumn("run id"),
}


def pick_students(store, dataset: str, teacher_id: str) -> list[str]:
    """Students and baselines to set against the teacher; by default, this teacher's own."""
    options = compare.student_options(store, dataset)
    labels = {r.id: f"{r.label} · {r.kind} · {r.id}" for r in options.itertuples()}
    default = compare.default_students(store, dataset, teacher_id)
    if st.session_state.get("cmp_for_teacher", teacher_id) != teacher_id:  # teacher changed: its own runs
        st.session_state["cmp_runs"], default = default, None
    st.session_state["cmp_for_teacher"] = teacher_id
    return st.multiselect(
        "Students and baselines",
        list(labels),
        format_func=labels.get,
        default=default,
        key="cmp_runs",
        bind="query-params",
        help="Any stored student or no-KD baseline of this dataset. The default: the "
        "students distilled from this teacher and their baselines.",
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


def pareto_section(store, dataset: str, teacher_id: str) -> None:
    st.subheader("Accuracy for its cost: every stored run")
    runs = compare.scatter_frame(store, dataset, teacher_id)
    st.caption(
        f"{len(runs)} runs of {dataset}. The dotted staircase is the Pareto front: no run is both "
        "smaller (or faster) and more accurate than a run on it."
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
    students = table[table["kind"] != "teacher"]
    labels = dict(zip(students["id"], students["label"] + " · " + students["kind"] + " · " + students["id"]))
    student_id = st.selectbox(
        "Student", list(labels), format_func=labels.get, key="cmp_cm_student", bind="query-params"
    )
    pair = compare.confusion_pair(store, teacher_id, student_id, classes)
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
            charts.confusion_heatmap(pair["student"], pair["classes"], f"Student: {pair['student_label']}", zmax),
            key="cmp_cm_student_fig",
            width="stretch",
        )
    diff = compare.per_class_difference(store, teacher_id, student_id, classes)
    st.plotly_chart(charts.per_class_bars(diff, pair["student_label"]), key="cmp_per_class", width="stretch")


st.title("Compare")
st.caption("The teacher in use against the students: how much smaller and faster, at what cost in accuracy.")
data = state.current_data()
if data is None:
    st.stop()
teacher_id, _ = state.teacher_or_stop(data, "train one (or upload a checkpoint) first.")
store = state.current_store()
picked = pick_students(store, data.name, teacher_id)
if compare.student_options(store, data.name).empty:
    st.info(f"No students for {data.name} yet: distil one from this teacher.")
    st.page_link("app_pages/distill.py", label="Distil a student", icon=":material/compress:")
elif not picked:
    st.info("Pick one or more students above.")
table = compare.compare_table(store, teacher_id, picked)
if table.empty:
    st.warning(f"Teacher {teacher_id} has no test metrics to compare.")
    st.stop()
side_by_side, deployment = st.tabs(["Teacher vs students", "Deployment"], key="dep_tab", bind="query-params")
if side_by_side.open:
    with side_by_side:
        table_section(table)
        bar_section(table)
        pareto_section(store, data.name, teacher_id)
        if len(table) > 1:
            confusion_section(store, teacher_id, table, data.classes)
if deployment.open:
    with deployment:
        deploy_section.render(store, data, teacher_id, picked)
