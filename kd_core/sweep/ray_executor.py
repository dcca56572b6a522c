"""The Ray backend of sweeps: each cell a Ray task, the driver the store's one writer.

Workers only compute. The driver puts (dataset, teacher, teacher test logits)
into Ray's object store once; each task gets a cell's config and that one
reference, runs the engine part of `experiment.run_one` (`fit`, then
`final_metrics`) and returns numbers, the epoch history and the trained model.
The driver records each result as `run_one` would have, so SQLite has a single
writer and a Ray sweep's runs look like any other in the store. Same config,
same seed, same code: the same numbers as the in-process backend (with one
torch thread on both sides; workers always use one).

Ray is optional (requirements-ray.txt) and imported only when a Ray sweep runs.
Without an address a small local instance is started for the sweep and shut
down after it; with one, the driver connects to that cluster, and kd_core goes
to its workers as a runtime_env py_module.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from kd_core.config import RunConfig
from kd_core.errors import KDError
from kd_core.events import Progress, ProgressSink
from kd_core.store import Store
from kd_core.sweep.grid import Cell, CellContext, Listener
from kd_core.train.checkpoint import save_checkpoint
from kd_core.train.engine import fit
from kd_core.train.recorder import RunOutcome, final_metrics

RAY_MISSING = (
    "the Ray backend needs the 'ray' package, which is not installed: "
    "pip install -r requirements-ray.txt, or use the in-process backend."
)
# Workers import the same kd_core as the driver, wherever the cluster is; one
# thread each, so that tasks sharing a machine do not fight over its cores.
RUNTIME_ENV = {
    "py_modules": [str(Path(__file__).resolve().parent)],
    "env_vars": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
}


def import_ray():
    """Ray, or a KDError that says how to install it."""
    try:
        import ray
    except ImportError as err:
        raise KDError(RAY_MISSING) from err
    return ray


def _failed(message: str) -> dict:
    return {"status": "failed", "message": message, "history": [], "warnings": [], "metrics": {}, "model": None}


def train_cell(cfg: RunConfig, shared: tuple) -> dict:
    """The Ray task: train and measure one cell, touching no store."""
    data, teacher, teacher_test_logits = shared
    # Each task holds one Ray CPU: under "auto" (threads 0) a large model would otherwise take
    # every core in each of the parallel tasks and oversubscribe the machine.
    if cfg.train.threads == 0:
        cfg = replace(cfg, train=replace(cfg.train, threads=1))  # fit sets torch's threads from it
    try:
        result = fit(cfg, data, teacher if cfg.kind == "student" else None)
    except KDError as err:
        return _failed(str(err))
    out = {
        "status": result.status,
        "message": result.message,
        "history": result.history,
        "warnings": result.warnings,
        "metrics": {"seconds": result.seconds},
        "model": None,
    }
    if result.history:
        out["metrics"] = final_metrics(result, cfg, data, teacher_test_logits)
        out["model"] = result.model.cpu()
    return out


def record(store: Store, cell: Cell, ctx: CellContext, res: dict, emit: ProgressSink):
    """Write a task's result into the store as `run_one` does, replaying its epochs to `emit`."""
    cfg, data = cell.config, ctx.data
    run_id = store.create_run(cfg)
    steps = math.ceil(len(data.train_y) / cfg.train.batch_size)
    for h in res["history"]:
        rec = Progress(
            "epoch",
            h["epoch"],
            steps * h["epoch"],
            steps * cfg.train.epochs,
            loss=h["loss"],
            ce=h["ce"],
            kd=h["kd"],
            elapsed_s=h["seconds"],
            train_acc=h["train_acc"],
            val_acc=h["val_acc"],
            run_id=run_id,
        )
        store.add_epoch(rec)
        emit(rec)
    weights = None
    if res["model"] is not None:
        weights = store.weights_path(run_id)
        save_checkpoint(weights, res["model"], cfg.model, data.input_shape, data.classes, data.name)
    error = res["message"] if res["status"] == "failed" or weights is None else ""
    store.finish_run(run_id, res["status"], res["metrics"], error=error, weights=weights)
    last = res["history"][-1]["epoch"] if res["history"] else 0
    emit(
        Progress(
            "end",
            last,
            steps * last,
            steps * cfg.train.epochs,
            status=res["status"],
            message=res["message"],
            val_acc=res["metrics"].get("best_val_acc"),
            run_id=run_id,
        )
    )
    return RunOutcome(run_id, cfg.kind, res["status"], res["message"], res["metrics"], res["warnings"])


class RayExecutor:
    """Cells as Ray tasks, recorded by the driver as they finish (in any order)."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int = 2, poll_s: float = 0.5):
        self.address, self.num_cpus, self.poll_s = address, num_cpus, poll_s

    def run(self, cells: Sequence[Cell], ctx: CellContext, listener: Listener, stop: threading.Event) -> None:
        ray = import_ray()
        started = self._connect(ray)
        try:
            shared = ray.put((ctx.data, ctx.teacher, ctx.teacher_test_logits))  # once, not once per task
            task = ray.remote(num_cpus=1)(train_cell)
            refs = {task.remote(cell.config, shared): cell for cell in cells}
            self._collect(ray, refs, ctx, listener, stop)
        finally:
            if started:
                ray.shutdown()

    @contextmanager
    def session(self) -> Iterator[None]:
        """One Ray session around several `run` calls (a compress study's waves of trials):
        connected or started here, shut down after if started here."""
        ray = import_ray()
        started = self._connect(ray)
        try:
            yield
        finally:
            if started:
                ray.shutdown()

    def _connect(self, ray) -> bool:
        """Connect or start a local instance; True when this call did (and so shuts it down).
        A Ray session the caller started already is used as it is: its workers must be able
        to import kd_core (Ray accepts local py_modules only at ray.init)."""
        if ray.is_initialized():
            return False
        quiet = {"log_to_driver": False, "logging_level": "WARNING", "runtime_env": RUNTIME_ENV}
        if self.address:
            ray.init(address=self.address, **quiet)
        else:
            ray.init(num_cpus=self.num_cpus, include_dashboard=False, **quiet)
        return True

    def _collect(self, ray, refs: dict, ctx: CellContext, listener: Listener, stop: threading.Event) -> None:
        waiting = list(refs)
        while waiting:
            if stop.is_set():  # unfinished cells stay pending in the store: a resume runs them
                for ref in waiting:
                    ray.cancel(ref)
                return
            ready, waiting = ray.wait(waiting, num_returns=1, timeout=self.poll_s)
            for ref in ready:
                cell = refs[ref]
                outcome = record(
                    ctx.store, cell, ctx, self._result(ray, ref), lambda rec, c=cell: listener.emit(c, rec)
                )
                listener.done(cell, outcome)

    @staticmethod
    def _result(ray, ref) -> dict:
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as err:
            return _failed(f"the Ray task failed: {err}")
