"""The one progress-record type that the CLI, the dashboard and the store consume."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Progress:
    """One step, epoch or end-of-run report from the engine.

    `event` is "step" (the loss, its named terms and throughput), "epoch" (adds train and
    validation accuracy, seconds and ETA) or "end" (adds the final status); "cache"
    reports images decoded into the on-disk image cache (step of total_steps images)
    while a dataset loads, before any run.
    """

    event: str  # step | epoch | end
    epoch: int  # 1-based epoch the record belongs to
    step: int  # global step, 1-based
    total_steps: int
    loss: float = float("nan")  # the total that was back-propagated
    terms: dict[str, float] = field(default_factory=dict)  # "ce" and each method's named terms
    samples_per_s: float = 0.0
    elapsed_s: float = 0.0
    eta_s: float = 0.0
    train_acc: float | None = None
    val_acc: float | None = None
    lr: float | None = None
    status: str = "running"  # running | finished | stopped | failed
    message: str = ""
    run_id: str = ""  # filled in by the experiment layer, which knows the run
    kind: str = ""  # teacher | student | baseline, likewise

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


ProgressSink = Callable[[Progress], None]


def ignore(_: Progress) -> None:
    """A sink that drops every record."""
