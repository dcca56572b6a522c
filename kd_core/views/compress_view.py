"""What the Compress page asks of kd_core: the study from its fields, the stored studies, and
one study's state as plain tables (trials, Pareto fronts, the chosen student against the
teacher), read from the databases alone so it can be drawn while the study runs.

The page imports this module, not torch: it passes plain values in and gets dicts and DataFrames
back (kd_core.compress below it imports torch; Ray is imported only when a study runs on Ray).
"""

from __future__ import annotations

import math

import pandas as pd

from kd_core.compress.config import MODES as MODES
from kd_core.compress.config import PRUNERS as PRUNERS
from kd_core.compress.config import SAMPLERS as SAMPLERS
from kd_core.compress.config import CompressConfig as CompressConfig
from kd_core.compress.config import Goal as Goal
from kd_core.compress.config import validate_compress
from kd_core.compress.results import chosen, trial_rows, verdict, with_feasibility
from kd_core.compress.runner import JOB_KIND as JOB_KIND
from kd_core.compress.runner import start_compress as start_compress
from kd_core.compress.space import PRECISIONS as PRECISIONS
from kd_core.compress.space import SearchSpace as SearchSpace
from kd_core.compress.space import method_axes as method_axes
from kd_core.compress.study import counted, load_config, read_study
from kd_core.config import DataConfig as DataConfig
from kd_core.config import TrainConfig as TrainConfig
from kd_core.deploy.runtimes import available_runtimes as available_runtimes
from kd_core.deploy.runtimes import machine_line
from kd_core.errors import KDError
from kd_core.jobs import JobSnapshot
from kd_core.methods import METHODS
from kd_core.store import Store
from kd_core.views.compare import pareto_front
from kd_core.views.deploy import option_label
from kd_core.views.sweep_view import RAY_MISSING as RAY_MISSING
from kd_core.views.sweep_view import ray_available as ray_available

TABLE_COLUMNS = [
    "number",
    "state",
    "label",
    "latency_ms",
    "speedup",
    "size_mb",
    "val_acc",
    "drop_points",
    "test_acc",
    "feasible",
    "why",
    "epochs",
    "seconds",
    "run_id",
]
DEPLOY_PAGE = "app_pages/compare.py"
METHOD_NAMES = tuple(METHODS)  # the registry's order


def checked(cfg: CompressConfig) -> str:
    """Empty when the study can start; else what is wrong with the fields, in words."""
    try:
        validate_compress(cfg)
    except KDError as err:
        return str(err)
    return ""


def study_list(store: Store) -> list[dict]:
    """Every stored study, newest first: {"id", "label", "done", "trials", "left", "teacher_id", "dataset",
    "data_root", "image_size"}."""
    out = []
    for row in store.list_studies():
        cfg = CompressConfig.from_dict(row["config"])
        try:
            done = counted(read_study(store, row["id"]))
        except KDError:
            continue  # a row whose trials database is gone: nothing to show
        out.append(
            {
                "id": row["id"],
                "label": f"{row['id']} · {cfg.data.dataset} · {cfg.runtime} b{cfg.batch_size} · {cfg.goal.text()}",
                "done": done,
                "trials": cfg.trials,
                "left": max(0, cfg.trials - done),
                "teacher_id": cfg.teacher_id,
                "dataset": cfg.data.dataset,
                "data_root": cfg.data.root,
                "image_size": cfg.data.image_size,
            }
        )
    return out


def study_state(store: Store, study_id: str) -> dict:
    """One study as the page draws it: {"config", "reference" (the teacher, or None before its
    first start has timed it), "rows" (DataFrame, one row per trial), "fronts" ({"latency",
    "size"}: the trained trials no other beats in accuracy at a lower latency / size), "chosen"
    (row dict or None), "verdict" (one sentence), "budget_ms", "floor_acc" (the lowest validation
    accuracy the goal allows), "machine" (one line), "done"}."""
    cfg = load_config(store, study_id)
    study = read_study(store, study_id)
    ref = study.user_attrs.get("reference")
    rows = with_feasibility(trial_rows(study.get_trials(), ref), cfg.goal, ref)
    frame = pd.DataFrame(
        rows, columns=[*TABLE_COLUMNS, *(k for k in (rows[0] if rows else {}) if k not in TABLE_COLUMNS)]
    )
    trained = frame[frame["state"] == "complete"] if len(frame) else frame
    budget = cfg.goal.latency_budget(ref["latency_ms"]) if ref else cfg.goal.max_latency_ms
    floor = ref["val_acc"] - cfg.goal.max_drop / 100 if ref and cfg.goal.max_drop is not None else None
    return {
        "config": cfg,
        "reference": ref,
        "rows": frame,
        "fronts": {
            "latency": pareto_front(trained, "latency_ms", "val_acc") if len(trained) else trained,
            "size": pareto_front(trained, "size_mb", "val_acc") if len(trained) else trained,
        },
        "chosen": chosen(rows),
        "verdict": verdict(rows, cfg, ref, study.user_attrs.get("infeasible", "")),
        "infeasible": bool(study.user_attrs.get("infeasible")),
        "budget_ms": budget,
        "floor_acc": floor,
        "machine": machine_line(ref["machine"]) if ref else "",
        "done": counted(study),
    }


def versus_teacher(pick: dict, ref: dict) -> dict:
    """The chosen student's numbers beside the teacher's: accuracy (and its drop in points),
    latency (and the speed-up), size (and how many times smaller)."""
    return {
        "val_acc": pick["val_acc"],
        "drop_points": pick["drop_points"],
        "test_acc": pick["test_acc"],
        "teacher_test_acc": ref["test_acc"],
        "latency_ms": pick["latency_ms"],
        "speedup": pick["speedup"],
        "size_mb": pick["size_mb"],
        "smaller": ref["size_mb"] / pick["size_mb"] if pick["size_mb"] > 0 else math.nan,
    }


def deploy_link(store: Store, state: dict) -> dict | None:
    """Query parameters that open the chosen student on the Compare page's Deployment tab (int8
    exports when the study chose int8), with its teacher in use; None without a chosen student.
    A select box bound to the URL keeps the option's label there (its format_func's text), so the
    run is named as the Compare page labels it. The dataset is the sidebar's (a URL parameter
    bound to its widget): the page offers the link only while that is the study's dataset."""
    pick, cfg = state["chosen"], state["config"]
    run = store.get_run(pick["run_id"]) if pick is not None and pick.get("run_id") else None
    if run is None:
        return None
    label = option_label({"label": run.label, "kind": run.kind, "id": run.id})
    return {
        "teacher": cfg.teacher_id,
        "cmp_runs": label,
        "dep_tab": "Deployment",
        "dep_run": label,
        "dep_precision": pick["precision"] or "float32",
    }


def job_study_id(snap: JobSnapshot) -> str | None:
    note = snap.notes.get("compress")
    return note["id"] if note else None
