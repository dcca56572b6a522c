"""Builders of the real run stores that conftest.py's fixtures share: everything is trained
for real by kd_core (tiny MLPs on digits, one or two epochs, seconds), at one torch thread
so numbers are the same whichever backend runs a cell.
"""

from __future__ import annotations

from pathlib import Path

from kd_core.compress.config import CompressConfig, Goal
from kd_core.compress.space import SearchSpace
from kd_core.config import DataConfig, DistillConfig, ModelSpec, RunConfig, TrainConfig
from kd_core.store import Store
from kd_core.sweep.grid import SweepConfig, create_sweep
from kd_core.sweep.runner import run_sweep
from kd_core.train import recorder

# ---------------------------------------------------------------- Compare: two teachers and their students


def compare_config(
    kind: str,
    width: int,
    epochs: int,
    teacher_id: str | None = None,
    temperature: float = 4.0,
    seed: int = 0,
    sweep_id: str | None = None,
) -> RunConfig:
    train = TrainConfig(epochs=epochs, lr=3e-3, device="cpu", threads=1, seed=seed)
    distill = DistillConfig(temperature, 0.9) if kind == "student" else None
    return RunConfig(
        kind=kind,
        data=DataConfig("digits"),
        model=ModelSpec("mlp", width, 1),
        train=train,
        distill=distill,
        teacher_id=teacher_id,
        sweep_id=sweep_id,
    )


def compare_store(root: Path, data) -> dict:
    """The Compare tests' store, in order of creation (so teacher A is the newest teacher,
    the one the sidebar picks first):
      teacher B (mlp 32) and a student of B (mlp 8, no baseline);
      teacher A (mlp 64), a student of A (mlp 8) and its no-KD baseline;
      a failed student of A (no metrics).
    Returns the store and the run ids by role."""
    store = Store(root)
    b = recorder.train_teacher(store, compare_config("teacher", 32, 1), data)
    [b_student] = recorder.distill(store, compare_config("student", 8, 1, b.run_id), data, b.model, False)
    a = recorder.train_teacher(store, compare_config("teacher", 64, 2), data)
    a_student, a_baseline = recorder.distill(store, compare_config("student", 8, 2, a.run_id), data, a.model, True)
    outcomes = (b, b_student, a, a_student, a_baseline)
    assert all(o.status == "finished" for o in outcomes), [o.message for o in outcomes]
    failed = store.create_run(compare_config("student", 8, 1, a.run_id))
    store.finish_run(failed, "failed", {}, error="diverged")
    return {
        "store": store,
        "teacher": a.run_id,
        "student": a_student.run_id,
        "baseline": a_baseline.run_id,
        "other_teacher": b.run_id,
        "other_student": b_student.run_id,
        "failed": failed,
    }


def add_scale_runs(store: Store, data, ids: dict) -> dict:
    """Around teacher A's student and baseline, what a store at scale holds: an older student
    of A (T=2, no baseline), a newer one of a sweep, a stopped one (newest of all: partly
    trained, with metrics) and a seed-1 repeat of A's student and baseline, which is then the
    newest finished student outside a sweep (Compare's default), with 2 seeds for its headline.
    Returns `ids` with "older_student", "sweep_student", "stopped", "student_seed1", "baseline_seed1"."""
    a = ids["teacher"]
    teacher = recorder.load_teacher(store, a, data)
    [older] = recorder.distill(store, compare_config("student", 8, 1, a, temperature=2.0), data, teacher, False)
    seed1, base1 = recorder.distill(store, compare_config("student", 8, 2, a, seed=1), data, teacher, True)
    [swept] = recorder.distill(store, compare_config("student", 8, 1, a, sweep_id="sw-test"), data, teacher, False)
    stopped = store.create_run(compare_config("student", 8, 2, a, temperature=8.0))
    store.finish_run(stopped, "stopped", store.get_run(ids["student"]).metrics)
    assert all(o.status == "finished" for o in (older, seed1, base1, swept))
    return {
        **ids,
        "older_student": older.run_id,
        "student_seed1": seed1.run_id,
        "baseline_seed1": base1.run_id,
        "sweep_student": swept.run_id,
        "stopped": stopped,
    }


# ---------------------------------------------------------------- Runs and Sweep pages: a finished 2 × 2 sweep

GRID = dict(temperatures=(1.0, 4.0), alphas=(0.5, 0.9), sizes=(16,), seeds=(0, 1))
SWEEP_TRAIN = TrainConfig(epochs=1, lr=3e-3, threads=1, device="cpu")
N_RUNS = 1 + 2 * (1 + 4)  # 1 teacher + per seed: 1 baseline and 4 students


def sweep_store(root: Path, data) -> dict:
    """A store holding a small teacher and a finished sweep over GRID (one student size,
    two seeds, one epoch on digits); returns {"root", "teacher_id", "sweep_id"}."""
    store = Store(root)
    cfg = RunConfig(model=ModelSpec("mlp", 64, 1), train=TrainConfig(epochs=2, threads=1, device="cpu"))
    teacher = recorder.train_teacher(store, cfg, data)
    assert teacher.status == "finished", teacher.message
    sweep_id = create_sweep(store, SweepConfig(**GRID, teacher_id=teacher.run_id, train=SWEEP_TRAIN))
    outcomes = run_sweep(store, sweep_id, data)
    assert [o.status for o in outcomes] == ["finished"] * (N_RUNS - 1)
    return {"root": root, "teacher_id": teacher.run_id, "sweep_id": sweep_id}


# ---------------------------------------------------------------- sweep tests: a 2 × 2 grid that runs in seconds

TINY_TRAIN = TrainConfig(epochs=1, lr=3e-3, threads=1)


def tiny_sweep(teacher: str, seeds=(0,), sizes=(16,)) -> SweepConfig:
    """T ∈ {1, 4} × λ ∈ {0.5, 0.9}: with one size and seed, 4 students and 1 baseline."""
    return SweepConfig(
        temperatures=(1.0, 4.0),
        alphas=(0.5, 0.9),
        sizes=tuple(sizes),
        seeds=tuple(seeds),
        teacher_id=teacher,
        train=TINY_TRAIN,
    )


SWEEP_TEACHER = RunConfig(model=ModelSpec("mlp", 64, 1), train=TrainConfig(epochs=2, threads=1))


def checkpoint_teacher(root: Path, data, cfg: RunConfig = SWEEP_TEACHER) -> str:
    """A teacher's checkpoint path, so that sweeps (or studies) in any store can use the same teacher."""
    store = Store(root)
    outcome = recorder.train_teacher(store, cfg, data)
    assert outcome.status == "finished", outcome.message
    return str(store.weights_path(outcome.run_id))


# ---------------------------------------------------------------- compress studies: a size budget

# Latency is timed under eager PyTorch in most compress tests (no export: seconds, not minutes);
# sizes are deterministic (the bytes of a state dict), so a size budget splits candidates the
# same way on any machine, where a latency budget would depend on the load of a shared box.
# State dict bytes of an MLP w on digits (64 inputs, 10 classes) ≈ 4·(75w + 10) + pickling: a
# 0.02 MB budget keeps widths up to ~60 and prunes the wider ones before they train.
SIZE_BUDGET_MB = 0.02
STUDY_TEACHER = RunConfig(model=ModelSpec("mlp", 128, 1), train=TrainConfig(epochs=4, lr=3e-3, threads=1, device="cpu"))


def tiny_config(teacher: str, **kw) -> CompressConfig:
    base = dict(
        teacher_id=teacher,
        data=DataConfig("digits"),
        train=TrainConfig(epochs=2, lr=1e-2, threads=1, device="cpu"),
        runtime="eager",
        goal=Goal(max_drop=15.0, max_size_mb=SIZE_BUDGET_MB),
        space=SearchSpace(mlp_widths=(16, 256), mlp_depths=(1, 1)),
        sampler="random",
        trials=5,
        seed=4,
    )
    return CompressConfig(**{**base, **kw})
