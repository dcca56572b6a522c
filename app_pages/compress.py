"""Compress: give a teacher and a goal; an Optuna search finds the student, timed on this machine
before it trains, and the Pareto front fills in live. The chosen student goes to Deployment."""

import streamlit as st

from kd_core import fmt
from kd_core.errors import KDError
from kd_core.jobs import Job, JobBusy, JobSnapshot
from kd_core.views import compress_view as cv
from kd_core.views import studio
from ui import compress_charts, forms, live, state

WIDTHS = [2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048]
BACKENDS = {"inprocess": "In-process (this server)", "ray": "Ray"}
MODE_NAMES = {"constrained": "Within a goal", "pareto": "Pareto front (no single goal)"}
RUNTIME_NAMES = {
    "eager": "PyTorch (eager)",
    "torchscript": "TorchScript",
    "onnxruntime": "ONNX Runtime",
    "onnxruntime-cuda": "ONNX Runtime (CUDA)",
}
TABLE = {
    "number": st.column_config.NumberColumn("trial", format="%d"),
    "state": "state",
    "label": "student · T · λ · precision",
    "latency_ms": st.column_config.NumberColumn("latency (ms)", format="%.4f"),
    "speedup": st.column_config.NumberColumn("× faster than teacher", format="%.1f×"),
    "size_mb": st.column_config.NumberColumn("size (MB)", format="%.4f"),
    "val_acc": st.column_config.NumberColumn("val acc", format="%.4f"),
    "drop_points": st.column_config.NumberColumn("drop (points)", format="%+.2f"),
    "test_acc": st.column_config.NumberColumn("test acc", format="%.4f"),
    "feasible": st.column_config.CheckboxColumn("meets the goal"),
    "why": "pruned or failed because",
    "epochs": st.column_config.NumberColumn("epochs", format="%d"),
    "seconds": st.column_config.NumberColumn("seconds", format="%.1f"),
    "run_id": "run id",
}


# ---------------------------------------------------------------- a new search


def goal_widgets() -> dict:
    c = st.columns(3)
    runtimes = cv.available_runtimes()
    w = {
        "runtime": c[0].selectbox(
            "Target runtime",
            runtimes,
            index=runtimes.index("onnxruntime") if "onnxruntime" in runtimes else 0,
            format_func=RUNTIME_NAMES.get,
            key="cs_runtime",
            bind="query-params",
        ),
        "batch": c[1].number_input("Batch size it runs at", 1, 4096, 1, key="cs_batch", bind="query-params"),
        "mode": c[2].radio(
            "Search for", list(MODE_NAMES), format_func=MODE_NAMES.get, key="cs_mode", bind="query-params"
        ),
    }
    c = st.columns(4)
    w["max_drop"] = c[0].number_input(
        "Accuracy drop ≤ (points)", 0.0, 100.0, 1.0, step=0.5, key="cs_drop", bind="query-params"
    )
    w["speedup"] = c[1].number_input(
        "≥ × faster than the teacher (0: no bound)", 0.0, 1000.0, 10.0, step=1.0, key="cs_speedup", bind="query-params"
    )
    w["latency"] = c[2].number_input(
        "Latency ≤ ms (0: no bound)", 0.0, 1e4, 0.0, step=0.01, format="%.3f", key="cs_latency", bind="query-params"
    )
    w["size"] = c[3].number_input(
        "Size ≤ MB (0: no bound)", 0.0, 1e4, 0.0, step=0.1, format="%.3f", key="cs_size", bind="query-params"
    )
    return w


def space_widgets() -> dict:
    with st.expander("Search space (what Optuna may pick)"):
        c = st.columns(3)
        w = {
            "families": c[0].multiselect("Families", ["mlp", "cnn"], default=["mlp"], key="cs_families"),
            "widths": c[1].select_slider("MLP width", WIDTHS, value=(8, 512), key="cs_widths"),
            "depths": c[2].slider("MLP hidden layers", 0, 4, (1, 2), key="cs_depths"),
        }
        c = st.columns(3)
        w["cnn_widths"] = c[0].select_slider("CNN width", WIDTHS[:8], value=(4, 32), key="cs_cnn_widths")
        w["temperatures"] = c[1].slider("Temperature T", 0.5, 20.0, (1.0, 8.0), step=0.5, key="cs_T")
        w["alphas"] = c[2].slider("λ", 0.0, 1.0, (0.1, 0.95), step=0.05, key="cs_lam")
        c = st.columns(3)
        w["precisions"] = c[0].multiselect(
            "Precisions", list(cv.PRECISIONS), default=list(cv.PRECISIONS), key="cs_precisions"
        )
        w["methods"] = st.multiselect(
            "Distillation methods (each with its main weight searched; none: KD)",
            list(cv.METHOD_NAMES),
            default=[],
            key="cs_methods",
            help="Feature methods need a matching student and teacher (attention transfer: CNNs).",
        )
        w["sampler"] = c[1].selectbox("Sampler", cv.SAMPLERS, key="cs_sampler", help="tpe: Optuna's default.")
        w["pruner"] = c[2].selectbox(
            "Pruner", cv.PRUNERS, key="cs_pruner", help="Stops a hopeless trial after an epoch (within a goal only)."
        )
    return w


def budget_widgets() -> dict:
    c = st.columns(2)
    w = {
        "trials": c[0].slider("Trials", 2, 200, 20, key="cs_trials", bind="query-params"),
        "minutes": c[1].number_input(
            "Minutes (0: no limit)", 0.0, 24 * 60.0, 0.0, step=5.0, key="cs_minutes", bind="query-params"
        ),
    }
    w["train"] = forms.budget_widgets("cs", epochs=5, lr=3e-3)
    return w


def study_config(data, teacher_id: str, goal: dict, space: dict, budget: dict):
    s, b = state.settings(), budget["train"]
    train = cv.TrainConfig(
        epochs=int(b["epochs"]),
        batch_size=int(b["batch_size"]),
        lr=float(b["lr"]),
        optimizer=b["optimizer"],
        cosine=bool(b["cosine"]),
        seed=int(b["seed"]),
        device=s.get("device", "auto"),
        threads=int(s.get("threads", 0)),
        precision=s.get("precision", "fp32"),
        spare_cores=studio.DASHBOARD_SPARE_CORES,
    )
    return cv.CompressConfig(
        teacher_id=teacher_id,
        data=cv.DataConfig(dataset=data.name, root=s.get("data_root", "data"), image_size=int(s.get("image_size", 32))),
        train=train,
        runtime=goal["runtime"],
        batch_size=int(goal["batch"]),
        goal=cv.Goal(
            max_drop=float(goal["max_drop"]),
            max_latency_ms=goal["latency"] or None,
            min_speedup=goal["speedup"] or None,
            max_size_mb=goal["size"] or None,
        ),
        mode=goal["mode"],
        space=cv.SearchSpace(
            families=tuple(space["families"]),
            mlp_widths=tuple(space["widths"]),
            mlp_depths=tuple(space["depths"]),
            cnn_widths=tuple(space["cnn_widths"]),
            temperatures=tuple(space["temperatures"]),
            alphas=tuple(space["alphas"]),
            precisions=tuple(space["precisions"]),
            methods=cv.method_axes(space["methods"]),
        ),
        sampler=space["sampler"],
        pruner=space["pruner"],
        trials=int(budget["trials"]),
        minutes=budget["minutes"] or None,
        seed=int(b["seed"]),
    )


def launch(data, study, backend: str = "inprocess", trials: int | None = None) -> None:
    manager = state.job_manager()
    try:
        job = cv.start_compress(manager, state.current_store(), data, study, backend, trials=trials)
    except (JobBusy, KDError) as err:
        st.error(str(err))
        return
    st.query_params["job"] = job.id
    st.session_state["cs_view_next"] = cv.job_study_id(job.snapshot()) or (study if isinstance(study, str) else None)
    st.rerun()


def new_search(data, teacher_id: str, busy: bool) -> None:
    st.subheader("New search")
    st.caption(
        f"Distils students from the teacher in use ({teacher_id}). Each candidate is timed under the target "
        "runtime on this machine before it trains; one that cannot meet the latency or size bound is dropped "
        "without training."
    )
    goal, space, budget = goal_widgets(), space_widgets(), budget_widgets()
    backend = st.radio("Backend", list(BACKENDS), format_func=BACKENDS.get, key="cs_backend", horizontal=True)
    if backend == "ray" and not cv.ray_available():
        st.warning(f"Ray is not available: {cv.RAY_MISSING}", icon=":material/warning:")
    cfg = study_config(data, teacher_id, goal, space, budget)
    problem = cv.checked(cfg)
    if problem:
        st.error(problem)
    if st.button("Search", type="primary", key="cs_start", icon=":material/search:", disabled=busy or bool(problem)):
        st.session_state.pop("cs_view_next", None)
        launch(data, cfg, backend)
    if busy:
        st.caption("A job is running; a search can start once it ends (or is stopped).")


# ---------------------------------------------------------------- results, live while a study runs


def job_status(job: Job, snap: JobSnapshot) -> None:
    note = snap.notes.get("compress") or {}
    if snap.status == "running":
        done, total = note.get("done", 0), note.get("total") or 0
        stopping = "Stopping… finished trials are kept; the trial in progress runs again on resume."
        live.progress_row(
            job, snap, done / total if total else 0.0, note.get("phase", "starting…"), "cs_stop", stopping
        )
    elif snap.status == "stopped":
        st.warning(f"Stopped: {snap.title}. Finished trials are kept: resume it to go on.")
    elif snap.status == "failed":
        st.error(f"Failed: {snap.title} — {snap.message}")


def chosen_section(s: dict) -> None:
    pick, ref = s["chosen"], s["reference"]
    if pick is None:
        if s["done"] or s["infeasible"]:
            st.warning(s["verdict"], icon=":material/search_off:")
        return
    st.success(s["verdict"], icon=":material/verified:")
    v = cv.versus_teacher(pick, ref)
    c = st.columns(4)
    c[0].metric("Validation accuracy", fmt.num(v["val_acc"]), f"{-v['drop_points']:+.2f} points vs teacher")
    c[1].metric("Latency", f"{v['latency_ms']:.4f} ms", f"{v['speedup']:.1f}× faster", delta_color="off")
    c[2].metric("Size", f"{v['size_mb']:.3f} MB", f"{v['smaller']:.1f}× smaller", delta_color="off")
    c[3].metric("Test accuracy", fmt.num(v["test_acc"]), f"teacher {fmt.num(v['teacher_test_acc'])}", delta_color="off")
    link = cv.deploy_link(state.current_store(), s)
    if link and state.settings().get("dataset") != s["config"].data.dataset:
        st.caption(f"To deploy it, pick {s['config'].data.dataset} as the dataset in the sidebar.")
    elif link:
        st.page_link(
            cv.DEPLOY_PAGE,
            label="Open in Deployment (export, int8, model card)",
            icon=":material/rocket_launch:",
            query_params=link,
        )


def study_view(study_id: str, running: bool) -> None:
    store = state.current_store()
    s = cv.study_state(store, study_id)
    cfg = s["config"]
    st.caption(
        f"{study_id}: {s['done']} of {cfg.trials} trials · goal: {cfg.goal.text()} · {cfg.runtime} at batch "
        f"{cfg.batch_size} · {cfg.sampler} sampler, {cfg.pruner} pruner"
        + (" · running: the fronts fill in as trials finish." if running else ".")
    )
    chosen_section(s)
    left, right = st.columns(2)
    left.plotly_chart(compress_charts.pareto_figure(s, "latency"), key="cs_front_latency", width="stretch")
    right.plotly_chart(compress_charts.pareto_figure(s, "size"), key="cs_front_size", width="stretch")
    if s["machine"]:
        st.caption(f"Latency timed before training, on this {s['machine']}; the median of timed calls after warm-up.")
    st.dataframe(s["rows"], key="cs_trials", hide_index=True, column_config=TABLE, column_order=list(TABLE))


def results_section(studies: list[dict], job) -> None:
    st.subheader("Results")
    labels = {s["id"]: s["label"] for s in studies}
    if not labels:
        st.caption("No search in this store yet.")
        return
    if st.session_state.get("cs_view_next") in labels:
        st.session_state["cs_view"] = st.session_state.pop("cs_view_next")
    if st.session_state.get("cs_view") not in labels:
        running = cv.job_study_id(job.snapshot()) if job is not None else None
        st.session_state["cs_view"] = running if running in labels else next(iter(labels))
    study_id = st.selectbox("Study", list(labels), format_func=labels.get, key="cs_view", bind="query-params")

    def panel(snap: JobSnapshot | None) -> None:
        running = snap is not None and cv.job_study_id(snap) == study_id
        if running:
            job_status(job, snap)
        study_view(study_id, running and snap.status == "running")

    live.poll(job, panel)  # rerun as a whole when the job ends: Resume comes back
    resume_part(studies, study_id, job)


def resume_part(studies: list[dict], study_id: str, job) -> None:
    if job is not None and job.live:
        return
    row = next(s for s in studies if s["id"] == study_id)
    c = st.columns([1, 3], vertical_alignment="bottom")
    more = c[0].number_input(
        "Trials in the study", row["done"] + 1, 1000, max(row["trials"], row["done"] + 5), key="cs_more"
    )
    if c[1].button("Resume", key="cs_resume", icon=":material/resume:"):
        data = state.dataset(row["dataset"], row["data_root"], row["image_size"])
        launch(data, study_id, st.session_state.get("cs_backend", "inprocess"), int(more))


# ---------------------------------------------------------------- page


st.title("Compress")
st.caption(
    "The smallest fast student that keeps the teacher's accuracy: an Optuna search over student size, "
    "T, λ and int8, timed on this machine under the runtime it will ship on."
)
job = live.find_job((cv.JOB_KIND,))
busy = state.job_manager().current() is not None
data = state.current_data()
teacher_id = state.settings().get("teacher_id")
if job is not None:
    results_section(cv.study_list(state.current_store()), job)
if data is not None and not teacher_id:
    st.info("A search distils from a teacher. Train one, or pick a saved one in the sidebar.")
    st.page_link("app_pages/teacher.py", label="Go to the Teacher page", icon="➡️")
elif data is not None:
    new_search(data, teacher_id, busy)
if job is None:
    results_section(cv.study_list(state.current_store()), None)
