"""Overview: what distillation is, where this session stands, and a one-click quick start."""

import streamlit as st

from kd_core.jobs import JobBusy, JobSnapshot
from kd_core.views import quick, studio
from ui import live, state

st.title("KD Studio")
st.markdown(
    "**Knowledge distillation** trains a small *student* network to imitate a large *teacher*. "
    "Besides the true labels, the student learns from the teacher's *softened* output "
    "distribution, which says not only which class is right but how similar the wrong ones look. "
    "The result is a model many times smaller and faster that keeps most of the teacher's accuracy "
    "(Hinton, Vinyals & Dean, 2015)."
)
st.latex(
    r"\mathcal{L} = (1-\lambda)\,\mathrm{CE}\big(z_s, y\big) + "
    r"\lambda\,T^2\,\mathrm{KL}\!\big(\mathrm{softmax}(z_t/T)\,\big\|\,\mathrm{softmax}(z_s/T)\big)"
)
left, right = st.columns(2)
left.markdown(
    "- **Temperature T** softens both softmaxes. At T = 1 the teacher is nearly one-hot; at higher T "
    "its small probabilities — the *dark knowledge* — carry signal.\n"
    "- The **T²** factor keeps the soft term's gradients on the same scale whatever T is."
)
right.markdown(
    "- **λ** weighs imitation against the labels: λ = 0 is ordinary training, λ = 1 learns from "
    "the teacher alone.\n"
    "- Every distillation can be trained beside a **no-KD baseline** — the same student, seed and "
    "budget without the teacher — so you see what distillation bought."
)

st.subheader("Where you are")
s = state.settings()
data = state.current_data()
teacher_id, _ = state.current_teacher()
cols = st.columns(3)
if data is not None:
    info = data.info()
    cols[0].metric(
        "Dataset",
        info["name"],
        help=f"{info['train']} train · {info['val']} val · "
        f"{info['test']} test · {info['num_classes']} classes · input {info['input_shape']}",
    )
students = state.current_store().list_runs(kind="student", dataset=s.get("dataset", "digits"), limit=1)
for col, title, run_id in (
    (cols[1], "Teacher", teacher_id),
    (cols[2], "Last student", students[0].id if students else None),
):
    card = studio.run_card(state.current_store(), run_id) if run_id else None
    col.metric(
        title,
        card["label"] if card else "none yet",
        f"test acc {card['test_acc']:.3f}" if card and card["test_acc"] is not None else None,
        delta_color="off",
        delta_arrow="off",
    )

st.subheader("Quick start: when does distillation help?")
st.write(
    f"One click trains a teacher on every label of `digits`, then distils a small student from it twice, "
    f"each time over {quick.QUICK_SEEDS} seeds beside a no-KD baseline (the same student, seed and labels "
    f"without the teacher): once with only {quick.QUICK_LABELS} labels per class, the other images left "
    "unlabelled for the teacher to teach from, and once with every label. About half a minute on 2 cores."
)
if st.button(
    "Quick start on digits", type="primary", key="quick_start", disabled=state.job_manager().current() is not None
):
    try:
        job = quick.start_quick(
            state.job_manager(),
            state.current_store(),
            state.dataset("digits", s.get("data_root", "data"), 32),
            s.get("device", "auto"),
            int(s.get("threads", 0)),
        )
        st.query_params["job"] = job.id
        st.rerun()
    except JobBusy as err:
        st.warning(str(err))


def quick_result(snap: JobSnapshot) -> None:
    """The two regimes side by side: the gain, its seeds and its p-value, in words."""
    summary = quick.quick_summary(state.current_store(), snap)
    if summary is None:
        return
    few, full = summary["few"], summary["all"]
    left, right = st.columns(2)
    for col, title, r in ((left, f"{few['labelled']} labels", few), (right, "All labels", full)):
        t = r["test"]
        col.metric(
            f"Gain from distillation · {title}",
            quick.points(t.mean_diff),
            f"{quick.p_text(t.p)} · {t.n} seeds",
            delta_color="off",
            delta_arrow="off",
            help=t.reason,
        )
        col.markdown(r["statement"])
    st.caption(
        "The teacher saw every label in both regimes (a teacher trained elsewhere). Each seed draws its own "
        "labelled images, so the spread over seeds includes which images got labels. Try the label budget "
        "on the Distill page, or sweep it on the Sweep page for the whole gain-versus-labels curve."
    )


job = live.find_job(("quick",))
if job is not None:
    snap = live.show_job(job, "quick")
    if snap.status != "running":
        state.adopt_teacher(snap.notes.get("teacher_id"))
        if snap.notes.get("teacher_reused"):
            seeds = snap.notes.get("seeds", [])
            st.caption(
                f"Reused the teacher Quick start trained before; the students got new seeds "
                f"({seeds[0]}–{seeds[-1]}), so each Quick start is a fresh replication."
                if seeds
                else "Reused the teacher Quick start trained before."
            )
        quick_result(snap)
        ids = {o["kind"]: o["run_id"] for o in snap.outcomes}
        if "student" in ids:
            st.page_link("app_pages/compare.py", label="Compare a student with its teacher", icon="➡️")
