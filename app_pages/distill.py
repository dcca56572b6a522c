"""Distill: size the student, pick the method(s), set T and λ, run in the background, watch it live,
read the result."""

import streamlit as st

from kd_core import fmt
from kd_core.errors import KDError
from kd_core.jobs import JobBusy, JobSnapshot
from kd_core.views import compare, label_view, method_mix, pipelines_view, studio
from ui import forms, live, method_picker, state


def student_widgets(data, teacher_id: str) -> dict:
    model = forms.model_widgets("s", "student", data.name)
    c = st.columns(2)
    temperature = forms.slider(
        c[0],
        "Temperature T",
        1.0,
        20.0,
        4.0,
        "T",
        step=0.5,
        help="Higher T softens the teacher's distribution and reveals its dark knowledge.",
    )
    alpha = forms.slider(
        c[1],
        "λ (weight of the teacher)",
        0.0,
        1.0,
        studio.DEFAULT_LAMBDA,
        "lam",
        step=0.05,
        help="0 trains on labels only; 1 learns from the teacher only.",
    )
    selected, weights, params = method_picker.method_widgets(method_mix.methods())
    budget = forms.budget_widgets("s", epochs=20, lr=3e-3)
    labels = forms.label_widgets("s", data, transfer=True)
    consistency = forms.consistency_widgets("s")
    if labels is not None:
        st.caption(label_view.teacher_budget_note(state.current_store(), teacher_id, labels["labels"]))
    baseline = st.checkbox(
        "Also train the same student without distillation (baseline)", value=True, key="baseline", bind="query-params"
    )
    try:
        method, method_params, mix_error = *method_mix.mix_args(selected, weights, params), ""
    except KDError as err:
        method, method_params, mix_error = "kd", [], str(err)
    return {
        **model,
        "temperature": temperature,
        "alpha": alpha,
        "baseline": baseline,
        "method": method,
        "method_params": tuple(method_params),
        "mix_error": mix_error,
        "label_budget": labels,
        "consistency": consistency,
        **budget,
    }


def size_preview(data, teacher_id: str, w: dict) -> None:
    """Before anything is trained: the student's size against the teacher's."""
    student = studio.model_info(w["family"], w["size"], w["depth"], data, w["width"])
    card = studio.run_card(state.current_store(), teacher_id)
    teacher = {k: card[k] for k in ("params", "flops", "bytes")}
    ratio = studio.compression(student, teacher)
    c = st.columns(4)
    c[0].metric(
        "Student parameters",
        f"{student['params']:,}",
        f"teacher {teacher['params']:,}",
        delta_color="off",
        delta_arrow="off",
    )
    c[1].metric(
        "FLOPs per sample",
        f"{student['flops']:,}",
        f"teacher {teacher['flops']:,}" if teacher["flops"] is not None else "teacher: a black box, not counted",
        delta_color="off",
        delta_arrow="off",
    )
    c[2].metric(
        "Size",
        f"{student['bytes'] / 1e6:.3f} MB",
        f"teacher {teacher['bytes'] / 1e6:.2f} MB",
        delta_color="off",
        delta_arrow="off",
    )
    c[3].metric("Compression", f"{ratio['params']:.1f}×", "fewer parameters", delta_color="off", delta_arrow="off")
    if ratio["params"] < 1:
        st.warning("This student is larger than its teacher: born-again distillation, not compression.")


def student_config(data, teacher_id: str, w: dict):
    budget = {k: w[k] for k in ("epochs", "lr", "batch_size", "seed", "optimizer", "cosine")}
    return forms.run_config(
        "student",
        data,
        w["family"],
        w["size"],
        w["depth"],
        temperature=w["temperature"],
        alpha=w["alpha"],
        teacher_id=teacher_id,
        width=w["width"],
        method=w["method"],
        method_params=w["method_params"],
        **budget,
        **(w["label_budget"] or {}),
        **w["consistency"],
    )


def method_preview(data, teacher_id: str, teacher, w: dict) -> bool:
    """The mix's cost before it trains; False (and the reason shown) when it cannot run."""
    if w["mix_error"]:
        st.error(w["mix_error"])
        return False
    preview = method_mix.preview(student_config(data, teacher_id, w), data, teacher)
    method_picker.preview_line(preview, method_mix.cli_flags(w["method"], w["method_params"]))
    return "error" not in preview


def launch(data, teacher_id: str, teacher, w: dict) -> None:
    cfg = student_config(data, teacher_id, w)
    try:
        job = studio.start_distill(state.job_manager(), state.current_store(), data, teacher, cfg, w["baseline"])
    except (JobBusy, KDError) as err:
        st.error(str(err))
        return
    st.query_params["job"] = job.id
    st.rerun()


def _cards(items: list[tuple]) -> None:
    """Metric cards side by side, as many columns as there are cards (no gap for a missing one)."""
    for col, (label, value, delta, kw) in zip(st.columns(len(items)), items):
        col.metric(label, value, delta, **kw)


def result_cards(snap: JobSnapshot, teacher_id: str) -> None:
    """Student against teacher and baseline (each difference with its noise), compression and
    speed-up; what a stopped or failed job left says so."""
    runs = {o["kind"]: studio.run_card(state.current_store(), o["run_id"]) for o in snap.outcomes}
    student, baseline = runs.get("student"), runs.get("baseline")
    if not student or student["test_acc"] is None:
        if snap.status in ("stopped", "failed"):
            st.info("No result: the student did not finish an epoch before the job ended.")
        return
    teacher = studio.run_card(state.current_store(), student["teacher_id"] or teacher_id)
    if not teacher or teacher["test_acc"] is None:
        return
    st.subheader("Result")
    if student.get("labels"):
        st.caption(label_view.trained_on(student["labels"]))
    if student["status"] == "stopped":
        st.caption("Stopped early: these are the numbers of a partly trained student.")
    diffs = compare.headline_differences(state.current_store(), teacher["id"], student["id"])
    off = dict(delta_color="off", delta_arrow="off")
    items = [
        (
            "Student test accuracy",
            f"{student['test_acc']:.4f}",
            f"{fmt.signed(student['test_acc'] - teacher['test_acc'])} vs teacher",
            {},
        )
    ]
    if baseline and baseline["test_acc"] is not None and "baseline" in diffs:
        d = diffs["baseline"]
        items.append(("Gain over no-KD baseline", fmt.signed(d.diff), f"{d.images:+d} test images", off))
    items.append(("Teacher test accuracy", f"{teacher['test_acc']:.4f}", None, {}))
    items.append(
        (
            "Compression",
            f"{teacher['params'] / student['params']:.1f}×",
            f"{teacher['bytes'] / 1e6:.2f} → {student['bytes'] / 1e6:.3f} MB",
            off,
        )
    )
    if teacher["latency_b1_ms"] and student["latency_b1_ms"]:
        items.append(
            (
                "Speed-up, batch 1",
                f"{teacher['latency_b1_ms'] / student['latency_b1_ms']:.1f}×",
                f"{student['latency_b1_ms']:.3f} vs {teacher['latency_b1_ms']:.3f} ms",
                off,
            )
        )
    _cards(items)
    lines = []
    asked = snap.notes.get("started_with", {}).get("baseline", True)
    if "baseline" in diffs:
        lines.append(f"Against its no-KD baseline: {diffs['baseline'].text()}.")
    elif not asked:
        lines.append("No baseline was asked for, so what distillation bought is unknown.")
    elif snap.status == "stopped":
        lines.append("No baseline: the job was stopped before it was trained, so what distillation bought is unknown.")
    if "teacher" in diffs:
        lines.append(f"Against the teacher: {diffs['teacher'].text()}.")
    if student["agreement"] is not None:
        lines.append(f"The student agrees with the teacher on {student['agreement']:.1%} of test images.")
    if student["peak_rss_bytes"]:
        lines.append(f"Peak memory (RSS) while the student trained: {student['peak_rss_bytes'] / 2**20:,.0f} MiB.")
    st.caption("  \n".join(lines))
    st.page_link("app_pages/compare.py", label="Compare in detail", icon="➡️")


def settings_note(job, w: dict, busy: bool) -> None:
    """The run shown below is the job's, not the sliders': say what it was started with when the
    sliders (or a link's values) now read otherwise."""
    started = job.snapshot().notes.get("started_with")
    if not started:
        if busy:
            st.caption("A run is in progress; it keeps going while you move the sliders.")
        return
    now = {"T": w["temperature"], "λ": w["alpha"], "epochs": w["epochs"], "seed": w["seed"]}
    moved = [
        f"{k}={started[k]:g} (now {v:g})" for k, v in now.items() if k in started and float(started[k]) != float(v)
    ]
    if moved:
        st.info(
            f"The run below was started with {', '.join(moved)}: press Distill to train with the sliders' values.",
            icon=":material/tune:",
        )
    elif busy:
        st.caption("A run is in progress; it keeps going while you move the sliders.")


def pipeline_section(data, teacher_id: str, teacher, w: dict, busy: bool) -> None:
    """TAKD, BAN or DML with the settings above, as one job whose stages are stored runs."""
    with st.expander("Multi-model methods: TAKD, BAN, DML", icon=":material/account_tree:"):
        pipes = pipelines_view
        method = st.radio("Method", list(pipes.PIPELINES), format_func=pipes.PIPELINES.get, key="pipe_method")
        st.caption(pipes.PIPELINE_HELP[method])
        models = st.text_input(
            "Models", pipes.DEFAULT_MODELS[method], key=f"pipe_models_{method}", help=pipes.MODELS_HELP
        )
        generations, ensemble = 2, False
        if method == "ban":
            generations = int(st.number_input("Generations after gen 0", 1, 10, 2, key="pipe_gens"))
            ensemble = st.checkbox("Teach with the mean logits of every earlier generation", key="pipe_ensemble")
        if st.button("Start", key="pipe_start", disabled=busy or w["label_budget"] is None):
            base = student_config(data, teacher_id, w)
            try:
                pipes.start_pipeline(
                    state.job_manager(), state.current_store(), data, teacher, teacher_id, base, method, models,
                    generations, ensemble,
                )  # fmt: skip
            except (JobBusy, KDError) as err:
                st.error(str(err))
                return
            st.rerun()
        # find_job returns any live training job: a distill job is drawn above, not a second time
        # here (a second panel doubled every tick's work while the student trained).
        job = live.find_job(("pipeline",))
        if job is not None and job.kind == "pipeline":
            snap = live.show_job(job, "pipeline")
            if snap.outcomes:
                st.dataframe(pipes.outcome_rows(snap), hide_index=True)


st.title("Distill")
data = state.current_data()
teacher_id, teacher = state.current_teacher()
if data is not None and teacher is None:
    st.info("Distillation needs a teacher. Train one, pick a saved one in the sidebar, or upload a checkpoint.")
    st.page_link("app_pages/teacher.py", label="Go to the Teacher page", icon="➡️")
    quick = live.find_job(("quick",))
    if quick is not None and quick.live:  # Quick start is training the teacher: show it
        live.show_job(quick, "distill")
elif data is not None:
    widgets = student_widgets(data, teacher_id)
    size_preview(data, teacher_id, widgets)
    runnable = method_preview(data, teacher_id, teacher, widgets)
    busy = state.job_manager().current() is not None
    if st.button(
        "Distill", type="primary", key="distill", disabled=busy or not runnable or widgets["label_budget"] is None
    ):
        launch(data, teacher_id, teacher, widgets)
    job = live.find_job(("distill", "quick"))
    if job is not None:
        settings_note(job, widgets, busy)
    if job is not None:
        snap = live.show_job(job, "distill")
        if snap.status != "running":
            result_cards(snap, teacher_id)
    pipeline_section(data, teacher_id, teacher, widgets, busy)
