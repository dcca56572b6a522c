"""Executors run sweep cells: `InProcess` (one after another, the same recorder as the
Distill page) or `RayExecutor` (ray_executor.py, one Ray task per cell)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import partial

from kd_core.errors import ConfigError
from kd_core.sweep.grid import Cell, CellContext, Executor, Listener
from kd_core.sweep.ray_executor import RayExecutor
from kd_core.train.recorder import run_one


class InProcess:
    """Cells one after another in this thread, through the Distill page's `run_one`."""

    name = "in-process"

    def run(self, cells: Sequence[Cell], ctx: CellContext, listener: Listener, stop: threading.Event) -> None:
        for cell in cells:
            if stop.is_set():
                return
            teacher = ctx.teacher if cell.config.kind == "student" else None
            outcome = run_one(
                ctx.store,
                cell.config,
                ctx.data,
                teacher,
                partial(listener.emit, cell),
                stop,
                ctx.teacher_test_logits,
            )
            listener.done(cell, outcome)


def make_executor(backend: str = "inprocess", ray_address: str | None = None, num_cpus: int = 2) -> Executor:
    """ "inprocess" or "ray"; Ray is imported only when a Ray sweep runs."""
    if backend in ("inprocess", "in-process"):
        return InProcess()
    if backend == "ray":
        return RayExecutor(address=ray_address, num_cpus=num_cpus)
    raise ConfigError(f"unknown sweep backend '{backend}'; use inprocess or ray.")
