"""The Deployment section of the Compare page: distill, then quantize, then ship.

For one stored run (by default the student picked on the page): its teacher, itself
and itself in int8, timed under eager PyTorch, TorchScript and ONNX Runtime; float32
against int8 in accuracy, size and latency; and the files to download.

Measuring sets torch's thread count process-wide, so it runs as a job in the single
worker (never beside training) and this section polls it with ui/live.py's panel. Exports are
built on a button click and checked on the test split before they are offered.
Everything goes through kd_core.views.deploy (no torch here).
"""

from __future__ import annotations

import streamlit as st

from kd_core import fmt
from kd_core.jobs import JobSnapshot
from kd_core.views import deploy as dep
from ui import deploy_charts as charts
from ui import live, state

FORMAT_NAMES = {"torchscript": "TorchScript", "onnx": "ONNX"}


def render(store, data, teacher_id: str, picked: list[str]) -> None:
    st.subheader("Distill, then quantize, then ship")
    options = dep.deploy_options(store, data.name, teacher_id, picked)
    if not options:
        st.info("No stored run with weights to deploy yet.")
        return
    by_id = {o["id"]: o for o in options}
    ids = list(by_id)
    run_id = st.selectbox(
        "Run to deploy",
        ids,
        index=ids.index(dep.default_run(options, picked, teacher_id)),
        format_func=lambda rid: dep.option_label(by_id[rid]),
        key="dep_run",
        bind="query-params",
        help="A student is measured beside its teacher and its own int8 version; a teacher beside its int8 version.",
    )
    job = measure_part(store, data, run_id, by_id[run_id], find_job(run_id))
    result = dep.measurement(job.snapshot()) if job is not None else None
    downloads_part(store, data, run_id, result, busy=job is not None and job.live)


# ---------------------------------------------------------------- measuring


def find_job(run_id: str):
    """The deploy job of `run_id`: live (whichever tab started it), last started in this
    session, or named in the URL (?dep_job=…, so a refreshed tab finds it)."""
    manager = state.job_manager()
    mine = st.session_state.setdefault("dep_jobs", {})
    for job in (manager.current(), manager.get(mine.get(run_id, "")), manager.get(st.query_params.get("dep_job", ""))):
        if job is not None and dep.job_run(job.snapshot()) == run_id:
            mine[run_id] = job.id
            remember(job)
            return job
    return None


def remember(job) -> None:
    """Name the job in the URL (?dep_job=…), so that a refreshed tab finds it again."""
    if st.query_params.get("dep_job") != job.id:
        st.query_params["dep_job"] = job.id


def measure_part(store, data, run_id: str, option: dict, job):
    """The Measure button and the measurement of `run_id`; returns its job (None if none yet)."""
    threads = dep.timing_threads(int(state.settings().get("threads", 0)))
    kind = option["kind"]
    models = f"its teacher, the {kind} and the int8 {kind}" if kind != "teacher" else "the teacher and the int8 teacher"
    left, right = st.columns([1, 3], vertical_alignment="center")
    clicked = left.button(
        "Measure across runtimes",
        key="dep_measure",
        type="primary",
        icon=":material/speed:",
        disabled=job is not None and job.live,
    )
    bf16_ok, bf16_why = dep.bf16_inference()
    right.caption(
        f"Times {models} under eager PyTorch, TorchScript and ONNX Runtime"
        f"{' (and eager PyTorch in bf16)' if bf16_ok else ''} at batch 1 and 256 with "
        f"{threads} thread{'s' if threads != 1 else ''} (the sidebar's torch threads), then float32 "
        "against int8 on the test split. Runs as a background job: never beside training."
    )
    with st.expander("Timing"):
        cols = st.columns(2)
        warmup = cols[0].number_input("Warm-up calls", 0, 1000, 10, key="dep_warmup")
        repeats = cols[1].number_input("Timed calls (at least; and at least 0.2 s)", 1, 10_000, 50, key="dep_repeats")
        with_bf16 = st.checkbox(
            "Eager PyTorch in bf16 (autocast) too",
            value=bf16_ok,
            key="dep_bf16",
            disabled=not bf16_ok,
            help=f"Offered where the CPU does bfloat16 natively (AVX512-BF16 or AMX). Here: {bf16_why}. "
            "On small models it is often slower than float32; its accuracy is measured on the test split.",
        )
    if clicked:
        try:
            job = dep.start_measure(
                state.job_manager(),
                store,
                run_id,
                label=option["label"],
                data=data,
                threads=threads,
                runtimes=dep.tab_runtimes(with_bf16),
                warmup=int(warmup),
                repeats=int(repeats),
            )
        except dep.MeasureBusy as err:
            st.error(str(err))
        else:
            st.session_state.setdefault("dep_jobs", {})[run_id] = job.id
            remember(job)
    if job is None:
        st.info("Not measured yet: press **Measure across runtimes**.")
        return None
    show_job(job)
    return job


def show_job(job) -> None:
    """Progress and the (partial) results; polled by ui.live while the job is live."""

    def panel(snap: JobSnapshot | None) -> None:
        result = dep.measurement(snap)
        status = snap.status
        if status == "running":
            done, total = (result["steps_done"], result["steps_total"]) if result else (0, 1)
            text = f"Measuring: {result['phase'] if result else 'starting'}…"
            live.progress_row(job, snap, done / total, text, "dep_stop", "Stopping after the current timing…")
        elif status == "stopped":
            st.warning("Measurement stopped: what was timed so far is shown.")
        elif status == "failed":
            st.error(f"The measurement failed: {snap.message}")
        if result:
            results(result)

    live.poll(job, panel)  # rerun as a whole when it ends: the downloads see the final result


def results(result: dict) -> None:
    for w in result["warnings"]:
        st.warning(w)
    st.caption(
        f"{dep.machine_line(result['machine'])} · {result['warmup']} warm-up calls, at least "
        f"{result['repeats']} timed calls (and 0.2 s) per bar · "
        f"{'took' if result['complete'] else 'running for'} {result['seconds']:.0f} s"
    )
    if (hl := dep.headline(result)) is not None:
        headline(hl)
    frame = dep.latency_frame(result)
    if frame.empty:
        return
    st.plotly_chart(charts.latency_bars(frame, result["batch_sizes"]), key="dep_latency_chart", width="stretch")
    columns = latency_columns(result["batch_sizes"])
    st.dataframe(
        dep.latency_table(result),
        key="dep_latency_table",
        hide_index=True,
        column_config=columns,
        column_order=list(columns),
    )
    quant = dep.quantization_table(result)
    if quant.empty:
        return
    big = max(result["batch_sizes"])
    st.markdown("**float32 against int8** — dynamic int8 quantization of the Linear layers, on the test split")
    quant = quant.assign(acc_delta=fmt.rounded_all(quant["acc_delta"]))  # no "-0.0000" from %+.4f
    st.dataframe(
        quant,
        key="dep_quant_table",
        hide_index=True,
        column_config=quant_columns(result["batch_sizes"]),
        column_order=[
            "method",
            "test_acc",
            "acc_delta",
            "agreement",
            "size_kb",
            "size_ratio",
            *(f"median_ms_b{b}" for b in result["batch_sizes"]),
            "speedup_vs_float",
        ],
    )
    st.caption(
        f"Δ acc, size ratio and speed-up (at batch {big}) are against float32 in the same runtime; "
        "agreement: share of test images whose top-1 class matches the float32 PyTorch model's."
    )


def headline(hl: dict) -> None:
    """The base model against the fastest option as accurate as the float32 one; int8 shown
    for its size when it is not that option."""
    base, final = hl["base"], hl["final"]
    st.markdown(
        f"**{base['model']}** in {base['runtime']} (float32) → **{final['model']}** under "
        f"{final['runtime']} ({final['precision']}): the fastest at batch 1 of its {hl['choices']} "
        "options (runtimes × float32/int8) whose accuracy is within noise of its float32 model."
    )
    cols = st.columns(2 + len(hl["speedup"]))
    if base["acc"] is not None and final["acc"] is not None:
        cols[0].metric(
            "Test accuracy",
            f"{final['acc']:.4f}",
            f"{fmt.signed(final['acc'] - base['acc'])} vs {base['model']}",
            delta_color="off",
            delta_arrow="off",
        )
    cols[1].metric("Size", f"{final['bytes'] / 1e3:,.1f} kB", f"{hl['size_ratio']:.1f}× smaller", delta_arrow="off")
    for col, (batch, x) in zip(cols[2:], hl["speedup"].items()):
        col.metric(
            f"Latency, batch {batch}",
            duration(final["ms"][batch]),
            f"{charts.times(x)} faster" if x >= 1 else f"{charts.times(1 / x)} slower",
            delta_color="normal" if x >= 1 else "inverse",
            delta_arrow="off",
        )
    notes = []
    if hl["accuracy"] is not None:
        notes.append(f"Accuracy against the {base['model']}: {hl['accuracy'].text()}.")
    if (small := hl["smallest"]) is not None:
        first = min(small["ms"])
        slower = small["ms"][first] > final["ms"].get(first, float("inf"))
        notes.append(
            f"The int8 {final['model'].split('-')[0]} is the smallest file: {small['bytes'] / 1e3:,.1f} kB "
            f"({final['bytes'] / small['bytes']:.1f}× smaller) under {small['runtime']}, at "
            f"{duration(small['ms'][min(small['ms'])])} at batch {min(small['ms'])}"
            + (" — slower than the float32 model here, so it is not the headline." if slower else ".")
            + ("" if small["equal"] else " Its accuracy is not within noise of float32.")
        )
    if notes:
        st.caption("  \n".join(notes))


def duration(ms: float) -> str:
    return f"{ms * 1e3:.3g} µs" if ms < 1 else f"{ms:.3g} ms"


def latency_columns(batch_sizes: list[int]) -> dict:
    cfg = {
        "model": st.column_config.TextColumn("model"),
        "runtime": st.column_config.TextColumn("runtime"),
        "size_kb": st.column_config.NumberColumn(
            "size (kB)", format="%.1f", help="The file each runtime runs; eager: the serialized model."
        ),
    }
    for b in batch_sizes:
        cfg[f"b{b}_median_ms"] = st.column_config.NumberColumn(f"b{b} median ms", format="%.4f")
        cfg[f"b{b}_p90_ms"] = st.column_config.NumberColumn(f"b{b} p90 ms", format="%.4f")
        cfg[f"b{b}_speedup"] = st.column_config.NumberColumn(
            f"b{b} speed-up", format="%.2f×", help="Over the teacher in eager PyTorch."
        )
    cfg["samples_per_s"] = st.column_config.NumberColumn(
        "samples/s", format="compact", help=f"At batch {max(batch_sizes)}."
    )
    return cfg


def quant_columns(batch_sizes: list[int]) -> dict:
    cfg = {
        "model": st.column_config.TextColumn("model"),
        "runtime": st.column_config.TextColumn("runtime"),
        "method": st.column_config.TextColumn("method"),
        "test_acc": st.column_config.NumberColumn("test acc", format="%.4f"),
        "acc_delta": st.column_config.NumberColumn("Δ acc", format="%+.4f"),
        "agreement": st.column_config.NumberColumn("agreement", format="%.4f"),
        "size_kb": st.column_config.NumberColumn("size (kB)", format="%.1f"),
        "size_ratio": st.column_config.NumberColumn("size ratio", format="%.2f×"),
        "speedup_vs_float": st.column_config.NumberColumn(f"speed-up (b{max(batch_sizes)})", format="%.2f×"),
    }
    for b in batch_sizes:
        cfg[f"median_ms_b{b}"] = st.column_config.NumberColumn(f"b{b} median ms", format="%.4f")
    return cfg


# ---------------------------------------------------------------- downloads


def downloads_part(store, data, run_id: str, result: dict | None, busy: bool) -> None:
    st.subheader("Downloads")
    teacher = dep.teacher_in_store(store, run_id)
    target = run_id
    if teacher is not None:
        which = st.radio(
            "Files of",
            ["run", "teacher"],
            horizontal=True,
            key="dep_files_of",
            bind="query-params",
            format_func=lambda w: f"this run ({run_id})" if w == "run" else f"its teacher ({teacher})",
        )
        target = teacher if which == "teacher" else run_id
    precision = st.segmented_control(
        "Precision of the exports",
        ["float32", "int8"],
        default="float32",
        required=True,
        key="dep_precision",
        bind="query-params",
        help="int8: dynamic quantization of the Linear layers (weights int8).",
    )
    built = st.session_state.setdefault("dep_built", {})
    for key in [k for k in built if k.split(":")[0] not in (run_id, teacher)]:
        del built[key]  # keep only this run's files in the session
    top, bottom = st.columns(2), st.columns(2)
    with top[0].container(border=True):
        weights_box(store, target)
    with top[1].container(border=True):
        card_box(store, target, result if target == run_id else None, built)
    for col, file_format in zip(bottom, ("torchscript", "onnx")):
        with col.container(border=True):
            export_box(store, data, target, file_format, precision or "float32", built, busy)


def weights_box(store, target: str) -> None:
    st.markdown("**Weights** (PyTorch checkpoint)")
    w = dep.weights(store, target)
    if not w["ok"]:
        st.error(w["error"])
        return
    st.download_button(
        f"Download {w['filename']}",
        w["data"],
        w["filename"],
        w["mime"],
        key="dep_dl_weights",
        on_click="ignore",
        icon=":material/download:",
    )
    st.caption(
        f"{len(w['data']) / 1e3:,.1f} kB, checksum-verified. Load with "
        "`kd_core.train.checkpoint.load_checkpoint` (weights only, no code)."
    )


def card_box(store, target: str, result: dict | None, built: dict) -> None:
    st.markdown("**Model card** (MODEL_CARD.md, model_card.json, curves.html)")
    key = f"{target}:card"
    measured = bool(result and result.get("complete"))
    if st.button("Build model card", key="dep_build_card", icon=":material/description:"):
        with st.spinner("Writing the model card…"):
            built[key] = dep.card(store, target, result)
    card = built.get(key)
    if card is None:
        st.caption(
            "Data split, teacher, hyperparameters, seeds, accuracy, latency"
            + (", int8 and the runtimes measured above" if measured else "")
            + ", how to train it again, and the training curves."
        )
        return
    if not card["ok"]:
        st.error(card["error"])
        return
    st.download_button(
        f"Download {card['zip_name']}",
        card["zip"],
        card["zip_name"],
        "application/zip",
        key="dep_dl_card_zip",
        on_click="ignore",
        icon=":material/download:",
    )
    with st.container(horizontal=True, vertical_alignment="center"):
        st.caption("or one file:", width="content")
        for name, payload in card["files"].items():
            st.download_button(
                name,
                payload,
                name,
                key=f"dep_dl_card_{name.replace('.', '_')}",
                on_click="ignore",
                type="tertiary",
                icon=":material/download:",
            )
    if card["with_measurement"]:
        st.caption("With the runtimes and the int8 report measured above.")
    elif measured:
        st.caption("Built before the measurement above: build it again to include it.")
    else:
        st.caption("Latency: the eager one measured at training time (measure above to add runtimes and int8).")


def export_box(store, data, target: str, fmt: str, precision: str, built: dict, busy: bool) -> None:
    name = FORMAT_NAMES[fmt]
    artifact = fmt if precision == "float32" else f"{fmt}-int8"
    st.markdown(f"**{name}** ({precision})")
    key = f"{target}:{artifact}"
    if st.button(
        f"Build {name} file",
        key=f"dep_build_{fmt}",
        icon=":material/build:",
        disabled=busy,
        help="Wait for the measurement: an export now would skew its timings."
        if busy
        else "Exports, loads the file back and checks it against the PyTorch model on the test split.",
    ):
        with st.spinner(f"Exporting to {name} and checking it on the test split…"):
            built[key] = dep.build_export(store, target, artifact, data)
    b = built.get(key)
    if b is None:
        st.caption(
            "Built on demand, then loaded back and checked against the float32 PyTorch model "
            "on the test split; a file outside tolerance is refused."
        )
        return
    if not b["ok"]:
        st.error(b["error"])
        return
    st.download_button(
        f"Download {b['filename']}",
        b["data"],
        b["filename"],
        b["mime"],
        key=f"dep_dl_{fmt}",
        on_click="ignore",
        icon=":material/download:",
    )
    st.success(f"Checked: {dep.check_text(b['report'])} · {len(b['data']) / 1e3:,.1f} kB", icon=":material/verified:")
