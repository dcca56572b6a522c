"""The Ray backend of sweeps: each cell a Ray task, the driver the store's one writer.

Workers only compute. The driver puts (dataset, teacher, teacher test logits)
into Ray's object store once; each task gets a cell's config and that one
reference, runs `fit` and the recorder's `measure`, and returns a `Trained`:
the epoch history, the figures and the trained model. The driver hands it to
the recorder's `record`, the same code as every other run's, so SQLite has a
single writer and a Ray sweep's runs look like any other in the store. Same config,
same seed, same code: the same numbers as the in-process backend (with one
torch thread on both sides; workers always use one).

Ray is optional (requirements-ray.txt) and imported only when a Ray sweep runs.
Without an address a small local instance is started for the sweep and shut
down after it; with one, the driver connects to that cluster, and kd_core goes
to its workers as a runtime_env py_module (a local instance's workers import
the installed package).
"""

from __future__ import annotations

import math
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path

from kd_core.config import RunConfig
from kd_core.errors import KDError
from kd_core.events import Progress, ProgressSink
from kd_core.store import Store
from kd_core.sweep.grid import Cell, CellContext, Listener
from kd_core.train.engine import fit
from kd_core.train.recorder import RunOutcome, Trained, measure, record

RAY_MISSING = (
    "the Ray backend needs the 'ray' package, which is not installed: "
    "pip install -r requirements-ray.txt, or use the in-process backend."
)
# One thread each, so that tasks sharing a machine do not fight over its cores.
LOCAL_RUNTIME_ENV = {"env_vars": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}}
# A cluster's workers import the driver's kd_core (the whole package, shipped by Ray).
# A local instance's workers run this interpreter, where kd_core is installed: shipping
# it there only adds an upload that Ray can time out under load.
KD_CORE_DIR = Path(__file__).resolve().parents[1]
CLUSTER_RUNTIME_ENV = {**LOCAL_RUNTIME_ENV, "py_modules": [str(KD_CORE_DIR)]}


RAY_PROBE_S = 3.0  # how long the address may take to accept a TCP connection
RAY_CHECKS = (
    "check that the head node is up (`ray start --head` there; `ray status` on it), that the address and "
    "port are right (host:6379 for the GCS, ray://host:10001 for Ray Client), and that no firewall is in the way"
)


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a Ray address, or None for one that names no socket ("auto", "local")."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rstrip("/").rpartition(":")
    if not sep:
        return None if rest in ("auto", "local", "") else (rest, 10001 if "://" in address else 6379)
    try:
        return host.strip("[]"), int(port)
    except ValueError as err:
        raise KDError(f"the Ray address '{address}' has no valid port; use host:port or ray://host:port.") from err


def check_ray_address(address: str, timeout: float = RAY_PROBE_S) -> None:
    """Refuse an unreachable cluster in seconds with what to check, before `ray.init` spends half
    a minute retrying and ends in a raw ConnectionError."""
    target = _host_port(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout):
            pass
    except OSError as err:
        reason = "no answer" if isinstance(err, TimeoutError) else (err.strerror or str(err))
        raise KDError(
            f"cannot reach the Ray cluster at {address} ({reason} within {timeout:g} s): {RAY_CHECKS}."
        ) from err


def check_ray_gcs(address: str, timeout: float = RAY_PROBE_S) -> None:
    """One request to the cluster's GCS (what ray.init asks first, then retries for about 20 s):
    a port that answers but is not Ray, or refuses this driver's credentials, fails here at once.
    Ray Client addresses (ray://) and "auto" are left to ray.init."""
    if "://" in address or _host_port(address) is None:
        return
    try:
        from ray._raylet import GcsClient  # type: ignore[attr-defined]  # Ray's own client; private, so a missing one skips the check
    except ImportError:
        return
    answer: dict = {}

    def ask() -> None:
        try:
            answer["cluster"] = GcsClient(address=address).cluster_id
        except Exception as err:
            answer["error"] = err

    asker = threading.Thread(target=ask, daemon=True, name="kd-ray-probe")
    asker.start()
    asker.join(timeout)
    if "cluster" in answer:
        return
    reason = str(answer["error"]).strip().splitlines()[0][:200] if "error" in answer else f"no answer in {timeout:g} s"
    raise KDError(
        f"{address} answers, but not as a Ray cluster that accepts this driver ({reason}): check the address and "
        "port (host:6379 is the GCS), the cluster's authentication token, and that its Ray version matches this "
        f"machine's ({import_ray().__version__})."
    )


def import_ray():
    """Ray, or a KDError that says how to install it."""
    try:
        import ray
    except ImportError as err:
        raise KDError(RAY_MISSING) from err
    return ray


def train_cell(cfg: RunConfig, shared: tuple) -> Trained:
    """The Ray task: train and measure one cell, touching no store."""
    data, teacher, teacher_test_logits = shared
    # Each task holds one Ray CPU: under "auto" (threads 0) a large model would otherwise take
    # every core in each of the parallel tasks and oversubscribe the machine.
    if cfg.train.threads == 0:
        cfg = replace(cfg, train=replace(cfg.train, threads=1))  # fit sets torch's threads from it
    try:
        trained = Trained.of(fit(cfg, data, teacher if cfg.kind == "student" else None))
    except KDError as err:
        return Trained("failed", str(err))
    if trained.model is not None:
        trained.measured = measure(trained.model, cfg, data, teacher_test_logits)
    return trained


def record_cell(store: Store, cell: Cell, ctx: CellContext, trained: Trained, emit: ProgressSink) -> RunOutcome:
    """Create the cell's run, replay its epochs into the store and to `emit`, and `record` it."""
    cfg, data = cell.config, ctx.data
    run_id = store.create_run(cfg)
    steps = math.ceil(len(data.train_y) / cfg.train.batch_size)
    for h in trained.history:
        rec = Progress(
            "epoch",
            h["epoch"],
            steps * h["epoch"],
            steps * cfg.train.epochs,
            loss=h["loss"],
            terms=dict(h["terms"]),
            elapsed_s=h["seconds"],
            train_acc=h["train_acc"],
            val_acc=h["val_acc"],
            run_id=run_id,
        )
        store.add_epoch(rec)
        emit(rec)
    outcome = record(store, run_id, cfg, data, trained)
    last = trained.history[-1]["epoch"] if trained.history else 0
    emit(
        Progress(
            "end",
            last,
            steps * last,
            steps * cfg.train.epochs,
            status=trained.status,
            message=trained.message,
            val_acc=outcome.metrics.get("best_val_acc"),
            run_id=run_id,
        )
    )
    return outcome


class RayExecutor:
    """Cells as Ray tasks, recorded by the driver as they finish (in any order)."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int = 2, poll_s: float = 0.5):
        if num_cpus < 1:  # a local instance without CPUs never schedules a task: the sweep would hang
            raise KDError(f"the local Ray instance needs at least 1 CPU, got {num_cpus}.")
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
        quiet = {"log_to_driver": False, "logging_level": "WARNING"}
        if self.address:
            ray.init(address=self.address, runtime_env=CLUSTER_RUNTIME_ENV, **quiet)
        else:
            ray.init(num_cpus=self.num_cpus, include_dashboard=False, runtime_env=LOCAL_RUNTIME_ENV, **quiet)
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
                outcome = record_cell(ctx.store, cell, ctx, self._result(ray, ref), partial(listener.emit, cell))
                listener.done(cell, outcome)

    @staticmethod
    def _result(ray, ref) -> Trained:
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as err:
            return Trained("failed", f"the Ray task failed: {err}")
