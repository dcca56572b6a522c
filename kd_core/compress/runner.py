"""A compress study as a dashboard job: one start of the study in the single worker thread."""

from __future__ import annotations

from collections.abc import Callable

from kd_core.compress.config import CompressConfig
from kd_core.compress.search import run_study
from kd_core.compress.study import create_study
from kd_core.jobs import Job, JobManager
from kd_core.store import Store
from kd_core.train.data import Dataset

JOB_KIND = "compress"


def compress_job(
    store: Store,
    study_id: str,
    data: Dataset,
    backend: str = "inprocess",
    ray_address: str | None = None,
    trials: int | None = None,
    minutes: float | None = None,
) -> Callable:
    """The study as a `JobManager` job fn(emit, stop, job). The job's outcomes are the trials
    trained to the end: a pruned or failed trial is a result of the search, not a failure of the
    job, and the verdict (including "no student met the goal") is published as a job note."""

    def work(emit, stop, job):
        report = run_study(store, study_id, data, emit, stop, job, backend, ray_address, trials=trials, minutes=minutes)
        return [o for o in report.outcomes if o.status == "finished"]

    return work


def start_compress(
    manager: JobManager,
    store: Store,
    data: Dataset,
    study: CompressConfig | str,
    backend: str = "inprocess",
    ray_address: str | None = None,
    trials: int | None = None,
    minutes: float | None = None,
) -> Job:
    """Start a new study (a CompressConfig, validated and stored first) or resume one (its id)."""
    study_id = study if isinstance(study, str) else create_study(store, study)
    fn = compress_job(store, study_id, data, backend, ray_address, trials, minutes)
    return manager.start(f"compress {study_id}", JOB_KIND, fn)
