"""Teacher: train one with a live curve, pick a saved one, or upload a checkpoint."""

import streamlit as st

from kd_core.errors import KDError
from kd_core.jobs import JobBusy
from kd_core.views import studio
from ui import forms, live, state


def train_section(data) -> None:
    st.subheader("Train a teacher")
    preset = studio.presets(data.name)["teacher"]
    st.caption(f"Preset for {data.name}: {preset.label()}.")
    m = forms.model_widgets("t", "teacher", data.name)
    info = studio.model_info(m["family"], m["size"], m["depth"], data, m["width"])
    st.caption(f"{info['params']:,} parameters · {info['flops']:,} FLOPs per sample · {info['bytes'] / 1e6:.2f} MB")
    budget = forms.budget_widgets("t", epochs=15, lr=1e-3)
    busy = state.job_manager().current() is not None
    if st.button("Train teacher", type="primary", key="train_teacher", disabled=busy):
        cfg = forms.run_config("teacher", data, m["family"], m["size"], m["depth"], width=m["width"], **budget)
        try:
            job = studio.start_teacher(state.job_manager(), state.current_store(), data, cfg)
            st.query_params["job"] = job.id
            st.rerun()
        except (JobBusy, KDError) as err:
            st.error(str(err))
    job = live.find_job(("teacher",))
    if job is not None:
        snap = live.show_job(job, "teacher")
        new = [o for o in snap["outcomes"] if o["kind"] == "teacher" and o["status"] != "failed"]
        if new:
            state.adopt_teacher(new[-1]["run_id"])


def current_section() -> None:
    teacher_id, _ = state.current_teacher()
    if teacher_id is None:
        return
    card = studio.run_card(state.current_store(), teacher_id)
    st.subheader(f"Teacher in use: {card['label']}")
    c = st.columns(5)
    c[0].metric("Test accuracy", f"{card['test_acc']:.4f}" if card["test_acc"] is not None else "—")
    c[1].metric("Parameters", f"{card['params']:,}" if card["params"] else "—")
    c[2].metric("Size", f"{card['bytes'] / 1e6:.2f} MB" if card["bytes"] else "—")
    c[3].metric("Latency, batch 1", f"{card['latency_b1_ms']:.3f} ms" if card["latency_b1_ms"] else "—")
    c[4].metric("Latency, batch 256", f"{card['latency_b256_ms']:.2f} ms" if card["latency_b256_ms"] else "—")
    st.caption(f"Run {card['id']} · status {card['status']} · pick another in the sidebar.")


def saved_section(data) -> None:
    rows = studio.teachers(state.current_store(), data)
    with st.expander(f"Saved teachers for {data.name} ({len(rows)})"):
        if rows:
            st.dataframe(rows, key="teacher_table", hide_index=True)
        else:
            st.write("None yet.")


def upload_section(data) -> None:
    with st.expander("Upload a checkpoint"):
        st.caption(
            "A KD Studio checkpoint (.pt) written by this app or by `python -m kd_core teacher "
            "--out`. It is loaded with `weights_only=True` — data, never code — and checked "
            "against the dataset and, if you say so, the family and size."
        )
        upload = st.file_uploader("Checkpoint", type=["pt", "pth"], key="ckpt_upload")
        check = st.checkbox("Check the family and size below", key="ckpt_check")
        preset = studio.presets(data.name)["teacher"]
        c = st.columns(3)
        family = c[0].selectbox(
            "Expected family", ["mlp", "cnn"], key="ckpt_family", index=["mlp", "cnn"].index(preset.family)
        )
        size = c[1].number_input("Expected size", 1, 8192, preset.size, key="ckpt_size")
        depth = c[2].number_input("Expected hidden layers", 0, 8, preset.depth, key="ckpt_depth")
        if upload is not None and st.button("Load checkpoint", key="ckpt_load"):
            expect = studio.ModelSpec(family, int(size), int(depth)) if check else None
            try:
                threads = int(state.settings().get("threads", 0))  # timed as a run trained here is
                run_id = studio.import_checkpoint(
                    state.current_store(), upload.getvalue(), data, upload.name, expect, threads=threads
                )
            except KDError as err:
                st.error(f"Could not use {upload.name}: {err}")
            else:
                st.success(f"Loaded {upload.name} as teacher {run_id}.")
                state.use_teacher(run_id)


st.title("Teacher")
data = state.current_data()
if data is not None:
    current_section()
    train_section(data)
    saved_section(data)
    upload_section(data)
