"""Teacher: train one with a live curve, pick a saved one, or upload a checkpoint or a teacher file."""

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
    labels = forms.label_widgets("t", data, transfer=False)
    busy = state.job_manager().current() is not None
    cfg = forms.run_config(
        "teacher", data, m["family"], m["size"], m["depth"], width=m["width"], **budget, **(labels or {})
    )
    problem = studio.config_problem(cfg)  # the button is disabled with the reason: nothing bad is stored
    if problem:
        st.caption(f":red[Cannot train: {problem}]")
    disabled = busy or labels is None or bool(problem)  # a budget that cannot be drawn is shown by label_widgets
    if st.button("Train teacher", type="primary", key="train_teacher", disabled=disabled, help=problem):
        try:
            job = studio.start_teacher(state.job_manager(), state.current_store(), data, cfg)
            st.query_params["job"] = job.id
            st.rerun()
        except (JobBusy, KDError) as err:
            st.error(str(err))
    job = live.find_job(("teacher",))
    if job is not None:
        snap = live.show_job(job, "teacher")
        new = [o for o in snap.outcomes if o["kind"] == "teacher" and o["status"] != "failed"]
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
    peak = f" · peak memory {card['peak_rss_bytes'] / 2**20:,.0f} MiB" if card["peak_rss_bytes"] else ""
    st.caption(f"Run {card['id']} · status {card['status']}{peak} · pick another in the sidebar.")
    noted_id, notes = st.session_state.get("teacher_notes", (None, []))
    if noted_id == teacher_id:
        st.success(f"Loaded {card['label']} as teacher {teacher_id}.")
        for note in notes:
            st.caption(f"Note: {note}.")


def saved_section(data) -> None:
    rows = studio.teachers(state.current_store(), data)
    with st.expander(f"Saved teachers for {data.name} ({len(rows)})"):
        if rows:
            st.dataframe(rows, key="teacher_table", hide_index=True)
        else:
            st.write("None yet.")


def _contract_fields() -> dict:
    """The contract typed in (each overrides the JSON's field when filled in)."""
    c = st.columns(5)
    return {
        "classes": c[0].text_input("Class names, in output order", key="bb_classes", placeholder="cat, dog, …"),
        "channels": c[1].selectbox(
            "Channels", [None, 1, 3], key="bb_channels", format_func=lambda v: str(v) if v else "from JSON"
        ),
        "size": c[2].number_input("Input size (px)", 0, 1024, 0, key="bb_size", help="0: from the JSON") or None,
        "mean": c[3].text_input("Mean (per channel)", key="bb_mean", placeholder="0.485, 0.456, 0.406"),
        "std": c[4].text_input("Std (per channel)", key="bb_std", placeholder="0.229, 0.224, 0.225"),
    }


def _expected_model(data):
    """The family and size a checkpoint must hold, if the user asks for the check."""
    check = st.checkbox("Check a checkpoint's family and size", key="ckpt_check")
    preset = studio.presets(data.name)["teacher"]
    c = st.columns(3)
    family = c[0].selectbox(
        "Expected family", studio.FAMILIES, key="ckpt_family", index=studio.FAMILIES.index(preset.family)
    )
    size = c[1].number_input("Expected size", 1, 8192, preset.size, key="ckpt_size")
    depth = c[2].number_input("Expected hidden layers", 0, 8, preset.depth, key="ckpt_depth")
    return studio.ModelSpec(family, int(size), int(depth)) if check else None


def upload_section(data) -> None:
    with st.expander("Upload a teacher"):
        st.caption(
            "A KD Studio checkpoint (.pt), loaded with `weights_only=True` — data, never code — or any "
            "classifier as a TorchScript (.pt), torch.export (.pt2) or ONNX (.onnx) file, used as a black box "
            "for its logits only. ONNX files are data run by ONNX Runtime; TorchScript and .pt2 files are "
            "programs run by PyTorch: upload only those you trust. A black box needs its input contract "
            "(channels, size, mean and std of pixels in [0, 1], class names in output order), as JSON or below. "
            "Its classes must match the dataset's by name; a class mapping aligns other names."
        )
        upload = st.file_uploader("Teacher file", type=["pt", "pth", "pt2", "onnx"], key="ckpt_upload")
        contract = st.file_uploader("Input contract (JSON)", type=["json"], key="contract_upload")
        fields = _contract_fields()
        c = st.columns(2)
        mapping = c[0].file_uploader(
            "Class mapping (JSON, optional)", type=["json"], key="map_upload", help='{"teacher name": "dataset name"}'
        )
        cross = c[1].checkbox("Cross-dataset transfer: take output i as class i whatever the names", key="bb_cross")
        expect = _expected_model(data)
        if upload is not None and st.button("Load teacher", key="ckpt_load"):
            try:
                run_id, notes = studio.import_teacher_upload(
                    state.current_store(), upload.getvalue(), upload.name, data,
                    contract.getvalue() if contract else None, fields, mapping.getvalue() if mapping else None,
                    cross, expect, threads=int(state.settings().get("threads", 0)),
                )  # fmt: skip
            except KDError as err:
                st.error(f"Could not use {upload.name}: {err}")
            else:
                st.session_state["teacher_notes"] = (run_id, notes)
                state.use_teacher(run_id)


st.title("Teacher")
data = state.current_data()
if data is not None:
    current_section()
    train_section(data)
    saved_section(data)
    upload_section(data)
