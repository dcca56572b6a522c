"""Teacher against students, in tables: what the Compare page shows.

Pure functions over a `Store` and run ids; they return pandas DataFrames and
plain dicts (numpy for matrices). Only runs that finished or were stopped
with metrics (a test accuracy) take part: failed runs have nothing to compare.

Units: size in MB (10^6 bytes, as on the Teacher page), latency in ms (median
and p90 of timed calls on the CPU, at batch 1 and at batch 256), throughput
in samples/s at batch 256.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeGuard

import numpy as np
import pandas as pd

from kd_core.config import DistillConfig, MethodSpec
from kd_core.records import LatencyRow, StoredRun
from kd_core.stats import Difference, accuracy_difference
from kd_core.store import Store
from kd_core.store.related import baseline_of, gain_over_baseline, test_size

STUDENT_KINDS = ("student", "baseline")
USABLE_STATUSES = ("finished", "stopped")

TABLE_COLUMNS = [
    "id",
    "label",
    "title",
    "name",
    "kind",
    "status",
    "params",
    "size_mb",
    "x_smaller",
    "b1_median_ms",
    "b1_p90_ms",
    "b256_median_ms",
    "b256_p90_ms",
    "samples_per_s",
    "test_acc",
    "acc_vs_teacher",
    "images_vs_teacher",
    "agreement",
    "teacher_id",
]
SCATTER_COLUMNS = [
    "id",
    "label",
    "kind",
    "test_acc",
    "size_mb",
    "b1_median_ms",
    "params",
    "teacher_id",
    "is_teacher_in_use",
]


def _usable(run: StoredRun | None) -> TypeGuard[StoredRun]:
    """A stored run (not None) that finished or stopped with test metrics."""
    return run is not None and run.status in USABLE_STATUSES and run.metrics.get("test_acc") is not None


def usable_runs(store: Store, dataset: str, kinds: Iterable[str] = ("teacher", *STUDENT_KINDS)) -> list[StoredRun]:
    """Stored runs of `dataset` with test metrics, newest first."""
    kinds = set(kinds)
    return [r for r in store.list_runs(dataset=dataset) if r.kind in kinds and _usable(r)]


# ---------------------------------------------------------------- what a run is, in words

PICKER_COLUMNS = ["id", "title", "kind", "model", "method", "T", "lam", "seed", "sweep", "status", "teacher_id"]


def method_name(distill: DistillConfig | None) -> str:
    """The distillation method(s) of a config: 'KD', 'DKD', 'KD+AT', '0.5×KD+AT'. Configs from
    before methods existed load as KD (Hinton et al.), as does no config at all."""
    methods = distill.methods if distill is not None else (MethodSpec("kd"),)
    plain = all(float(m.weight) == 1.0 for m in methods)
    return "+".join(m.name.upper() if plain else f"{float(m.weight):g}×{m.name.upper()}" for m in methods)


def run_facts(run: StoredRun) -> dict:
    """A stored run's identity in words: kind, model, method, T, λ, seed, sweep, status and a
    one-line `title` such as 'student · mlp 32 · KD T=4 λ=0.9 · seed 0'."""
    cfg = run.config
    distill = cfg.distill if run.kind == "student" else None
    model = cfg.model.label()
    seed = cfg.train.seed
    facts = {
        "id": run.id,
        "kind": run.kind,
        "model": model,
        "method": method_name(distill) if distill else None,
        "T": float(distill.temperature) if distill else None,
        "lam": float(distill.alpha) if distill else None,
        "seed": seed,
        "sweep": run.sweep_id,
        "status": run.status,
        "teacher_id": run.teacher_id,
    }
    how = (
        f"{facts['method']} T={facts['T']:g} λ={facts['lam']:g}"
        if distill
        else "no KD"
        if run.kind == "baseline"
        else ""
    )
    if "uploaded" in run.label:
        how = "uploaded"
    sweep = f"sweep {run.sweep_id[-4:]}" if run.sweep_id else ""
    parts = [run.kind, model, how, f"seed {seed}" if seed is not None else "", sweep]
    facts["title"] = " · ".join(p for p in parts if p) + ("" if run.status == "finished" else f" ({run.status})")
    return facts


def short_names(facts: Sequence[dict]) -> list[str]:
    """Labels for bars and legends: the kind, then only what tells runs of that kind apart
    (model, method, T, λ, seed, in that order); the run id's end if they are still alike."""
    names = []
    for f in facts:
        same_kind = [g for g in facts if g["kind"] == f["kind"]]
        bits = [f["kind"]]
        for key, fmt in (("model", "{}"), ("method", "{}"), ("T", "T={:g}"), ("lam", "λ={:g}"), ("seed", "s{}")):
            if f.get(key) is not None and len({g.get(key) for g in same_kind}) > 1:
                bits.append(fmt.format(f[key]))
        names.append(" ".join(bits))
    alike = {n for n in names if names.count(n) > 1}
    return [f"{n} ·{f['id'][-4:]}" if n in alike else n for n, f in zip(names, facts)]


def picker_frame(store: Store, dataset: str, statuses: Iterable[str] = ("finished",)) -> pd.DataFrame:
    """Students and baselines of `dataset` with the given statuses, newest first, PICKER_COLUMNS.
    Failed runs (no results) and stopped ones (partly trained) only when asked for."""
    wanted = set(statuses)
    rows = [
        run_facts(r)
        for r in store.list_runs(dataset=dataset)
        if r.kind in STUDENT_KINDS and r.status in wanted and r.status != "running"
    ]
    return pd.DataFrame(rows, columns=PICKER_COLUMNS)


def filter_picker(frame: pd.DataFrame, kinds: Sequence[str], sweep: str, teacher_id: str | None) -> pd.DataFrame:
    """`frame` narrowed to `kinds`, to runs outside any sweep (sweep == "none"), of one sweep
    (its id) or all ("any"), and to the students of `teacher_id` (None: any teacher)."""
    out = frame[frame["kind"].isin(kinds)]
    if sweep == "none":
        out = out[out["sweep"].isna()]
    elif sweep != "any":
        out = out[out["sweep"] == sweep]
    if teacher_id is not None:
        out = out[out["teacher_id"] == teacher_id]
    return out


def default_selection(store: Store, dataset: str, teacher_id: str) -> list[str]:
    """What Compare shows first: the teacher's latest finished student (outside sweeps if it
    has one there) and that student's baseline."""
    students = [
        r for r in usable_runs(store, dataset, ("student",)) if r.teacher_id == teacher_id and r.status == "finished"
    ]
    students.sort(key=lambda r: r.sweep_id is not None)  # stable: newest first within each group
    if not students:
        return []
    base = baseline_of(store, students[0])
    return [students[0].id, *([base.id] if base else [])]


def headline_differences(store: Store, teacher_id: str, student_id: str) -> dict[str, Difference]:
    """The student against its baseline and against the teacher, each with its noise: over
    every seed of the student's experiment in the store (paired by seed with the baseline's),
    or its one seed judged by the test set's sampling noise. Keys "baseline", "teacher"."""
    student, teacher = store.get_run(student_id), store.get_run(teacher_id)
    if not (_usable(student) and _usable(teacher)):
        return {}
    out = {}
    gain = gain_over_baseline(store, student) if student.kind == "student" else None
    if gain is not None:
        out["baseline"] = gain[1]
    agreement = student.metrics.get("agreement") if student.teacher_id == teacher_id else None
    seed = student.config.train.seed
    out["teacher"] = accuracy_difference(
        {seed: student.metrics["test_acc"]},
        {seed: teacher.metrics["test_acc"]},
        test_size(student),
        None if agreement is None else 1 - agreement,
    )
    return out


def student_options(store: Store, dataset: str) -> pd.DataFrame:
    """Students and baselines of `dataset` one may compare: id, label, kind, teacher_id, test_acc."""
    rows = [
        {
            "id": r.id,
            "label": r.label,
            "kind": r.kind,
            "teacher_id": r.teacher_id,
            "test_acc": r.metrics["test_acc"],
        }
        for r in usable_runs(store, dataset, STUDENT_KINDS)
    ]
    return pd.DataFrame(rows, columns=["id", "label", "kind", "teacher_id", "test_acc"])


def default_students(store: Store, dataset: str, teacher_id: str) -> list[str]:
    """The students distilled from `teacher_id` and their no-KD baselines (which keep the teacher id)."""
    options = student_options(store, dataset)
    return options.loc[options["teacher_id"] == teacher_id, "id"].tolist()


def _nan(value) -> float:
    return float("nan") if value is None else float(value)


def run_row(run: StoredRun) -> dict:
    """One run's comparable numbers (NaN where the run did not record them)."""
    m = run.metrics
    b1, b256 = LatencyRow.stored(m, 1) or LatencyRow(1), LatencyRow.stored(m, 256) or LatencyRow(256)
    return {
        "id": run.id,
        "label": run.label,
        "kind": run.kind,
        "params": _nan(m.get("params")),
        "size_mb": _nan(m.get("bytes")) / 1e6,
        "b1_median_ms": _nan(b1.median_ms),
        "b1_p90_ms": _nan(b1.p90_ms),
        "b256_median_ms": _nan(b256.median_ms),
        "b256_p90_ms": _nan(b256.p90_ms),
        "samples_per_s": _nan(b256.samples_per_s),
        "test_acc": _nan(m.get("test_acc")),
        "agreement": _nan(m.get("agreement")),
        "teacher_id": run.teacher_id,
    }


def compare_table(store: Store, teacher_id: str, student_ids: Sequence[str]) -> pd.DataFrame:
    """The teacher's row, then one per student (in the order given), with TABLE_COLUMNS.

    title: the run in words (run_facts); name: a short label telling the rows apart (short_names).
    x_smaller: teacher params / run params.
    acc_vs_teacher: test accuracy minus the teacher's; images_vs_teacher: the same in test
    images (on the run's own test set). agreement: share of test images where the run's top-1
    matches this teacher's (1 for the teacher); NaN for a run distilled from, or measured
    against, another teacher. Unknown or unusable run ids are left out (see `left_out`).
    """
    teacher = store.get_run(teacher_id)
    if not _usable(teacher):
        return pd.DataFrame(columns=TABLE_COLUMNS)
    runs, rows = [teacher], [{**run_row(teacher), "agreement": 1.0}]
    seen = {teacher_id}
    for rid in student_ids:
        run = store.get_run(rid)
        if rid in seen or not _usable(run):
            continue
        seen.add(rid)
        row = run_row(run)
        if run.teacher_id != teacher_id:
            row["agreement"] = float("nan")
        runs.append(run)
        rows.append(row)
    facts = [run_facts(r) for r in runs]
    df = pd.DataFrame(rows)
    df["title"], df["name"], df["status"] = [f["title"] for f in facts], short_names(facts), [r.status for r in runs]
    df["x_smaller"] = df["params"].iloc[0] / df["params"]
    df["acc_vs_teacher"] = df["test_acc"] - df["test_acc"].iloc[0]
    df["images_vs_teacher"] = [round(d * test_size(r)) for d, r in zip(df["acc_vs_teacher"], runs)]
    return df[TABLE_COLUMNS].reset_index(drop=True)


def left_out(store: Store, student_ids: Sequence[str]) -> list[dict]:
    """Picked runs with nothing to compare (failed, or no test metrics): {title, reason}."""
    out = []
    for rid in dict.fromkeys(student_ids):
        run = store.get_run(rid)
        if run is None:
            out.append({"title": rid, "reason": "not in this store"})
        elif not _usable(run):
            reason = run.error or f"{run.status} without test metrics"
            out.append({"title": run_facts(run)["title"], "reason": reason})
    return out


def scatter_frame(
    store: Store, dataset: str, teacher_id: str | None = None, statuses: Iterable[str] = ("finished",)
) -> pd.DataFrame:
    """Every usable run of `dataset` (teachers, students, baselines) with SCATTER_COLUMNS;
    finished ones only unless `statuses` also names "stopped" (partly trained)."""
    wanted = set(statuses)
    rows = []
    for run in usable_runs(store, dataset):
        if run.status not in wanted:
            continue
        r = run_row(run)
        rows.append({**{c: r[c] for c in SCATTER_COLUMNS if c in r}, "is_teacher_in_use": run.id == teacher_id})
    return pd.DataFrame(rows, columns=SCATTER_COLUMNS)


def pareto_front(df: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Rows of `df` that no other row dominates, for minimal `x` and maximal `y`,
    sorted by x (then y) ascending. Row q dominates p when q.x <= p.x and
    q.y >= p.y, and q is strictly better in one of them; rows equal in both
    stay together. Rows with NaN in x or y are left out."""
    pts = df.dropna(subset=[x, y]).sort_values([x, y], ascending=[True, False], kind="mergesort")
    keep, best_y, best_x = [], -np.inf, None
    for idx, xv, yv in zip(pts.index, pts[x], pts[y]):
        if yv > best_y or (yv == best_y and xv == best_x):
            keep.append(idx)
            best_y, best_x = yv, xv
    return pts.loc[keep].sort_values([x, y], kind="mergesort")


def _class_names(classes: Sequence[str] | None, k: int) -> list[str]:
    return [str(c) for c in classes] if classes is not None and len(classes) == k else [str(i) for i in range(k)]


def confusion_pair(store: Store, teacher_id: str, student_id: str, classes: Sequence[str] | None = None) -> dict | None:
    """Test-set confusion matrices (rows true class, columns predicted; counts):
    {"classes", "teacher", "student", "teacher_label", "student_label"}; None if one is missing."""
    t, s = store.get_run(teacher_id), store.get_run(student_id)
    if not (_usable(t) and _usable(s)):
        return None
    cm_t, cm_s = t.metrics.get("confusion_matrix"), s.metrics.get("confusion_matrix")
    if cm_t is None or cm_s is None or np.shape(cm_t) != np.shape(cm_s):
        return None
    cm_t, cm_s = np.asarray(cm_t, dtype=np.int64), np.asarray(cm_s, dtype=np.int64)
    return {
        "classes": _class_names(classes, len(cm_t)),
        "teacher": cm_t,
        "student": cm_s,
        "teacher_label": t.label,
        "student_label": s.label,
    }


def per_class_difference(
    store: Store, teacher_id: str, student_id: str, classes: Sequence[str] | None = None
) -> pd.DataFrame:
    """Per-class test accuracy (recall) of teacher and student, and student − teacher:
    columns class, teacher, student, difference (empty if one run lacks them)."""
    columns = ["class", "teacher", "student", "difference"]
    t, s = store.get_run(teacher_id), store.get_run(student_id)
    if not (_usable(t) and _usable(s)):
        return pd.DataFrame(columns=columns)
    pa_t, pa_s = t.metrics.get("per_class_accuracy"), s.metrics.get("per_class_accuracy")
    if pa_t is None or pa_s is None or len(pa_t) != len(pa_s):
        return pd.DataFrame(columns=columns)
    df = pd.DataFrame(
        {
            "class": _class_names(classes, len(pa_t)),
            "teacher": np.asarray(pa_t, dtype=float),
            "student": np.asarray(pa_s, dtype=float),
        }
    )
    df["difference"] = df["student"] - df["teacher"]
    return df[columns]
