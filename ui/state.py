"""Process-wide resources (cached) and the session's shared choices (sidebar).

Datasets and teacher models are cached with bounded entries, keyed by what
identifies them (dataset name, run id), never by slider values.
"""

from __future__ import annotations

import gc

import streamlit as st

from kd_core.errors import KDError
from kd_core.jobs import JobManager
from kd_core.views import studio
from ui import prefs

DATASET_CHOICES = ["digits", "fashion-mnist", "mnist", "cifar10", "folder"]


@st.cache_resource(show_spinner=False)
def job_manager() -> JobManager:
    """One per server process: at most one training job runs at a time."""
    return JobManager()


@st.cache_resource(max_entries=4, show_spinner="Loading the dataset…")
def dataset(name: str, root: str, image_size: int):
    return studio.load_data(name, root, image_size)


@st.cache_resource(max_entries=8, show_spinner="Loading the model…")
def stored_model(store_root: str, run_id: str, dataset_name: str, root: str, image_size: int):
    return studio.load_model(store(store_root), run_id, dataset(dataset_name, root, image_size))


@st.cache_resource(max_entries=4, show_spinner=False)
def store(root: str):
    return studio.open_store(root)


@st.cache_resource(show_spinner=False)
def _freeze_startup_objects() -> bool:
    """Once per process, after the heavy imports: move every object alive now (modules of
    torch, pandas, plotly, streamlit: ~300k) to gc's permanent generation. Streamlit runs a
    full `gc.collect(2)` after every script run, fragment runs included; over those objects
    it takes ~150 ms holding the GIL, once a second while the live view polls a training
    job, which stalls the worker thread. Frozen, the collection scans only newer objects
    (well under 1 ms); they were never garbage anyway."""
    import plotly.express
    import plotly.graph_objects  # noqa: F401

    gc.collect()
    gc.freeze()
    return True


def settings() -> dict:
    """The sidebar's choices, as set this session (see `sidebar`)."""
    return st.session_state.setdefault("settings", {})


# The sidebar widgets whose values are the user's own settings (ui/prefs.py), by widget key.
PREF_WIDGETS = ("store_root", "data_root", "device", "threads", "precision")


def _load_prefs() -> None:
    """Once per session, before the widgets are drawn: their values from the settings file."""
    if st.session_state.get("prefs_loaded"):
        return
    saved, problem = prefs.load(studio.devices(), studio.thread_choices(), precisions=studio.PRECISIONS)
    for key in PREF_WIDGETS:
        st.session_state.setdefault(key, saved[key])
    st.session_state["prefs_loaded"] = True
    st.session_state["prefs_problem"] = problem


def _save_prefs() -> None:
    """on_change of a settings widget: write all of them (the file is a few bytes)."""
    st.session_state["prefs_problem"] = prefs.save({k: st.session_state.get(k) for k in PREF_WIDGETS})


def sidebar() -> None:
    """Dataset, teacher in use, data and run folders, device and threads: drawn once per run
    by app.py around the page (so their state survives page changes), saved on change."""
    _freeze_startup_objects()
    _load_prefs()
    s = settings()
    with st.sidebar:
        st.subheader("Setup")
        choice = st.selectbox(
            "Dataset",
            DATASET_CHOICES,
            key="dataset",
            bind="query-params",
            help="digits loads instantly; fashion-mnist uses Debian's files or downloads.",
        )
        name = choice
        if choice == "folder":
            path = st.text_input("Image folder (one sub-folder per class)", key="folder_path", bind="query-params")
            s["image_size"] = st.number_input(
                "Image size (px)", 8, 224, 32, key="image_size",
                help="Images are resized to this square. A folder too large for memory is decoded once into "
                "a uint8 cache in the data folder and memory-mapped.",
            )  # fmt: skip
            name = f"folder:{path}"
        s["dataset"] = name
        s.setdefault("image_size", 32)
        with st.expander("Folders and compute"):
            s["store_root"] = st.text_input("Run store folder", key="store_root", on_change=_save_prefs)
            s["data_root"] = st.text_input("Data folder", key="data_root", on_change=_save_prefs)
            s["device"] = st.selectbox("Device", studio.devices(), key="device", on_change=_save_prefs)
            s["threads"] = st.selectbox(
                "Torch threads",
                studio.thread_choices(),
                key="threads",
                format_func=studio.threads_label,
                on_change=_save_prefs,
                help="Intra-op threads for training. Auto takes 1 thread for small "
                "models, where a second one only waits, and every core for "
                "large ones. Latency is timed at 1 thread unless set here.",
            )
            s["precision"] = st.selectbox(
                "Precision",
                studio.PRECISIONS,
                key="precision",
                on_change=_save_prefs,
                help=studio.precision_help(),
            )
            st.caption(f"Kept for next time in `{prefs.path()}`.")
        if st.session_state.get("prefs_problem"):
            st.warning(st.session_state["prefs_problem"], icon=":material/settings:")
        if store_problem() is None:
            _teacher_picker(s)
        _job_status()


def store_problem() -> str | None:
    """Why the run store folder in the sidebar cannot be used, or None."""
    try:
        current_store()
    except KDError as err:
        return str(err)
    return None


def _teacher_label(t: dict) -> str:
    acc = f" · {t['test_acc']:.3f}" if t["test_acc"] is not None else ""
    return f"{t['label']}{acc} · {t['when']}"


def _teacher_picker(s: dict) -> None:
    data = current_data(show_error=False)
    s.setdefault("teacher_id", None)
    if data is None:
        return
    options = studio.teachers(current_store(), data)
    ids = [t["id"] for t in options]
    if not ids:
        st.caption("Teacher: none yet — train one on the Teacher page.")
        s["teacher_id"] = None
        return
    labels = {t["id"]: _teacher_label(t) for t in options}
    if len(set(labels.values())) < len(labels):  # same model, accuracy and minute: the id tells them apart
        labels = {rid: f"{text} · {rid[-4:]}" for rid, text in labels.items()}
    wanted = st.session_state.pop("pending_teacher", None) or st.query_params.get("teacher")
    if wanted in ids and st.session_state.get("teacher_pick") != wanted and "pending" in st.session_state:
        st.session_state["teacher_pick"] = wanted
    st.session_state.pop("pending", None)
    if st.session_state.get("teacher_pick") not in ids:
        st.session_state["teacher_pick"] = wanted if wanted in ids else ids[0]
    s["teacher_id"] = st.selectbox(
        "Teacher in use",
        ids,
        format_func=labels.get,
        key="teacher_pick",
        help="Model · test accuracy · when it was trained (today's time, else its day).",
    )
    st.query_params["teacher"] = s["teacher_id"]


def use_teacher(run_id: str) -> None:
    """Make `run_id` the teacher in use (the sidebar picker applies it on the rerun)."""
    st.session_state["pending_teacher"] = run_id
    st.session_state["pending"] = True
    st.rerun()


def adopt_teacher(run_id: str | None) -> None:
    """Make the teacher a job just trained (or reused) the teacher in use, once per run id:
    the user can pick another afterwards without this undoing it."""
    if run_id and st.session_state.get("adopted") != run_id:
        st.session_state["adopted"] = run_id
        if settings().get("teacher_id") != run_id:
            use_teacher(run_id)


def _job_status() -> None:
    job = job_manager().current()
    if job is not None:
        st.info(f"Running: {job.title}")


def current_store():
    return store(settings().get("store_root", "kd_runs"))


def store_failed(err: Exception) -> None:
    """A store that went bad while open (a damaged page, a full disk): its message, which names the
    file and the repair command, and the page stops; the next run opens and checks it afresh."""
    store.clear()
    st.error(f"The run store cannot be used: {err}")
    st.stop()


def current_data(show_error: bool = True):
    """The dataset picked in the sidebar, or None (with a message) if it cannot be loaded."""
    s = settings()
    name = s.get("dataset", "digits")
    if name == "folder:":
        if show_error:
            st.info("Enter the path of an image folder in the sidebar.")
        return None
    try:
        return dataset(name, s.get("data_root", "data"), int(s.get("image_size", 32)))
    except KDError as err:
        if show_error:
            st.error(str(err))
        return None


def load_stored(run_id: str):
    """A stored run's model for the sidebar's dataset (cached); raises KDError if it cannot be."""
    s = settings()
    return stored_model(
        s.get("store_root", "kd_runs"),
        run_id,
        s.get("dataset", "digits"),
        s.get("data_root", "data"),
        int(s.get("image_size", 32)),
    )


def current_teacher():
    """(run id, model) of the teacher in use, or (None, None)."""
    run_id = settings().get("teacher_id")
    if not run_id:
        return None, None
    try:
        model = load_stored(run_id)
    except KDError as err:
        st.error(f"Teacher {run_id}: {err}")
        return None, None
    return run_id, model


def teacher_or_stop(data, why: str):
    """(run id, model) of the teacher in use; without one, the page says so (`why`: what to do),
    links to the Teacher page and stops."""
    teacher_id, teacher = current_teacher()
    if teacher_id is None:
        st.info(f"No teacher for {data.name} yet: {why}")
        st.page_link("app_pages/teacher.py", label="Train a teacher", icon=":material/psychology:")
        st.stop()
    return teacher_id, teacher
