"""Methods: a leaderboard of distillation methods for the teacher in use and one student, over seeds.

Every method and the no-KD baseline train at the same seeds (plain KD always among them); the
table gives mean ± std, the gain over the baseline and over KD with paired t-tests adjusted by
Benjamini–Hochberg, and marks a best only where it beats both beyond seed noise.
"""

import streamlit as st

from kd_core.errors import KDError
from kd_core.jobs import Job, JobBusy, JobSnapshot
from kd_core.views import leaderboard as lb
from kd_core.views import studio, sweep_view
from kd_core.views.sweep_view import RAY_MISSING
from ui import experiment_charts, forms, live, method_charts, state

BACKENDS = {"inprocess": "In-process (this server)", "ray": "Ray"}


def setup_widgets(data) -> dict:
    """The student, the methods, the seeds and the budget (kept in the URL)."""
    preset = studio.presets(data.name)["student"]
    c = st.columns(3)
    w = {
        "family": c[0].selectbox(
            "Student family", ["mlp", "cnn"], index=["mlp", "cnn"].index(preset.family), key="mt_family"
        ),
        "size": c[1].number_input("Student size", 1, 4096, preset.size, key="mt_size", bind="query-params"),
        "depth": c[2].number_input("Hidden layers (MLP)", 0, 4, preset.depth, key="mt_depth", bind="query-params"),
    }
    c = st.columns([3, 1])
    w["methods"] = c[0].multiselect(
        "Methods (plain KD is always included)",
        lb.method_names(),
        default=["kd", "dkd", "dist"],
        key="mt_methods",
        bind="query-params",
        help="Feature methods (at, fitnets) need spatial maps: a CNN teacher and student.",
    )
    w["seeds"] = c[1].number_input("Seeds", 2, 20, 3, key="mt_seeds", bind="query-params")
    w["mixes"] = st.text_input(
        "Mixes (optional)",
        "",
        key="mt_mixes",
        bind="query-params",
        placeholder="0.5*kd+1*dist, kd+sp",
        help="Weighted mixes as `--method` reads them, comma-separated; each is one more entry.",
    )
    c = st.columns(2)
    w["temperature"] = c[0].number_input("Temperature T", 0.1, 100.0, 4.0, key="mt_T", bind="query-params")
    w["alpha"] = c[1].number_input("λ (distillation weight)", 0.0, 1.0, 0.5, key="mt_lam", bind="query-params")
    w["budget"] = forms.budget_widgets("mt", epochs=5, lr=3e-3)
    return w


def leaderboard_config(data, teacher_id: str, w: dict):
    """The leaderboard the fields describe, or None with the reason shown."""
    b = w["budget"]
    data_cfg, train = forms.budget_configs(data, b)
    methods = [*w["methods"], *(m.strip() for m in w["mixes"].split(",") if m.strip())]
    try:
        return lb.make_leaderboard(
            teacher_id,
            methods or ["kd"],
            int(w["seeds"]),
            w["family"],
            int(w["size"]),
            int(w["depth"]),
            data_cfg,
            train,
            float(w["temperature"]),
            float(w["alpha"]),
            int(b["seed"]),
        )
    except KDError as err:
        st.error(str(err))
        return None


def backend_choice() -> tuple[str, str | None] | None:
    backend = st.radio(
        "Backend", list(BACKENDS), format_func=BACKENDS.get, key="mt_backend", horizontal=True, bind="query-params"
    )
    if backend == "ray" and not sweep_view.ray_available():
        st.warning(f"Ray is not available: {RAY_MISSING}", icon=":material/warning:")
        return None
    return backend, None


def launch(data, cfg, backend: tuple[str, str | None]) -> None:
    manager, store = state.job_manager(), state.current_store()
    try:
        sweep_id, job = lb.start_leaderboard(manager, store, data, cfg, *backend)
    except (JobBusy, KDError) as err:
        st.error(str(err))
        return
    st.query_params["job"] = job.id
    st.session_state["mt_view_next"] = sweep_id
    st.rerun()


def new_section(data, teacher_id: str, busy: bool) -> None:
    st.subheader("New leaderboard")
    st.caption(
        f"Teacher: the one in use ({teacher_id}; change it in the sidebar). Each method and a no-KD "
        "baseline train once per seed, at the same seeds, so every comparison is paired."
    )
    w = setup_widgets(data)
    cfg = leaderboard_config(data, teacher_id, w)
    backend = backend_choice()
    if cfg is not None:
        runs = len(cfg.seeds) * (1 + len(cfg.methods))
        st.caption(f"{runs} runs: {', '.join(cfg.method_texts)} and the baseline, × {len(cfg.seeds)} seeds.")
    if st.button(
        "Run leaderboard",
        type="primary",
        key="mt_start",
        disabled=busy or cfg is None or backend is None,
        icon=":material/play_arrow:",
    ):
        launch(data, cfg, backend)


def job_line(job: Job, snap: JobSnapshot) -> None:
    note = snap.notes.get("sweep")
    if snap.status == "running":
        done = 0 if note is None else note["done"] + note["failed"]
        total = 1 if note is None else max(1, note["total"])
        text = "loading the teacher…" if note is None else f"{note['done']}/{note['total']} runs done"
        live.progress_row(job, snap, done / total, text, "mt_stop", "Stopping… the finished runs are kept.")
    elif snap.status == "finished":
        st.success(f"Finished: {snap.title}")
    elif snap.status == "stopped":
        st.warning(f"Stopped: {snap.title}; the table shows the runs that finished.")
    else:
        st.error(f"Failed: {snap.title} — {snap.message}")


def table(sweep_id: str) -> None:
    board = lb.leaderboard(state.current_store(), sweep_id)
    metric = experiment_charts.METRIC_NAMES.get(board.metric, board.metric)
    (st.success if board.best else st.info)(board.verdict)
    gains = ["base_gain", "base_p_bh", "kd_gain", "kd_p_bh"]  # None where no test applies: shown empty
    st.dataframe(
        board.table.astype({c: float for c in gains}),
        key="mt_table",
        hide_index=True,
        column_order=["method", "n", "text", "base_gain", "base_p_bh", "kd_gain", "kd_p_bh", "best"],
        column_config={
            "method": "Method",
            "text": f"{metric} (mean ± std, n)",
            "base_gain": st.column_config.NumberColumn("Gain over baseline", format="%+.4f"),
            "base_p_bh": st.column_config.NumberColumn("p vs baseline (BH)", format="%.3g"),
            "kd_gain": st.column_config.NumberColumn("Gain over KD", format="%+.4f"),
            "kd_p_bh": st.column_config.NumberColumn("p vs KD (BH)", format="%.3g"),
            "best": st.column_config.CheckboxColumn("Best"),
        },
    )
    st.plotly_chart(method_charts.leaderboard_bars(board.table, metric, lb.BASELINE), key="mt_bars", width="stretch")


def resume(sweep_id: str, left: int) -> None:
    """A stopped leaderboard: its unfinished runs, in-process, the finished ones kept."""
    c = st.columns([3, 1], vertical_alignment="center")
    c[0].caption(f"{left} run{'s' * (left != 1)} of this leaderboard have not finished (stopped or failed).")
    if c[1].button("Resume", key="mt_resume", disabled=busy, icon=":material/resume:"):
        store = state.current_store()
        d = lb.leaderboard_data(store, sweep_id)
        try:
            job = lb.resume_leaderboard(
                state.job_manager(), store, state.dataset(d.dataset, d.root, d.image_size), sweep_id
            )
        except (JobBusy, KDError) as err:
            st.error(str(err))
            return
        st.query_params["job"] = job.id
        st.rerun()


def results(job: Job | None) -> None:
    st.subheader("Leaderboards")
    boards = lb.leaderboards(state.current_store())
    if not boards:
        st.caption("No leaderboard in this store yet.")
        return
    labels = {b["id"]: b["label"] for b in boards}
    if st.session_state.get("mt_view_next") in labels:
        st.session_state["mt_view"] = st.session_state.pop("mt_view_next")
    if st.session_state.get("mt_view") not in labels:
        st.session_state["mt_view"] = boards[0]["id"]
    pick = st.selectbox("Leaderboard", list(labels), format_func=labels.get, key="mt_view")
    left = next(b["left"] for b in boards if b["id"] == pick)
    if left and (job is None or not job.live):
        resume(pick, left)

    def draw(snap: JobSnapshot | None) -> None:
        if snap is not None and job is not None:
            job_line(job, snap)
        table(pick)

    live.poll(job, draw)


st.title("Methods")
job = live.find_job(("sweep",))
busy = state.job_manager().current() is not None
data, teacher_id = state.current_data(), state.settings().get("teacher_id")
if data is not None and not teacher_id:
    st.info("A leaderboard distils from a teacher. Train one, or pick a saved one in the sidebar.")
    st.page_link("app_pages/teacher.py", label="Go to the Teacher page", icon="➡️")
elif data is not None:
    new_section(data, teacher_id, busy)
results(job)
