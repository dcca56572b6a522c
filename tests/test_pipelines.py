"""Multi-model methods as pipelines over stored runs (kd_core.pipelines): TAKD, BAN, DML.
Real SQLite stores in tmp_path, the real engine on digits, tiny MLPs for one or two epochs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from helpers import TEACHER_SPEC, make_config
from kd_core.config import ModelSpec, PipelineLink, RunConfig
from kd_core.errors import ConfigError
from kd_core.pipelines import pipeline_runs, takd
from kd_core.store import Store
from kd_core.train.checkpoint import load_checkpoint
from kd_core.train.recorder import train_teacher


def stored_logits(store: Store, run_id: str, x) -> np.ndarray:
    """A stored run's logits on x, from its weights file, as float64."""
    model, _ = load_checkpoint(store.get_run(run_id)["weights"])
    model.eval()
    return model(x).detach().double().numpy()


@pytest.fixture(scope="module")
def takd_store(tmp_path_factory, digits):
    store = Store(tmp_path_factory.mktemp("takd") / "runs")
    teacher = train_teacher(store, make_config("teacher", TEACHER_SPEC, epochs=2), digits)
    base = make_config("student", epochs=1)
    chain = [ModelSpec("mlp", 48, 1), ModelSpec("mlp", 12, 1)]
    result = takd(store, base, digits, teacher.model, teacher.run_id, chain)
    return store, teacher.run_id, result


def test_takd_chain_stores_linked_runs(takd_store, digits):
    store, teacher_id, result = takd_store
    assert result.status == "finished", result.message
    runs = pipeline_runs(store, result.pipeline_id)
    assert [r["id"] for r in runs] == [o.run_id for o in result.outcomes]
    assistant, student = runs
    # each stage's teacher is the previous stage's run, in the row and in the frozen config
    assert assistant["teacher_id"] == teacher_id and student["teacher_id"] == assistant["id"]
    links = [RunConfig.from_dict(r["config"]).pipeline for r in runs]
    assert links == [
        PipelineLink("takd", result.pipeline_id, 1, "assistant 1", (teacher_id,)),
        PipelineLink("takd", result.pipeline_id, 2, "student", (assistant["id"],)),
    ]
    assert [r["config"]["model"]["size"] for r in runs] == [48, 12]
    assert all(r["status"] == "finished" and r["kind"] == "student" for r in runs)


def test_takd_student_was_measured_against_its_assistant(takd_store, digits):
    """The student's stored agreement is with the assistant's stored weights, not the teacher's:
    recomputed here from both weights files (argmax match; the store keeps a float32 mean)."""
    store, _, result = takd_store
    assistant_id, student_id = (o.run_id for o in result.outcomes)
    a = stored_logits(store, assistant_id, digits.test_x).argmax(1)
    s = stored_logits(store, student_id, digits.test_x).argmax(1)
    stored = store.get_run(student_id)["metrics"]["agreement"]
    assert stored == pytest.approx(float(np.mean(a == s)), abs=1e-6)  # a float32 mean; one test image is 1/360


def test_takd_bad_stage_refused_before_anything_is_stored(tmp_path, digits, teacher):
    store = Store(tmp_path / "runs")
    base = make_config("student", epochs=1)
    with pytest.raises(ConfigError, match="assistant"):
        takd(store, base, digits, teacher, "t0", [ModelSpec("mlp", 12, 1)])
    bad_last = [ModelSpec("mlp", 48, 1), ModelSpec("mlp", 0, 1)]  # the student's size is refused up front
    with pytest.raises(ConfigError):
        takd(store, base, digits, teacher, "t0", bad_last)
    with pytest.raises(ConfigError):
        takd(store, replace(base, train=replace(base.train, lr=-1)), digits, teacher, "t0", bad_last[:1] * 2)
    assert store.list_runs() == []
