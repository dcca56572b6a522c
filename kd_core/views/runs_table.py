"""Every run in the store as one table, for the Runs page (and anything else that lists runs).

`runs_frame` gives one row per run (filters: dataset, teacher, kind, status,
sweep), with the validation accuracy per epoch as a list for a sparkline;
`group_by_config` folds the seeds of one configuration into mean ± std (n);
`curves_frame` gives the per-epoch curves of chosen runs, long-form for plotting;
`to_csv` is the table as a file; `command_for` is the `python -m kd_core …`
line that trains a run again.

No torch: pandas and plain data in and out, so the dashboard's pages may call it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import pandas as pd

from kd_core.config import DistillConfig, LabelConfig, RunConfig, format_methods, format_params
from kd_core.deploy.modelcard import config_key, run_command
from kd_core.records import LatencyRow, StoredRun
from kd_core.stats import summarize
from kd_core.store import Store

FILTERS = ("dataset", "teacher", "kind", "status", "sweep")
COLUMNS = [
    "id",
    "kind",
    "dataset",
    "teacher",
    "model",
    "family",
    "size",
    "depth",
    "T",
    "λ",
    "method",
    "labels",
    "seed",
    "epochs",
    "status",
    "best_val_acc",
    "final_val_acc",
    "test_acc",
    "params",
    "latency_b1_ms",
    "duration_s",
    "sweep",
    "created",
    "val_acc_curve",
    "error",
    "config_key",
]
ACCURACIES = ("best_val_acc", "final_val_acc", "test_acc")
NOT_IN_CSV = ("val_acc_curve", "config_key")


def _distill(config: RunConfig) -> tuple[float | None, float | None]:
    """(T, λ) of its distillation config; (None, None) for a run without one (teachers)."""
    d = config.distill
    return (d.temperature, d.alpha) if d is not None else (None, None)


def method_label(distill: DistillConfig | None) -> str | None:
    """A student's methods as --method writes them, with any parameter overrides:
    "kd", "0.5*kd+1*at (at.beta=500.0)"; None without distillation."""
    if distill is None:
        return None
    specs = distill.methods
    params = format_params(specs)
    return format_methods(specs) + (f" ({', '.join(params)})" if params else "")


def labels_text(c: LabelConfig) -> str:
    """The run's label budget in words, and a transfer folder if it had one: runs that differ
    only by budget look alike otherwise ("all labels" for runs stored before budgets)."""
    return c.describe() + (" + unlabelled folder" if "folder:" in c.transfer else "")


def _latency_b1(metrics: dict) -> float | None:
    row = LatencyRow.stored(metrics, 1)
    return row.median_ms if row else None


def _row(r: StoredRun, curve: list[float], sweep_teachers: Mapping[str, str], now: float) -> dict:
    c, m = r.config, r.metrics
    t, lam = _distill(c)
    end = r.finished or (now if r.status == "running" else None)
    teacher = r.teacher_id or (sweep_teachers.get(r.sweep_id or "") if r.kind == "baseline" else None)
    return {
        "id": r.id,
        "kind": r.kind,
        "dataset": r.dataset,
        "teacher": teacher,
        "model": r.label,
        "family": c.model.family,
        "size": c.model.size,
        "depth": c.model.depth,
        "T": t,
        "λ": lam,
        "method": method_label(c.distill),
        "labels": labels_text(c.labels),
        "seed": c.train.seed,
        "epochs": c.train.epochs,
        "status": r.status,
        **{k: m.get(k) for k in ACCURACIES},
        "params": m.get("params"),
        "latency_b1_ms": _latency_b1(m),
        "duration_s": None if end is None else max(0.0, end - r.created),
        "sweep": r.sweep_id,
        "created": pd.Timestamp(r.created, unit="s"),
        "val_acc_curve": curve,
        "error": r.error or "",
        "config_key": config_key(c),
    }


def _matches(value, allowed: Iterable | None) -> bool:
    if allowed is None:
        return True
    allowed = [allowed] if isinstance(allowed, str) else list(allowed)
    return not allowed or value in allowed


def runs_frame(store: Store, filters: Mapping[str, Iterable | None] | None = None) -> pd.DataFrame:
    """One row per stored run, newest first (columns: COLUMNS).

    `filters` maps any of FILTERS to the values to keep (a list; empty or None keeps
    all; None in the list keeps runs without one, e.g. runs of no sweep). "teacher"
    is a student's teacher, and for a sweep's no-KD baseline the sweep's teacher (the
    one its students are compared against). T and λ are empty for teachers and
    baselines; duration is wall-clock seconds from creation to the end (or to now,
    while running); val_acc_curve is the validation accuracy per epoch.
    """

    filters = filters or {}
    unknown = set(filters) - set(FILTERS)
    if unknown:
        raise ValueError(f"unknown filters {sorted(unknown)}; use {', '.join(FILTERS)}")
    runs = store.list_runs()
    sweep_teachers = {s["id"]: s["config"].get("teacher_id") for s in store.list_sweeps()}
    epochs = store.epochs_of([r.id for r in runs])
    now = time.time()
    rows = [
        _row(r, [e["val_acc"] for e in epochs.get(r.id, []) if e["val_acc"] is not None], sweep_teachers, now)
        for r in runs
    ]
    rows = [row for row in rows if all(_matches(row[f], filters.get(f)) for f in FILTERS)]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for col in ("T", "λ", *ACCURACIES, "latency_b1_ms", "duration_s"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    frame["params"] = frame["params"].astype("Int64")
    return frame


def filter_options(store: Store) -> dict[str, list]:
    """The values each filter can take in this store (sweep may include None: no sweep)."""
    frame = runs_frame(store)
    out = {}
    for f in FILTERS:
        values = frame[f].tolist()
        present = sorted({v for v in values if pd.notna(v)})
        out[f] = present + ([None] if f == "sweep" and any(pd.isna(v) for v in values) else [])
    return out


# ---------------------------------------------------------------- seeds folded


GROUP_COLUMNS = [
    "kind",
    "dataset",
    "teacher",
    "model",
    "T",
    "λ",
    "method",
    "labels",
    "epochs",
    "n",
    "seeds",
    "best_val_acc",
    "final_val_acc",
    "test_acc",
    "best_val_acc_mean",
    "best_val_acc_std",
    "final_val_acc_mean",
    "final_val_acc_std",
    "test_acc_mean",
    "test_acc_std",
    "params",
    "latency_b1_ms",
    "sweeps",
    "ids",
]


def group_by_config(frame: pd.DataFrame) -> pd.DataFrame:
    """The finished runs of `frame` folded by configuration (everything but the seed and the
    sweep): per accuracy a "mean ± std (n=…)" text and its mean and std, the seeds, the run
    ids. Unfinished runs are left out: a stopped run's accuracy is not a result."""
    done = frame[frame["status"] == "finished"]
    rows = []
    for _, part in done.groupby("config_key", sort=False):
        first = part.iloc[0]
        row = {
            c: first[c]
            for c in ("kind", "dataset", "teacher", "model", "T", "λ", "method", "labels", "epochs", "params")
        }
        for metric in ACCURACIES:
            s = summarize(part[metric].tolist())
            row[metric], row[f"{metric}_mean"], row[f"{metric}_std"] = s.text(), s.mean, s.std
        row["n"] = len(part)
        row["seeds"] = ", ".join(str(s) for s in sorted(part["seed"].unique()))
        row["latency_b1_ms"] = part["latency_b1_ms"].median()
        row["sweeps"] = ", ".join(sorted({s for s in part["sweep"] if pd.notna(s) and s}))
        row["ids"] = part["id"].tolist()
        rows.append(row)
    return pd.DataFrame(rows, columns=GROUP_COLUMNS)


# ---------------------------------------------------------------- curves and files


def run_label(row: Mapping) -> str:
    """Short legend text: "s0612-1200-ab12 · mlp 16 · T=4 λ=0.9 · seed 0", the method in front of
    T where it is not plain KD ("dkd T=4 λ=0.9")."""
    what = f"T={row['T']:g} λ={row['λ']:g}" if pd.notna(row.get("T")) else row["kind"]
    method = row.get("method")
    if pd.notna(row.get("T")) and isinstance(method, str) and method != "kd":
        what = f"{method} {what}"
    return f"{row['id']} · {row['model']} · {what} · seed {row['seed']}"


def curves_frame(store: Store, ids: Iterable[str]) -> pd.DataFrame:
    """Per-epoch curves of the runs `ids`, long-form: run (id), label, kind, epoch, loss, train_acc, val_acc."""
    ids = list(ids)
    epochs = store.epochs_of(ids)
    rows = []
    for run_id in ids:
        run = store.get_run(run_id)
        if run is None:
            continue
        t, lam = _distill(run.config)
        label = run_label(
            {
                "id": run_id,
                "model": run.label,
                "kind": run.kind,
                "T": t,
                "λ": lam,
                "method": method_label(run.config.distill),
                "seed": run.config.train.seed,
            }
        )
        for e in epochs.get(run_id, []):
            rows.append(
                {
                    "run": run_id,
                    "label": label,
                    "kind": run.kind,
                    "epoch": e["epoch"],
                    "loss": e["loss"],
                    "train_acc": e["train_acc"],
                    "val_acc": e["val_acc"],
                }
            )
    return pd.DataFrame(rows, columns=["run", "label", "kind", "epoch", "loss", "train_acc", "val_acc"])


def to_csv(frame: pd.DataFrame) -> str:
    """The table as CSV text (without the per-epoch curve and the internal key; a list of
    run ids, as in a grouped table, becomes one space-separated field)."""
    out = frame.drop(columns=[c for c in NOT_IN_CSV if c in frame.columns]).copy()
    for col in out.columns:
        if out[col].map(lambda v: isinstance(v, list)).any():
            out[col] = out[col].map(lambda v: " ".join(map(str, v)) if isinstance(v, list) else v)
    return out.to_csv(index=False)


def command_for(run: StoredRun, store: Store | None = None) -> str | None:
    """The `python -m kd_core …` line that trains `run` (a store record) again, every flag from
    its stored config, writing into `store` if given: `kd_core.deploy.modelcard.run_command` (a sweep's
    no-KD baseline names its sweep's teacher; an uploaded checkpoint was not trained here: None)."""
    return run_command(store, run)
