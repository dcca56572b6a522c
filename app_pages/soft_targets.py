"""Soft targets: the teacher's softened output on one test image, beside a student's."""

import math
import random

import streamlit as st

from kd_core.errors import KDError
from kd_core.views import compare, studio
from ui import compare_charts as charts
from ui import state

DARK_KNOWLEDGE = (
    "A trained teacher puts nearly all its probability on the right class, but the tiny rest is not noise: "
    "it ranks the wrong classes by how much this image resembles them. Dividing the logits by a temperature "
    "**T** before the softmax flattens the distribution, so at higher T those small probabilities become "
    "visible — the *dark knowledge* the student learns from, far more signal per image than a one-hot label. "
    "Raise T and watch the runner-up classes come up, and the entropy climb towards its maximum, ln K."
)


def pick_student(store, dataset: str, teacher_id: str):
    """A stored student or baseline (this teacher's finished, distilled students first); None if
    there are none."""
    options = compare.picker_frame(store, dataset, ("finished", "stopped"))
    if options.empty:
        st.info(f"No students for {dataset} yet: the teacher is shown alone.")
        st.page_link("app_pages/distill.py", label="Distil a student", icon=":material/compress:")
        return None
    options = options.assign(
        own=options["teacher_id"] == teacher_id,
        distilled=options["kind"] == "student",
        finished=options["status"] == "finished",
    )
    options = options.sort_values(["own", "distilled", "finished"], ascending=False, kind="mergesort")
    labels = dict(zip(options["id"], options["title"]))
    default = next(iter(compare.default_selection(store, dataset, teacher_id)), options["id"].iloc[0])
    if st.session_state.get("st_for_teacher", teacher_id) != teacher_id:
        st.session_state["st_student"] = default  # as on Compare: the teacher's latest student
    elif "st_student" not in st.session_state:  # first visit: a link's choice, else the default
        linked = st.query_params.get("st_student")
        st.session_state["st_student"] = linked if linked in labels else default
    st.session_state["st_for_teacher"] = teacher_id
    return st.selectbox(
        "Student beside the teacher", list(labels), format_func=labels.get, key="st_student", bind="query-params"
    )


def _random_index(n: int) -> None:
    st.session_state["st_index"] = random.randrange(n)


def pick_image(n: int) -> int:
    left, right = st.columns([4, 1], vertical_alignment="bottom")
    with right:
        st.button("Random image", key="st_random", icon=":material/casino:", on_click=_random_index, args=(n,))
    with left:
        return int(st.number_input(f"Test image (0–{n - 1})", 0, n - 1, step=1, key="st_index", bind="query-params"))


def load(run_id: str):
    """The stored model, or None (with the reason) when it cannot be loaded (no weights)."""
    try:
        return state.load_stored(run_id)
    except KDError as err:
        st.warning(f"The student cannot be shown beside the teacher: {err}")
        return None


def run_label(run_id) -> str:
    card = studio.run_card(state.current_store(), run_id) if run_id else None
    return f"{card['label']} ({card['kind']})" if card else ""


def runners_up(view: dict, who: str, k: int = 3) -> str:
    """The k most probable wrong classes, as text."""
    probs = sorted(((p, c) for c, p in zip(view["classes"], view[who]["probs"]) if c != view["label"]), reverse=True)[
        :k
    ]
    return ", ".join(f"{c} ({p:.3f})" for p, c in probs)


def entropy_cards(view: dict) -> None:
    top = math.log(len(view["classes"]))
    cols = st.columns(2)
    for col, who in zip(cols, ("teacher", "student")):
        if who in view:
            col.metric(
                f"{who.capitalize()} entropy",
                f"{view[who]['entropy']:.3f} nats",
                f"{view[who]['entropy'] / top:.0%} of ln K = {top:.2f}",
                delta_color="off",
                delta_arrow="off",
                help="Shannon entropy of softmax(z/T): 0 for one-hot, ln K for uniform.",
            )
            col.caption(f"Predicts **{view[who]['prediction']}** · most similar wrong classes: {runners_up(view, who)}")


st.title("Soft targets")
st.markdown(DARK_KNOWLEDGE)
data = state.current_data()
if data is None:
    st.stop()
teacher_id, teacher = state.teacher_or_stop(data, "train one to see its soft targets.")
student_id = pick_student(state.current_store(), data.name, teacher_id)
index = pick_image(len(data.test_y))
temperature = st.slider(
    "Temperature T",
    1.0,
    20.0,
    4.0,
    0.5,
    key="st_T",
    bind="query-params",
    help="softmax(z / T): T = 1 is the ordinary softmax; higher T is softer.",
)
student = load(student_id) if student_id else None
names = {"teacher": f"teacher: {run_label(teacher_id)}", "student": f"student: {run_label(student_id)}"}
view = studio.soft_target_view(teacher, student, data, index, temperature)
image_col, bars_col = st.columns([1, 3])
with image_col:
    st.image(
        charts.enlarge(studio.image_for_display(data, index)),
        caption=f"#{index} · true class: {view['label']}",
        width=240,  # at most: a stacked column (narrow screens) would blow an 8×8 digit up to the page
        clamp=True,
    )
with bars_col:
    kind = (
        (studio.run_card(state.current_store(), student_id) or {}).get("kind", "student") if student_id else "student"
    )
    st.plotly_chart(charts.soft_target_bars(view, names, kind), key="st_bars", width="stretch")
entropy_cards(view)
