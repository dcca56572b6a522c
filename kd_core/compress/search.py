"""Running a compress study: ask Optuna for candidates, time each before it trains, train the
ones within budget as normal stored runs, and tell Optuna how they did.

One start of a study runs until its budget (trials in the study, or minutes for this start) is
spent or it is stopped. Candidates come in waves: one at a time in-process, one per Ray worker
on Ray. Each candidate's latency is measured here, on this machine, before any training; one
that cannot meet the latency or size budget is pruned at no training cost. The others run
through a sweep executor: in-process through the recorder's `run_one` (the same path as every
run), where the engine's per-epoch records are reported to Optuna and its pruner may stop the
run between steps; on Ray as tasks whose results the driver records, so the driver stays the
only writer of both databases (on Ray the pruner learns from each run's epochs, but a remote
run cannot be stopped mid-way).

A stopped start leaves its unfinished trial queued again (`study.retry`): a resume runs it
first and repeats no finished trial.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field, replace

import optuna
from optuna.trial import TrialState

from kd_core.compress import measure
from kd_core.compress.config import CompressConfig
from kd_core.compress.results import chosen, trial_rows, verdict, with_feasibility
from kd_core.compress.space import Candidate, smallest_specs, suggest
from kd_core.compress.study import counted, load_config, open_study, recover, retry
from kd_core.config import RunConfig
from kd_core.deploy import export, runtimes
from kd_core.events import Progress, ProgressSink, ignore
from kd_core.jobs import Job
from kd_core.store import Store
from kd_core.sweep.executors import make_executor
from kd_core.sweep.grid import Cell, CellContext
from kd_core.train.data import Dataset
from kd_core.train.metrics import predict_logits
from kd_core.train.recorder import RunOutcome, load_teacher


@dataclass
class StudyReport:
    """What one start of a study did: the runs it trained and the study's verdict so far."""

    study_id: str
    outcomes: list[RunOutcome] = field(default_factory=list)
    verdict: str = ""
    chosen: dict | None = None
    rows: list[dict] = field(default_factory=list)
    reference: dict = field(default_factory=dict)
    stopped: bool = False


@dataclass
class _Pending:
    """A trial between ask and tell."""

    trial: optuna.Trial
    cand: Candidate
    lat: dict
    started: float
    stop: threading.Event = field(default_factory=threading.Event)
    pruned_at: int = 0
    labelled: bool = False


def run_config(cfg: CompressConfig, cand: Candidate, study_id: str) -> RunConfig:
    return RunConfig(
        kind="student",
        data=cfg.data,
        model=cand.spec,
        train=cfg.train,
        distill=cand.distill(cfg.cache_teacher_logits),
        teacher_id=cfg.teacher_id,
        study_id=study_id,
    )


def reference(study: optuna.Study, cfg: CompressConfig, teacher, data: Dataset) -> dict:
    """The teacher's accuracy and latency, measured at the study's first start and kept with it."""
    ref = study.user_attrs.get("reference")
    if ref is None:
        ref = measure.teacher_reference(teacher, cfg.teacher_id, data, cfg.runtime, cfg.batch_size, cfg.threads)
        study.set_user_attr("reference", ref)
    return ref


def floor_check(study: optuna.Study, cfg: CompressConfig, data: Dataset, ref: dict) -> str:
    """ "" when the cheapest candidates of the space can meet the latency and size budget; else why
    no candidate can (kept with the study, so that every later reader says the same)."""
    if "floor_checked" in study.user_attrs:  # once per study: a resume under another load must not flip it
        return study.user_attrs.get("infeasible", "")
    budget, size = cfg.goal.latency_budget(ref["latency_ms"]), cfg.goal.max_size_mb
    if budget is None and size is None:
        return ""
    floor = []  # the smallest model of each family, in each precision
    for spec in smallest_specs(cfg.space):
        for precision in cfg.space.precisions:
            cand = Candidate(spec, 1.0, 0.5, precision)
            floor.append((cand, measure.candidate_latency(cand, data, cfg.runtime, cfg.batch_size, cfg.threads)))
    fastest = min(floor, key=lambda f: f[1]["median_ms"])
    smallest = min(floor, key=lambda f: f[1]["bytes"])
    why = ""
    if budget is not None and fastest[1]["median_ms"] > budget:
        why = (
            f"No candidate can meet the latency budget of {budget:.4g} ms: the fastest in the search space, "
            f"{fastest[0].spec.label()} ({fastest[0].precision}), takes {fastest[1]['median_ms']:.4g} ms under "
            f"{cfg.runtime} at batch {cfg.batch_size} on this machine (the teacher: {ref['latency_ms']:.4g} ms)."
        )
    elif size is not None and smallest[1]["bytes"] / 1e6 > size:
        why = (
            f"No candidate can meet the size budget of {size:g} MB: the smallest in the search space, "
            f"{smallest[0].spec.label()} ({smallest[0].precision}), is {smallest[1]['bytes'] / 1e6:.4g} MB "
            f"as {cfg.runtime} deploys it."
        )
    if why:
        study.set_user_attr("infeasible", why + " Loosen the goal or widen the search space.")
    study.set_user_attr("floor_checked", True)
    return study.user_attrs.get("infeasible", "")


def over_budget(cfg: CompressConfig, lat: dict, ref: dict) -> str:
    """Why a measured candidate cannot meet the budget ("" when it can)."""
    budget = cfg.goal.latency_budget(ref["latency_ms"])
    if budget is not None and lat["median_ms"] > budget:
        return f"latency {lat['median_ms']:.4g} ms > budget {budget:.4g} ms"
    size = cfg.goal.max_size_mb
    if size is not None and lat["bytes"] / 1e6 > size:
        return f"size {lat['bytes'] / 1e6:.4g} MB > budget {size:g} MB"
    return ""


class _Latencies:
    """Measured latencies by architecture: a candidate whose deployed model was already timed on
    this machine (by an earlier trial of the study) reuses that figure instead of exporting again."""

    def __init__(self, study: optuna.Study, cfg: CompressConfig, data: Dataset):
        self.cfg, self.data = cfg, data
        self.cpu = runtimes.machine_info()["cpu"]
        self.known: dict[tuple, tuple[int, dict]] = {}
        for t in study.get_trials(deepcopy=False):
            a = t.user_attrs
            if "arch" in a and a.get("machine", {}).get("cpu") == self.cpu and a.get("latency_from") is None:
                self.known.setdefault(tuple(a["arch"]), (t.number, a["latency"]))

    def __call__(self, number: int, cand: Candidate) -> tuple[dict, int | None]:
        if cand.arch_key in self.known:
            source, lat = self.known[cand.arch_key]
            return lat, source
        lat = measure.candidate_latency(cand, self.data, self.cfg.runtime, self.cfg.batch_size, self.cfg.threads)
        self.known[cand.arch_key] = (number, lat)
        return lat, None


class _Trials:
    """The executor's listener: labels the job's curves by trial, reports each epoch to Optuna
    (whose pruner may stop an in-process run), and tells Optuna each trial's result."""

    def __init__(self, search: _Search, live_pruning: bool):
        self.s, self.live_pruning = search, live_pruning
        self.pending: dict[int, _Pending] = {}  # id(cell) -> trial

    def emit(self, cell: Cell, rec: Progress) -> None:
        s, p = self.s, self.pending[id(cell)]
        s.emit(rec)
        if rec.run_id and not p.labelled:
            p.labelled = True
            p.trial.set_user_attr("run_id", rec.run_id)
            s.job.set_label(rec.run_id, f"trial {p.trial.number}: {p.cand.label()}")
        if s.stop.is_set():
            p.stop.set()
        if rec.event != "epoch" or rec.val_acc is None or s.cfg.mode != "constrained":
            return  # Optuna's pruners judge one objective: a Pareto search reports nothing
        p.trial.report(rec.val_acc, rec.epoch)
        last = rec.epoch >= s.cfg.train.epochs  # pruning the final epoch would save nothing
        if self.live_pruning and not last and p.trial.should_prune():
            p.pruned_at = rec.epoch
            p.stop.set()

    def done(self, cell: Cell, outcome: RunOutcome) -> None:
        p = self.pending.pop(id(cell))
        self.s.finish(p, outcome)


class _Search:
    """One start of a study."""

    def __init__(self, store, study_id, data, emit, stop, job, backend, ray_address, ray_cpus):
        self.store, self.study_id, self.data = store, study_id, data
        self.emit, self.stop, self.job = emit, stop, job
        self.cfg: CompressConfig = load_config(store, study_id)
        self.executor = make_executor(backend, ray_address, ray_cpus)
        self.wave = ray_cpus if self.executor.name == "ray" else 1
        self.report = StudyReport(study_id)
        self.started = time.time()
        self.note: dict = {"id": study_id, "backend": self.executor.name, "phase": "loading the teacher"}
        job.note(compress=self.note)

    def phase(self, text: str, **facts) -> None:
        self.note.update(phase=text, **facts)
        self.job.note(compress=dict(self.note))

    def run(self, trials: int | None, minutes: float | None) -> StudyReport:
        cfg = self.cfg
        total = trials or cfg.trials
        minutes = minutes if minutes is not None else cfg.minutes
        deadline = self.started + 60 * minutes if minutes else None
        teacher = load_teacher(self.store, cfg.teacher_id, self.data).cpu().eval()
        self.study = open_study(self.store, self.study_id, cfg)
        recover(self.study)
        self.phase("timing the teacher")
        ref = self.report.reference = reference(self.study, cfg, teacher, self.data)
        self.phase("checking the budget against the smallest candidates")
        infeasible = floor_check(self.study, cfg, self.data, ref)
        if not infeasible:
            self.latencies = _Latencies(self.study, cfg, self.data)
            ctx = CellContext(self.store, self.data, teacher, predict_logits(teacher, self.data.test_x))
            session = getattr(self.executor, "session", contextlib.nullcontext)
            with session():
                self._loop(ctx, total, deadline)
        return self._finish(infeasible)

    def _loop(self, ctx: CellContext, total: int, deadline: float | None) -> None:
        listener = _Trials(self, live_pruning=self.executor.name != "ray")
        while not self.stop.is_set():
            left = total - counted(self.study)
            if left <= 0 or (deadline is not None and time.time() >= deadline):
                return
            self.phase(f"{counted(self.study)} of {total} trials done", done=counted(self.study), total=total)
            cells = [c for c in (self._ask(listener) for _ in range(min(left, self.wave))) if c is not None]
            if cells:
                stop = self.stop if self.executor.name == "ray" else listener.pending[id(cells[0])].stop
                self.executor.run(cells, ctx, listener, stop)
            for p in listener.pending.values():  # asked but not run: stopped before their turn
                retry(self.study, p.trial.number, p.trial.params)
            listener.pending.clear()

    def _ask(self, listener: _Trials) -> Cell | None:
        """A new trial, timed; a Cell to train, or None when it was pruned by the budget."""
        trial, started = self.study.ask(), time.time()
        trial.set_user_attr("pid", os.getpid())
        cand = suggest(trial, self.cfg.space)
        trial.set_user_attr("label", cand.label())
        self.phase(f"trial {trial.number}: timing {cand.label()} under {self.cfg.runtime}")
        lat, source = self.latencies(trial.number, cand)
        for key, value in {
            "arch": list(cand.arch_key),
            "latency": lat,
            "latency_ms": lat["median_ms"],
            "p90_ms": lat["p90_ms"],
            "size_mb": lat["bytes"] / 1e6,
            "machine": lat["machine"],
            "latency_from": source,
        }.items():
            trial.set_user_attr(key, value)
        why = over_budget(self.cfg, lat, self.report.reference)
        if why:
            trial.set_user_attr("pruned_by", "budget")
            trial.set_user_attr("why", why + " (not trained)")
            trial.set_user_attr("seconds", time.time() - started)
            self.study.tell(trial, state=TrialState.PRUNED)
            return None
        cell = Cell(run_config(self.cfg, cand, self.study_id))
        listener.pending[id(cell)] = _Pending(trial, cand, lat, started)
        self.phase(f"trial {trial.number}: training {cand.label()}")
        return cell

    def finish(self, p: _Pending, outcome: RunOutcome) -> None:
        """Tell Optuna how a trained trial ended."""
        trial = p.trial
        trial.set_user_attr("run_id", outcome.run_id)
        trial.set_user_attr("epochs", outcome.metrics.get("epochs_done"))
        trial.set_user_attr("seconds", time.time() - p.started)
        self.report.outcomes.append(replace(outcome, model=None))
        if outcome.status == "failed":
            trial.set_user_attr("why", outcome.message)
            self.study.tell(trial, state=TrialState.FAIL)
        elif p.pruned_at:
            trial.set_user_attr("pruned_by", "pruner")
            trial.set_user_attr("why", f"stopped by the {self.cfg.pruner} pruner after epoch {p.pruned_at}")
            self.study.tell(trial, state=TrialState.PRUNED)
        elif outcome.status != "finished":
            retry(self.study, trial.number, trial.params)  # stopped by request: run it again on resume
        else:
            self.job.add_outcome(outcome)
            self.study.tell(trial, self._values(trial, p, outcome))

    def _values(self, trial: optuna.Trial, p: _Pending, outcome: RunOutcome) -> float | list[float]:
        """The objective(s) of a trained trial, from the stored run as it ships."""
        run = export.load_run(self.store, outcome.run_id)
        acc = measure.deployed_accuracy(run, p.cand.quantize, self.cfg.runtime, self.data, self.cfg.threads)
        trial.set_user_attr("float_val_acc", outcome.metrics.get("best_val_acc"))
        trial.set_user_attr("val_acc", acc["val_acc"])
        trial.set_user_attr("test_acc", acc["test_acc"])
        if self.cfg.mode == "constrained":
            return acc["val_acc"]
        return [acc["val_acc"], p.lat["median_ms"], p.lat["bytes"] / 1e6]

    def _finish(self, infeasible: str) -> StudyReport:
        r = self.report
        rows = with_feasibility(trial_rows(self.study.get_trials(), r.reference), self.cfg.goal, r.reference)
        r.rows, r.stopped = rows, self.stop.is_set()
        r.chosen = chosen(rows)
        r.verdict = verdict(rows, self.cfg, r.reference, infeasible)
        self.phase("stopped" if r.stopped else "done", verdict=r.verdict, done=counted(self.study))
        return r


def run_study(
    store: Store,
    study_id: str,
    data: Dataset,
    emit: ProgressSink = ignore,
    stop: threading.Event | None = None,
    job: Job | None = None,
    backend: str = "inprocess",
    ray_address: str | None = None,
    ray_cpus: int = 2,
    trials: int | None = None,
    minutes: float | None = None,
) -> StudyReport:
    """Run the study until its budget is spent or `stop` is set; `trials` and `minutes` override
    the study's own budget for this start (trials counts the whole study, minutes this start)."""
    job = job or Job(f"compress {study_id}", "compress")
    search = _Search(store, study_id, data, emit, stop or threading.Event(), job, backend, ray_address, ray_cpus)
    return search.run(trials, minutes)
