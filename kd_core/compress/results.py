"""A study's trials as plain rows, which of them meet the goal, and the chosen student.

Read from Optuna's database alone (each trial's parameters and user attributes), so a page can
draw a study while it runs, after a restart, or from another process.
"""

from __future__ import annotations

import math
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from kd_core.compress.config import CompressConfig, Goal
from kd_core.deploy.runtimes import machine_line

STATES = {
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
    TrialState.RUNNING: "running",
    TrialState.WAITING: "waiting",
}
ROW_KEYS = (
    "label",
    "latency_ms",
    "p90_ms",
    "size_mb",
    "val_acc",
    "float_val_acc",
    "test_acc",
    "run_id",
    "epochs",
    "pruned_by",
    "why",
    "latency_from",
    "seconds",
)


def _nan(v) -> float:
    return float("nan") if v is None else float(v)


def trial_row(t: FrozenTrial, ref: dict | None, retried: dict[int, int]) -> dict:
    """One trial as a flat dict (NaN where a number is not known)."""
    a, p = t.user_attrs, t.params
    row: dict[str, Any] = {
        "number": t.number,
        "state": STATES.get(t.state, str(t.state)),
        **{k: a.get(k) for k in ROW_KEYS},
    }
    if t.number in retried:
        row["state"], row["why"] = (
            "interrupted",
            f"stopped before it finished; queued again as trial {retried[t.number]}",
        )
    row.update(
        family=p.get("family"),
        width=p.get("mlp_width", p.get("cnn_width")),
        depth=p.get("mlp_depth"),
        temperature=p.get("temperature"),
        alpha=p.get("alpha"),
        precision=p.get("precision"),
        method=p.get("method", ""),
        machine=machine_line(a.get("machine")) if a.get("machine") else "",
        retry_of=a.get("retry_of"),
    )
    steps = sorted(t.intermediate_values)
    row["last_reported_acc"] = t.intermediate_values[steps[-1]] if steps else None
    for k in ("latency_ms", "p90_ms", "size_mb", "val_acc", "float_val_acc", "test_acc", "last_reported_acc"):
        row[k] = _nan(row[k])
    teacher_acc = ref["val_acc"] if ref else float("nan")
    row["drop_points"] = (teacher_acc - row["val_acc"]) * 100
    teacher_ms = ref["latency_ms"] if ref else float("nan")
    row["speedup"] = teacher_ms / row["latency_ms"] if row["latency_ms"] > 0 else float("nan")
    return row


def trial_rows(trials: list[FrozenTrial], ref: dict | None) -> list[dict]:
    retried = {t.user_attrs["retry_of"]: t.number for t in trials if t.user_attrs.get("retry_of") is not None}
    return [trial_row(t, ref, retried) for t in trials]


def meets(row: dict, goal: Goal, ref: dict | None) -> dict[str, bool]:
    """Each bound of the goal the trial meets (only the bounds that are set; NaN never meets one)."""
    out = {}
    if goal.max_drop is not None:
        out["accuracy"] = row["drop_points"] <= goal.max_drop
    budget = goal.latency_budget(ref["latency_ms"]) if ref else goal.max_latency_ms
    if budget is not None:
        out["latency"] = row["latency_ms"] <= budget
    if goal.max_size_mb is not None:
        out["size"] = row["size_mb"] <= goal.max_size_mb
    return out


def with_feasibility(rows: list[dict], goal: Goal, ref: dict | None) -> list[dict]:
    for r in rows:
        r["feasible"] = r["state"] == "complete" and all(meets(r, goal, ref).values())
    return rows


def chosen(rows: list[dict]) -> dict | None:
    """The most accurate trial that meets the goal (validation accuracy of what ships); ties go to
    the faster, then the smaller, then the earlier one."""
    ok = [r for r in rows if r.get("feasible")]
    if not ok:
        return None
    return min(ok, key=lambda r: (-r["val_acc"], r["latency_ms"], r["size_mb"], r["number"]))


def _points(drop: float) -> str:
    """An accuracy drop in words: "1.39 points below", "0.50 points above", "level with"."""
    if drop == 0:
        return "level with"
    return f"{abs(drop):.2f} points {'below' if drop > 0 else 'above'}"


def _count(rows: list[dict], state: str, pruned_by: str | None = None) -> int:
    return sum(1 for r in rows if r["state"] == state and (pruned_by is None or r["pruned_by"] == pruned_by))


def verdict(rows: list[dict], cfg: CompressConfig, ref: dict | None, infeasible: str = "") -> str:
    """The outcome in one sentence: the chosen student against the teacher, or why there is none."""
    if infeasible:
        return infeasible
    pick = chosen(rows)
    if pick is not None:
        teacher_acc = "?" if ref is None else f"{ref['val_acc']:.4f}"  # a pick is judged against it: not None
        return (
            f"Chosen: trial {pick['number']}, {pick['label']}: validation accuracy {pick['val_acc']:.4f} "
            f"({_points(pick['drop_points'])} the teacher's {teacher_acc}), "
            f"{pick['latency_ms']:.4f} ms under {cfg.runtime} at batch {cfg.batch_size} "
            f"({pick['speedup']:.1f}× faster than the teacher), {pick['size_mb']:.3f} MB."
        )
    done = [r for r in rows if r["state"] in ("complete", "pruned", "failed")]
    if not done:
        return "No trial has finished yet."
    counts = (
        f"{_count(rows, 'complete')} trained to the end, {_count(rows, 'pruned', 'budget')} over the budget "
        f"(not trained), {_count(rows, 'pruned', 'pruner')} stopped early by the pruner, "
        f"{_count(rows, 'failed')} failed"
    )
    complete = [r for r in rows if r["state"] == "complete"]
    best = max(complete, key=lambda r: r["val_acc"], default=None)
    closest = (
        ""
        if best is None
        else f" The best trained trial, {best['label']}, is {best['drop_points']:.2f} points below the teacher."
    )
    return (
        f"No student met the goal ({cfg.goal.text()}) in {len(done)} trials: {counts}.{closest} "
        "Try more trials or epochs per trial, a wider search space, or a looser goal."
    )


def finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)
