"""A sweep's pending cells run as one job: curves labelled by cell, grid progress as job notes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from kd_core.events import Progress, ProgressSink, ignore
from kd_core.jobs import Job, JobManager
from kd_core.store import Store
from kd_core.sweep.executors import Executor, InProcess, make_executor
from kd_core.sweep.grid import Cell, CellContext, SweepConfig, create_sweep, load_sweep, pending, plan
from kd_core.train.data import Dataset
from kd_core.train.metrics import predict_logits
from kd_core.train.recorder import RunOutcome, load_teacher


class _JobListener:
    """Labels the job's curves by cell and publishes grid progress with `job.note(sweep=...)`."""

    def __init__(self, sweep_id: str, total: int, skipped: int, backend: str, emit: ProgressSink, job: Job):
        self.emit_rec, self.job = emit, job
        self.outcomes: list[RunOutcome] = []
        self.labelled: set[str] = set()
        self.started = time.time()
        self.state: dict[str, Any] = {  # the sweep's note, JSON for the page
            "id": sweep_id,
            "backend": backend,
            "total": total,
            "skipped": skipped,
            "done": skipped,
            "failed": 0,
            "current": "",
            "last": "",
            "eta_s": None,
        }
        job.note(sweep=self.state)

    def emit(self, cell: Cell, rec: Progress) -> None:
        self.emit_rec(rec)
        if rec.run_id and rec.run_id not in self.labelled:
            self.labelled.add(rec.run_id)
            self.job.set_label(rec.run_id, cell.label)
            self.job.note(sweep={**self.state, "current": cell.label})

    def done(self, cell: Cell, outcome: RunOutcome) -> None:
        self.outcomes.append(replace(outcome, model=None))  # a long sweep must not hold every model
        self.job.add_outcome(outcome)
        s = self.state
        s["done"] += outcome.status == "finished"
        s["failed"] += outcome.status == "failed"
        s["last"] = f"{cell.label}: {outcome.status}"
        ran = len(self.outcomes)
        left = s["total"] - s["done"] - s["failed"]
        s["eta_s"] = (time.time() - self.started) / ran * left
        self.job.note(sweep=dict(s))


def run_sweep(
    store: Store,
    sweep_id: str,
    data: Dataset,
    emit: ProgressSink = ignore,
    stop: threading.Event | None = None,
    job: Job | None = None,
    executor: Executor | None = None,
) -> list[RunOutcome]:
    """Run the sweep's pending cells; the job (a fresh one if None) gets curves, outcomes and notes."""
    sweep = load_sweep(store, sweep_id)
    cells = pending(store, sweep_id, sweep)
    executor = executor or InProcess()
    job = job or Job(f"sweep {sweep_id}", "sweep")
    total = len(plan(sweep))
    listener = _JobListener(sweep_id, total, total - len(cells), executor.name, emit, job)
    if cells:
        teacher = load_teacher(store, sweep.teacher_id, data).cpu()
        ctx = CellContext(store, data, teacher, predict_logits(teacher, data.test_x))
        executor.run(cells, ctx, listener, stop or threading.Event())
    return listener.outcomes


def sweep_job(store: Store, sweep_id: str, data: Dataset, executor: Executor | None = None) -> Callable:
    """The sweep as a `JobManager` job fn(emit, stop, job)."""

    def work(emit, stop, job):
        return run_sweep(store, sweep_id, data, emit, stop, job, executor)

    return work


def start_sweep(
    manager: JobManager,
    store: Store,
    data: Dataset,
    sweep: SweepConfig | str,
    backend: str = "inprocess",
    ray_address: str | None = None,
    what: str = "sweep",
) -> Job:
    """Start a new sweep (a SweepConfig) or resume one (its id) in the single worker; `what` names
    it in the job's title ("leaderboard" for the Methods page's)."""
    sweep_id = sweep if isinstance(sweep, str) else create_sweep(store, sweep, data)
    fn = sweep_job(store, sweep_id, data, make_executor(backend, ray_address))
    return manager.start(f"{what} {sweep_id}", "sweep", fn)
