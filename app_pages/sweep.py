"""Sweep: method × temperature × λ × student size over seeds, with live heatmaps, paired tests, stop and resume."""

import streamlit as st

from kd_core.errors import KDError
from kd_core.jobs import Job, JobBusy, JobSnapshot
from kd_core.views import studio, sweep_view
from kd_core.views.sweep_view import (
    RAY_MISSING,
    RAY_START_S,
    SIGNIFICANCE,
    TEST_NAME,
    create_sweep,
    estimate,
    gain_curve,
    load_sweep,
    multiple_tests,
    pending,
    start_sweep,
    sweep_grids,
    sweep_results,
)
from ui import experiment_charts, forms, live, state

BACKENDS = {"inprocess": "In-process (this server)", "ray": "Ray"}
# The Results select box (kd_core.sweep.SWEEP_METRICS), test accuracy first: the default. The 144-image
# validation split of digits saturates (the best epoch reaches 142/144 in every cell): no gain can show.
PAGE_METRICS = ("test_acc", "best_val_acc", "final_val_acc")


# ---------------------------------------------------------------- a new sweep


def grid_widgets(data) -> dict:
    """The axes as lists, the student family and the training budget (all kept in the URL)."""
    preset = studio.presets(data.name)["student"]
    c = st.columns(4)
    w = {
        "temperatures": c[0].text_input(
            "Temperatures T", "1, 2, 4", key="sw_T", bind="query-params", help="Comma-separated, each above 0."
        ),
        "alphas": c[1].text_input(
            "λ values",
            "0.5, 0.9",
            key="sw_lam",
            bind="query-params",
            help="Weights of the teacher's soft targets, in [0, 1].",
        ),
        "sizes": c[2].text_input(
            "Student sizes",
            f"{max(4, preset.size // 2)}, {preset.size}",
            key="sw_sizes",
            bind="query-params",
            help="MLP hidden width or CNN channel width, comma-separated.",
        ),
        "seeds": c[3].number_input(
            "Seeds per configuration",
            1,
            20,
            3,
            key="sw_seeds",
            bind="query-params",
            help="Each configuration and its no-KD baseline are trained once per seed.",
        ),
    }
    c = st.columns(3)
    w["budgets"] = c[2].text_input(
        "Label budgets",
        "all",
        key="sw_budgets",
        bind="query-params",
        help="Labelled training images per run, e.g. 50, 200, all: the gain-versus-labels curve. With a "
        "budget, the rest of the training split is an unlabelled transfer set; each seed draws its own subset.",
    )
    w["family"] = c[0].selectbox(
        "Student family",
        ["mlp", "cnn"],
        index=["mlp", "cnn"].index(preset.family),
        key="sw_family",
        bind="query-params",
    )
    w["depth"] = c[1].slider(
        "Hidden layers", 0, 4, preset.depth, key="sw_depth", bind="query-params", disabled=w["family"] != "mlp"
    )
    w["methods"] = st.text_input(
        "Methods",
        "kd",
        key="sw_methods",
        bind="query-params",
        help="Method mixes, comma-separated: kd, dkd, 0.5*kd+1*at (`kd-studio methods` lists them). "
        "Each is a grid of its own, compared with the same baselines.",
    )
    w["budget"] = forms.budget_widgets("sw", epochs=5, lr=3e-3)
    return w


def sweep_config(data, teacher_id: str, w: dict):
    """The SweepConfig the fields describe, or None (with the reason shown)."""
    b = w["budget"]
    data_cfg, train = forms.budget_configs(data, b)
    try:
        cfg = sweep_view.make_sweep(
            w["temperatures"],
            w["alphas"],
            w["sizes"],
            w["seeds"],
            b["seed"],
            teacher_id,
            w["family"],
            w["depth"],
            data_cfg,
            train,
            w["budgets"],
            w["methods"],
        )
        sweep_view.check_sweep_data(cfg, data)  # a budget the dataset cannot give: refused before it is stored
        return cfg
    except KDError as err:
        st.error(str(err))
        return None


def backend_parallel(backend: str | None) -> tuple[int, float]:
    """(runs at once, start-up seconds) of a backend, for the time estimate."""
    return (sweep_view.ray_workers(), RAY_START_S) if backend == "ray" else (1, 0.0)


def plan_summary(data, cfg, backend: str | None) -> None:
    counts = sweep_view.run_counts(cfg)
    est = estimate(state.current_store(), cfg, data.info(), None, *backend_parallel(backend))
    c = st.columns([1, 1, 3])
    c[0].metric("Runs", f"{counts['total']}")
    c[1].metric("Estimated time", sweep_view.duration_text(None if est is None else est.seconds))
    c[2].caption(
        f"{counts['cells']} distillations ({counts['configs']} configurations of "
        f"{'method × ' if len(cfg.methods) > 1 else ''}T × λ × size"
        f"{' × label budget' if len(cfg.label_budgets) > 1 else ''}, "
        f"× {len(cfg.seeds)} seed{'s' * (len(cfg.seeds) > 1)}) + {counts['baselines']} no-KD "
        f"baselines (one per size{', budget' if len(cfg.label_budgets) > 1 else ''} and seed, each distillation "
        f"is compared with the baseline of its seed). {sweep_view.estimate_note(est, data.name)}"
    )


def backend_widgets() -> tuple[str, str | None] | None:
    """(backend, Ray address or None), or None when the choice cannot run here."""
    c = st.columns([1, 2])
    backend = c[0].radio(
        "Backend", list(BACKENDS), format_func=BACKENDS.get, key="sw_backend", horizontal=True, bind="query-params"
    )
    if backend == "inprocess":
        return backend, None
    if not sweep_view.ray_available():
        c[1].warning(f"Ray is not available: {RAY_MISSING}", icon=":material/warning:")
        return None
    address = c[1].text_input(
        "Ray address (optional)",
        key="sw_ray_address",
        placeholder="ray://host:10001",
        help="Empty: a small local Ray instance is started for the sweep and shut down after.",
    )
    return backend, address.strip() or None


def launch(data, sweep, backend: tuple[str, str | None]) -> None:
    """Start a new sweep (a SweepConfig) or resume one (its id) in the shared worker."""
    manager, store = state.job_manager(), state.current_store()
    if manager.current() is not None:
        st.error(f"'{manager.current().title}' is still running; stop it or wait for it to finish.")
        return
    try:
        sweep_id = sweep if isinstance(sweep, str) else create_sweep(store, sweep, data)
        job = start_sweep(manager, store, data, sweep_id, backend[0], backend[1])
    except (JobBusy, KDError) as err:
        st.error(str(err))
        return
    st.query_params["job"] = job.id
    st.session_state["sw_view_next"] = sweep_id  # shown in Results on the rerun
    st.rerun()


def new_sweep_section(data, teacher_id: str, busy: bool) -> None:
    st.subheader("New sweep")
    st.caption(
        f"Distils every student size at every T and λ from the teacher in use ({teacher_id}), "
        "each over several seeds, beside a no-KD baseline of the same size and seed."
    )
    w = grid_widgets(data)
    cfg = sweep_config(data, teacher_id, w)
    plan = st.container()  # above the backend choice, drawn after it (the estimate depends on it)
    backend = backend_widgets()
    if cfg is not None:
        with plan:
            plan_summary(data, cfg, st.session_state.get("sw_backend"))
    if st.button(
        "Start sweep",
        type="primary",
        key="sw_start",
        disabled=busy or cfg is None or backend is None,
        icon=":material/play_arrow:",
    ):
        launch(data, cfg, backend)
    if busy:
        st.caption("A job is running; a new sweep can start once it ends (or is stopped).")


# ---------------------------------------------------------------- resume


def sweep_data(sweep_id: str):
    """The dataset a stored sweep was planned on (cached like the sidebar's)."""
    d = load_sweep(state.current_store(), sweep_id).data
    return state.dataset(d.dataset, d.root, d.image_size)


def resume_section(sweeps: list[dict], busy: bool, running_id: str | None) -> None:
    unfinished = [s for s in sweeps if s["left"] and s["id"] != running_id]
    if not unfinished:
        return
    st.subheader("Resume a sweep")
    labels = {s["id"]: s["label"] for s in unfinished}
    c = st.columns([3, 1], vertical_alignment="bottom")
    pick = c[0].selectbox("Unfinished sweeps", list(labels), format_func=labels.get, key="sw_resume_pick")
    store = state.current_store()
    try:
        data = sweep_data(pick)
    except KDError as err:
        st.error(f"Sweep {pick} cannot run here: {err}")
        return
    cells = pending(store, pick)
    est = estimate(
        store, load_sweep(store, pick), data.info(), cells, *backend_parallel(st.session_state.get("sw_backend"))
    )
    seconds = None if est is None else est.seconds
    st.caption(
        f"{len(cells)} run{'s' * (len(cells) != 1)} left ({sweep_view.duration_text(seconds)}); the "
        f"finished ones are kept and not run again. Runs on the backend chosen under New sweep."
    )
    if c[1].button("Resume", key="sw_resume", disabled=busy, icon=":material/resume:"):
        backend = backend_widgets_value()
        if backend is not None:
            launch(data, pick, backend)


def backend_widgets_value() -> tuple[str, str | None] | None:
    """The backend chosen in the New sweep section (in-process when that section is not shown)."""
    backend = st.session_state.get("sw_backend", "inprocess")
    if backend == "ray" and not sweep_view.ray_available():
        st.error(f"Ray is not available: {RAY_MISSING}")
        return None
    return backend, (st.session_state.get("sw_ray_address") or "").strip() or None


# ---------------------------------------------------------------- results, live while a sweep runs


def job_sweep_id(job: Job | None) -> str | None:
    if job is None:
        return None
    note = job.snapshot().notes.get("sweep")
    return note["id"] if note else job.title.removeprefix("sweep ").strip()


def job_status(job: Job, snap: JobSnapshot) -> None:
    """The sweep job's progress and Stop while it runs; how it ended, after."""
    note = snap.notes.get("sweep")
    status = snap.status
    if status == "running":
        if note is None:
            fraction, text = 0.0, "loading the teacher…"
        else:
            ran = note["done"] + note["failed"]
            eta = "" if note["eta_s"] is None else f" · {sweep_view.duration_text(note['eta_s'])} left"
            fraction = ran / max(1, note["total"])
            text = f"Sweep {note['id']} ({note['backend']}): {note['done']}/{note['total']} runs done{eta}" + (
                f" · {note['failed']} failed" if note["failed"] else ""
            )
        stopping = "Stopping… the finished runs are kept; resume the sweep later to run the rest."
        live.progress_row(job, snap, fraction, text, "sw_stop", stopping)
        if note is not None:
            st.caption(
                f"Now: {studio.progress_of(snap)['text']}"
                + (f" · {note['skipped']} were done before this start" if note["skipped"] else "")
            )
    elif status == "finished":
        st.success(f"Finished: {snap.title}" + (f" — {note['done']}/{note['total']} runs" if note else ""))
    elif status == "stopped":
        st.warning(
            f"Stopped: {snap.title}"
            + (f" after {note['done']}/{note['total']} runs" if note else "")
            + ". The finished runs are kept: resume it to run the rest."
        )
    else:
        st.error(f"Failed: {snap.title} — {snap.message}")


def results_section(sweeps: list[dict], job: Job | None) -> None:
    """The sweep job's status and the chosen sweep's heatmaps, in one fragment that redraws every
    second while the job runs (so the cells fill in as runs finish); a whole-page rerun when it ends."""
    st.subheader("Results")
    sweep_id, metric = None, PAGE_METRICS[0]
    if sweeps:
        labels = {s["id"]: s["label"] for s in sweeps}
        if st.session_state.get("sw_view_next") in labels:
            st.session_state["sw_view"] = st.session_state.pop("sw_view_next")
        if st.session_state.get("sw_view") not in labels:
            default = job_sweep_id(job)
            st.session_state["sw_view"] = default if default in labels else sweeps[0]["id"]
        c = st.columns([3, 1])
        sweep_id = c[0].selectbox("Sweep", list(labels), format_func=labels.get, key="sw_view", bind="query-params")
        metric = metric_widget(c[1])
        st.caption(
            f"Each cell: mean ± sample std over seeds, then n = finished seeds (3 decimals; hover a cell "
            f"for 4 and the test's verdict). Gain: distilled minus the no-KD baseline of the same size "
            f"and seed, averaged over seeds, then the p-value of a {TEST_NAME}, two-sided: * marks "
            f'p < {SIGNIFICANCE:g}; "no test": one seed, or the same gain on every seed, gives no verdict. '
            f"A star and an outline mark the best mean of its size — every cell of a tie, and only when "
            f"its mean gain is above 0. The colour scales span at least the 95% sampling noise of one "
            f"comparison on the evaluation split, so a difference chance alone could make stays pale."
        )
        if metric == "test_acc":
            st.caption(
                "Picking the best T and λ by the test split is optimistic: the winner's test accuracy "
                "is biased upwards by the choice itself (with many cells, one wins by luck). Confirm the "
                "chosen cell on fresh seeds before reporting it."
            )
    elif job is None:
        st.caption("No sweep in this store yet.")
        return

    def panel(snap: JobSnapshot | None) -> None:
        if snap is not None:
            job_status(job, snap)
        if sweep_id is not None:
            running = snap is not None and snap.status == "running" and sweep_id == job_sweep_id(job)
            grids(sweep_id, metric, running=running)

    live.poll(job, panel)  # rerun as a whole when the job ends: Resume is offered, the final grid shown


def metric_widget(container) -> str:
    """The Results' metric, bound to ?sw_metric=. Streamlit writes the select box's label into the URL
    ("test accuracy"); the CLI's names (`--metric test_acc`) are accepted there too."""
    asked = st.query_params.get("sw_metric")
    if asked in PAGE_METRICS:  # rewritten as the label, which the widget reads on the rerun
        st.query_params["sw_metric"] = experiment_charts.METRIC_NAMES[asked]
        st.rerun()
    return container.selectbox(
        "Accuracy", PAGE_METRICS, key="sw_metric", bind="query-params", format_func=experiment_charts.METRIC_NAMES.get
    )


def grids(sweep_id: str, metric: str, running: bool) -> None:
    """Heatmaps per student size (accuracy, then the gain, each the full width so that the cells'
    text fits), the best cell in words, the multiple-testing counts, and every cell's test in a table."""
    store = state.current_store()
    sweep = load_sweep(store, sweep_id)
    finished = len(store.list_runs(sweep_id=sweep_id, status="finished"))
    st.caption(
        f"{sweep_id}: {finished} of {sweep_view.run_counts(sweep)['total']} runs finished"
        + (" · running: the cells fill in as runs finish." if running else ".")
    )
    budget = budget_curve(sweep_id, sweep, metric)
    results = sweep_results(store, sweep_id, metric, SIGNIFICANCE, budget)
    try:  # how many images the metric is measured on: the colour scales' noise floor
        info = sweep_data(sweep_id).info()
        images = int(info["test"] if metric == "test_acc" else info["val"])
    except KDError:
        images = 0
    methods = sweep.method_texts
    for i, method in enumerate(methods):  # a pair of heatmaps per method and size
        for size, g in sweep_grids(store, sweep_id, metric, SIGNIFICANCE, results, budget, method).items():
            label = f"{sweep.family} {size}" + (f" · {method}" if len(methods) > 1 else "")
            key = f"{size}" if i == 0 else f"{size}_{i}"
            acc = experiment_charts.sweep_accuracy_heatmap(g, label, metric, images)
            st.plotly_chart(acc, key=f"sw_acc_{key}", width="stretch")
            gain = experiment_charts.sweep_gain_heatmap(g, label, SIGNIFICANCE, images)
            st.plotly_chart(gain, key=f"sw_gain_{key}", width="stretch")
            words = sweep_view.best_text(g, label)
            if words:
                st.caption(words)
    st.caption(sweep_view.significance_text(multiple_tests(results, SIGNIFICANCE), TEST_NAME))
    with st.expander("Paired t-tests: every cell's p-value"):
        st.dataframe(
            results,
            key="sw_pvalues",
            hide_index=True,
            column_order=[
                "size",
                "method",
                "temperature",
                "alpha",
                "text",
                "baseline_mean",
                "gain_text",
                "t",
                "p",
                "significant",
                "p_bh",
                "significant_bh",
                "verdict",
            ],
            column_config={
                "size": st.column_config.NumberColumn("Size", format="%d"),
                "method": "Method",
                "temperature": st.column_config.NumberColumn("T", format="%g"),
                "alpha": st.column_config.NumberColumn("λ", format="%g"),
                "text": "Accuracy (mean ± std, n)",
                "baseline_mean": st.column_config.NumberColumn("Baseline mean", format="%.4f"),
                "gain_text": "Gain over baseline",
                "t": st.column_config.NumberColumn("t", format="%.3g"),
                "p": st.column_config.NumberColumn("p", format="%.3g"),
                "significant": st.column_config.CheckboxColumn("p < α"),
                "p_bh": st.column_config.NumberColumn("p (BH-adjusted)", format="%.3g"),
                "significant_bh": st.column_config.CheckboxColumn("BH p < α"),
                "verdict": "Verdict",
            },
        )
        st.caption(
            f"Test: {TEST_NAME}, on the per-seed pairs (distilled, baseline of the same seed); "
            f"α = {SIGNIFICANCE:g}. BH: Benjamini–Hochberg adjusted p over every tested cell of the sweep "
            f"(scipy.stats.false_discovery_control)."
        )


def budget_curve(sweep_id: str, sweep, metric: str) -> int:
    """With more than one label budget: the gain-versus-labels curve, its table, and which budget the
    heatmaps below show (returned). A sweep without a budget axis shows nothing here."""
    budgets = sweep.label_budgets
    if len(budgets) < 2:
        return budgets[0]
    curve = gain_curve(state.current_store(), sweep_id, metric, SIGNIFICANCE)
    st.plotly_chart(experiment_charts.gain_curve_chart(curve, metric, SIGNIFICANCE), key="sw_curve", width="stretch")
    st.dataframe(
        curve,
        key="sw_curve_table",
        hide_index=True,
        column_order=["budget", "size", "temperature", "alpha", "text", "baseline_mean", "gain_text", "p", "verdict"],
        column_config={
            "budget": st.column_config.NumberColumn("Labels (0 = all)", format="%d"),
            "size": st.column_config.NumberColumn("Size", format="%d"),
            "temperature": st.column_config.NumberColumn("T", format="%g"),
            "alpha": st.column_config.NumberColumn("λ", format="%g"),
            "text": "Distilled (mean ± std, n)",
            "baseline_mean": st.column_config.NumberColumn("Baseline mean", format="%.4f"),
            "gain_text": "Gain over baseline",
            "p": st.column_config.NumberColumn("p", format="%.3g"),
            "verdict": "Paired t-test",
        },
    )
    return st.selectbox(
        "Heatmaps at", budgets, format_func=sweep_view.budget_name, key="sw_budget_view", bind="query-params"
    )


# ---------------------------------------------------------------- page


def setup_sections(busy: bool, running_id: str | None, resume_first: bool) -> None:
    """New sweep and Resume (Resume first after this session's sweep, which may have been stopped)."""
    if resume_first:
        resume_section(sweep_view.sweep_list(state.current_store()), busy, running_id)
    data = state.current_data()
    teacher_id = state.settings().get("teacher_id")
    if data is not None and not teacher_id:
        st.info("A sweep distils from a teacher. Train one, or pick a saved one in the sidebar.")
        st.page_link("app_pages/teacher.py", label="Go to the Teacher page", icon="➡️")
    elif data is not None:
        new_sweep_section(data, teacher_id, busy)
    if not resume_first:
        resume_section(sweep_view.sweep_list(state.current_store()), busy, running_id)


st.title("Sweep")
job = live.find_job(("sweep",))
busy = state.job_manager().current() is not None
running_id = job_sweep_id(job) if job is not None and job.live else None
if job is not None:  # a sweep of this session (or running): its progress and grid first
    results_section(sweep_view.sweep_list(state.current_store()), job)
    setup_sections(busy, running_id, resume_first=True)
else:
    setup_sections(busy, running_id, resume_first=False)
    results_section(sweep_view.sweep_list(state.current_store()), None)
