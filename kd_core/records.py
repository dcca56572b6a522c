"""Typed records that cross from kd_core to the pages: small frozen dataclasses, no torch.

A leaf module: it imports nothing from kd_core but config, so the store, the job
runner, the views and the pages can all hand these to each other. Each has a
`to_dict()` giving the plain, JSON-able form (what the CLI prints).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from kd_core.config import RunConfig

LATENCY_FIELDS = ("median_ms", "p90_ms", "ms_per_sample", "samples_per_s", "runs")


@dataclass(frozen=True)
class LatencyRow:
    """One latency figure: a model timed at one batch size (median and p90 over `runs` calls)
    at `threads` intra-op threads (`bench.summarize_latency`'s numbers)."""

    batch_size: int
    median_ms: float | None = None
    p90_ms: float | None = None
    ms_per_sample: float | None = None
    samples_per_s: float | None = None
    runs: int | None = None
    threads: int | None = None

    @staticmethod
    def stored(metrics: dict, batch: int) -> LatencyRow | None:
        """The latency a run's metrics keep at `batch` (timed at the end of training, or at
        upload), or None where it was not timed at that batch size."""
        latency = metrics.get("latency") or {}
        row = (latency.get("batches") or {}).get(str(batch))
        if row is None:
            return None
        return LatencyRow(batch, **{k: row.get(k) for k in LATENCY_FIELDS}, threads=latency.get("threads"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class StoredRun:
    """One run in the store: what it is (its config), how it went (status, error, metrics) and
    where its weights are (an absolute path; None when nothing was kept)."""

    id: str
    kind: str  # teacher | student | baseline
    dataset: str
    status: str  # running | finished | stopped | failed
    error: str
    label: str
    config: RunConfig
    metrics: dict[str, Any]
    teacher_id: str | None = None  # a run id, or the checkpoint path it was distilled from
    sweep_id: str | None = None
    created: float = 0.0
    finished: float | None = None
    pid: int | None = None  # the process that ran it: a "running" run whose process is gone failed
    weights: str | None = None

    def latency(self, batch: int) -> LatencyRow | None:
        """Its latency at `batch` as timed when it was stored (None: not timed at that batch)."""
        return LatencyRow.stored(self.metrics, batch)

    def latencies(self) -> list[LatencyRow]:
        """Every batch size it was timed at, smallest first."""
        batches = (self.metrics.get("latency") or {}).get("batches") or {}
        rows = (LatencyRow.stored(self.metrics, int(b)) for b in sorted(batches, key=int))
        return [row for row in rows if row is not None]

    def to_dict(self) -> dict[str, Any]:
        """The store's row as plain data, the config as a dict: what `runs --json` prints."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["config"] = self.config.to_dict()
        return out


@dataclass(frozen=True)
class RunCurves:
    """One run of a job as the live view draws it. The points are the worker's own, as it
    recorded them: `steps` are per-step loss points, `epochs` one dict per finished epoch."""

    run_id: str
    label: str
    steps: list
    epochs: list[dict]
    last: dict | None  # the run's latest progress record (Progress.to_dict()), None before any

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class JobSnapshot:
    """A background job as the pages see it: a copy taken under the job's lock, so it never
    changes under a page that is drawing it. `outcomes` are the runs' summaries (RunOutcome.summary)
    as they finish; `notes` the free-form facts the job publishes (a sweep's cells, a measurement)."""

    id: str
    title: str
    kind: str  # teacher | distill | quick | sweep | deploy | compress | ...
    status: str  # running | finished | stopped | failed
    message: str  # why it failed or stopped ("" while it runs or when it finished)
    runs: tuple[RunCurves, ...]
    outcomes: tuple[dict, ...]
    notes: dict[str, Any]
    started: float
    ended: float | None
    stopping: bool  # Stop was pressed; the worker stops at its next check
    version: int = 0  # bumped by every change the job shows: a panel redraws only when it moved

    @property
    def running(self) -> bool:
        return self.status == "running"

    def run(self, run_id: str) -> RunCurves | None:
        return next((r for r in self.runs if r.run_id == run_id), None)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["runs"], out["outcomes"] = [r.to_dict() for r in self.runs], list(self.outcomes)
        return out
