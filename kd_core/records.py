"""Typed records that cross from kd_core to the pages: small frozen dataclasses, no torch.

A leaf module: it imports nothing from kd_core but config and errors, so the store,
the job runner and the views can all hand these to each other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


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
        fields = ("median_ms", "p90_ms", "ms_per_sample", "samples_per_s", "runs")
        return LatencyRow(batch, **{k: row.get(k) for k in fields}, threads=latency.get("threads"))

    def to_dict(self) -> dict:
        return asdict(self)
