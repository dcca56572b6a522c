"""Background jobs for a long-lived process such as the dashboard server.

One job runs per process at a time, in a worker thread that never touches the
UI. The worker feeds progress records into a lock-protected `Job`; the UI
polls `job.snapshot()`, a frozen `JobSnapshot` copy, about once a second. `stop()` sets a
`threading.Event` that the engine checks between steps; at interpreter exit
the manager stops and joins its worker.
"""

from __future__ import annotations

import atexit
import copy
import logging
import secrets
import threading
import time
from collections.abc import Callable

from kd_core.events import Progress
from kd_core.records import JobSnapshot, RunCurves
from kd_core.train.recorder import RunOutcome

log = logging.getLogger(__name__)

MAX_POINTS = 400  # step points per curve in a snapshot: charts stay light however long the run
# A step record is kept at most this often. At one torch thread a digits step takes ~0.4 ms, and
# taking the lock and copying every record cost ~5 % of the training time; a chart polled every
# second or two gains nothing from more points.
STEP_EVERY_S = 0.05

JobFn = Callable[[Callable[[Progress], None], threading.Event, "Job"], list[RunOutcome]]


def downsample(points: list, limit: int = MAX_POINTS) -> list:
    if len(points) <= limit:
        return list(points)
    stride = len(points) / limit
    return [points[int(i * stride)] for i in range(limit - 1)] + [points[-1]]


class Job:
    """The live state of one job: its runs' curves, progress and outcomes."""

    def __init__(self, title: str, kind: str):
        self.id = secrets.token_hex(4)
        self.title, self.kind = title, kind
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._status, self._message = "running", ""
        self._runs: dict[str, dict] = {}  # run_id -> curves and last record
        self._order: list[str] = []
        self._outcomes: list[dict] = []
        self._notes: dict = {}  # free-form facts the job publishes (e.g. sweep cells)
        self._version = 0  # bumped by every change a snapshot shows: the panel redraws only when it moved
        # worker-only (no lock): the newest step record thinned out, and when a step was last kept
        self._held: tuple[Progress, str] | None = None
        self._kept_at, self._kept_run = float("-inf"), ""
        self.started = time.time()
        self.ended: float | None = None

    # ---- written by the worker
    def on_progress(self, rec: Progress, label: str = "") -> None:
        """Take one record from the worker. Step records are thinned to one per STEP_EVERY_S; the
        newest one left out is held back and goes in before the next other record (an epoch's,
        a run's end) or the job's end, so the last step of every epoch and of the run is kept.
        A run's first step is always kept: a new run shows up at once."""
        if rec.event == "step":
            now = time.perf_counter()
            if rec.run_id == self._kept_run and now - self._kept_at < STEP_EVERY_S:
                self._held = (rec, label)
                return
            self._kept_at, self._kept_run = now, rec.run_id
            if self._held is not None and self._held[0].run_id == rec.run_id:
                self._held = None  # an older step of this run: the newer one stands for it
        with self._lock:
            self._flush_held()
            self._add(rec, label)

    def _flush_held(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self._add(*held)

    def _add(self, rec: Progress, label: str) -> None:
        """Under the lock: one record into its run's curves."""
        self._version += 1
        run = self._runs.get(rec.run_id)
        if run is None:
            label = label or rec.kind or rec.run_id
            if any(r["label"] == label for r in self._runs.values()):
                label = f"{label} {rec.run_id}"
            run = {"label": label, "steps": [], "epochs": [], "last": None}
            self._runs[rec.run_id] = run
            self._order.append(rec.run_id)
        if rec.event == "step":  # (step, total, {term: value}): the terms are the run's own
            run["steps"].append((rec.step, rec.loss, dict(rec.terms)))
        elif rec.event == "epoch":
            run["epochs"].append(
                {
                    "epoch": rec.epoch,
                    "loss": rec.loss,
                    "terms": dict(rec.terms),
                    "train_acc": rec.train_acc,
                    "val_acc": rec.val_acc,
                }
            )
        run["last"] = rec  # made a dict by snapshot(), not per record

    def set_label(self, run_id: str, label: str) -> None:
        with self._lock:
            if run_id in self._runs:
                self._runs[run_id]["label"] = label
                self._version += 1

    def add_outcome(self, outcome: RunOutcome) -> None:
        with self._lock:
            self._outcomes.append(outcome.summary())
            self._version += 1

    def note(self, **facts) -> None:
        with self._lock:
            self._notes.update(copy.deepcopy(facts))
            self._version += 1

    def end(self, status: str, message: str = "") -> None:
        with self._lock:
            self._flush_held()  # called by the worker, which alone touches the held step
            self._status, self._message, self.ended = status, message, time.time()
            self._version += 1

    # ---- read by the UI
    @property
    def live(self) -> bool:
        with self._lock:
            return self._status == "running"

    def snapshot(self) -> JobSnapshot:
        with self._lock:
            runs = tuple(
                RunCurves(
                    run_id=rid,
                    label=r["label"],
                    steps=downsample(r["steps"]),
                    epochs=list(r["epochs"]),
                    last=r["last"].to_dict() if r["last"] else None,
                )
                for rid, r in ((rid, self._runs[rid]) for rid in self._order)
            )
            return JobSnapshot(
                id=self.id,
                title=self.title,
                kind=self.kind,
                status=self._status,
                message=self._message,
                runs=runs,
                outcomes=tuple(copy.deepcopy(self._outcomes)),
                notes=copy.deepcopy(self._notes),
                started=self.started,
                ended=self.ended,
                stopping=self.stop_event.is_set(),
                version=self._version,
            )


class JobBusy(RuntimeError):
    """A job is already running in this process."""


class JobManager:
    """Runs at most one job at a time; keeps recent jobs for later tabs to find."""

    def __init__(self, keep: int = 20):
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._keep = keep
        self._thread: threading.Thread | None = None
        self._current: Job | None = None
        atexit.register(self.shutdown)

    def current(self) -> Job | None:
        """The live job, if any."""
        with self._lock:
            job = self._current
        return job if job is not None and job.live else None

    def latest(self) -> Job | None:
        with self._lock:
            return self._current

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def start(self, title: str, kind: str, fn: JobFn) -> Job:
        """Start `fn(emit, stop_event, job)` in the worker; JobBusy if one is live."""
        with self._lock:
            if self._current is not None and self._current.live:
                raise JobBusy(f"'{self._current.title}' is still running; stop it or wait for it to finish.")
            job = Job(title, kind)
            self._jobs[job.id] = job
            for old in list(self._jobs)[: -self._keep]:
                del self._jobs[old]
            self._current = job
            self._thread = threading.Thread(target=self._work, args=(job, fn), name=f"kd-job-{job.id}", daemon=True)
            self._thread.start()
        return job

    @staticmethod
    def _work(job: Job, fn: JobFn) -> None:
        try:
            outcomes = fn(job.on_progress, job.stop_event, job)
            statuses = [o.status for o in outcomes]
            failed = [o for o in outcomes if o.status == "failed"]
            if failed:
                job.end("failed", failed[0].message)
            elif job.stop_event.is_set() or "stopped" in statuses:
                job.end("stopped", "stopped by request")
            else:
                job.end("finished")
        except Exception as err:  # the worker must never die silently: the page shows the message
            # Logged before the job ends, so the traceback is in the log once anyone sees the failure;
            # a run it was training is already stored as failed with this message (recorder.run_one).
            log.exception("job %s (%s) failed", job.id, job.title)
            job.end("failed", f"{type(err).__name__}: {err}")

    def stop(self) -> None:
        job = self.current()
        if job is not None:
            job.stop_event.set()

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop the live job and join its worker (called at interpreter exit)."""
        self.stop()
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(timeout)
