"""Multi-model methods as pipelines over stored runs (kd_core.pipelines): TAKD, BAN, DML.
Real SQLite stores in tmp_path, the real engine on digits, tiny MLPs for one or two epochs."""

from __future__ import annotations

import shutil
import threading
from dataclasses import replace

import numpy as np
import pytest
import torch

from helpers import TEACHER_SPEC, StepRecorder, make_config
from kd_core.config import ModelSpec, PipelineLink
from kd_core.deploy.modelcard import reproduce_command
from kd_core.errors import ConfigError
from kd_core.methods import parse_methods
from kd_core.pipelines import Ensemble, ban, dml, dml_losses, pipeline_runs, takd
from kd_core.store import Store
from kd_core.store.repair import repair
from kd_core.train.checkpoint import load_checkpoint
from kd_core.train.models import build_model
from kd_core.train.recorder import train_teacher


def stored_logits(store: Store, run_id: str, x) -> np.ndarray:
    """A stored run's logits on x, from its weights file, as float64."""
    model, _ = load_checkpoint(store.get_run(run_id).weights)
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
    assert [r.id for r in runs] == [o.run_id for o in result.outcomes]
    assistant, student = runs
    # each stage's teacher is the previous stage's run, in the row and in the frozen config
    assert assistant.teacher_id == teacher_id and student.teacher_id == assistant.id
    links = [r.config.pipeline for r in runs]
    assert links == [
        PipelineLink("takd", result.pipeline_id, 1, "assistant 1", (teacher_id,)),
        PipelineLink("takd", result.pipeline_id, 2, "student", (assistant.id,)),
    ]
    assert [r.config.model.size for r in runs] == [48, 12]
    assert all(r.status == "finished" and r.kind == "student" for r in runs)


def test_takd_student_was_measured_against_its_assistant(takd_store, digits):
    """The student's stored agreement is with the assistant's stored weights, not the teacher's:
    recomputed here from both weights files (argmax match; the store keeps a float32 mean)."""
    store, _, result = takd_store
    assistant_id, student_id = (o.run_id for o in result.outcomes)
    a = stored_logits(store, assistant_id, digits.test_x).argmax(1)
    s = stored_logits(store, student_id, digits.test_x).argmax(1)
    stored = store.get_run(student_id).metrics["agreement"]
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


# ---------------------------------------------------------------- BAN


@pytest.fixture(scope="module")
def ban_store(tmp_path_factory, digits):
    store = Store(tmp_path_factory.mktemp("ban") / "runs")
    base = make_config("student", ModelSpec("mlp", 24, 1), epochs=1)
    return store, ban(store, base, digits, generations=2, ensemble=True)


def test_ban_generations_are_stored_and_linked(ban_store):
    store, result = ban_store
    assert result.status == "finished", result.message
    runs = pipeline_runs(store, result.pipeline_id)
    g0, g1, _ = (r.id for r in runs)
    assert [r.kind for r in runs] == ["teacher", "student", "student"]
    assert [r.config.model for r in runs] == [runs[0].config.model] * 3  # one architecture
    assert [r.config.train.seed for r in runs] == [0, 1, 2]
    links = [r.config.pipeline for r in runs]
    assert [link.parents for link in links] == [(), (g0,), (g0, g1)]  # the ensemble: every earlier generation
    assert [r.teacher_id for r in runs] == [None, g0, g1]


def test_ban_ensemble_is_the_mean_of_the_generations_logits(ban_store, digits):
    """Ensemble(gen 0, gen 1) against a float64 mean of the two stored models' logits; and the
    stored agreement of gen 2 is with that mean's argmax, so the ensemble was its teacher."""
    store, result = ban_store
    g0, g1, g2 = (o.run_id for o in result.outcomes)
    x = digits.test_x
    mean = (stored_logits(store, g0, x) + stored_logits(store, g1, x)) / 2.0
    members = [load_checkpoint(store.get_run(r).weights)[0].eval() for r in (g0, g1)]
    got = Ensemble(members)(x).detach().double().numpy()
    np.testing.assert_allclose(got, mean, rtol=1e-5, atol=1e-5)
    s = stored_logits(store, g2, x).argmax(1)
    agreement = store.get_run(g2).metrics["agreement"]
    assert agreement == pytest.approx(float(np.mean(mean.argmax(1) == s)), abs=1e-6)


def test_ban_from_a_given_teacher_without_ensemble(tmp_path, digits, teacher):
    store = Store(tmp_path / "runs")
    base = make_config("student", TEACHER_SPEC, epochs=1)
    result = ban(store, base, digits, generations=1, teacher=teacher, teacher_id="t-given")
    assert result.status == "finished", result.message
    [run] = pipeline_runs(store, result.pipeline_id)
    assert run.config.pipeline.parents == ("t-given",)
    with pytest.raises(ConfigError, match="generations"):
        ban(store, base, digits, generations=0)
    at = replace(base, distill=replace(base.distill, methods=parse_methods("at")))
    with pytest.raises(ConfigError, match="logits only"):
        ban(store, at, digits, generations=1, ensemble=True)
    assert len(store.list_runs()) == 1


# ---------------------------------------------------------------- DML


def log_softmax64(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def dml_reference(logits: list[np.ndarray], y: np.ndarray, t: float, alpha: float) -> list[tuple[float, float, float]]:
    """(loss, ce, dml) per peer in float64, written from the paper's formula:
    L_k = (1 − λ)·CE_k + λ·mean_{l≠k} T²·Σ_c p_l,c·(log p_l,c − log p_k,c), batch-averaged."""
    out = []
    for k, zk in enumerate(logits):
        ce = -np.mean(log_softmax64(zk)[np.arange(len(y)), y])
        lpk = log_softmax64(zk / t)
        kls = []
        for j, zj in enumerate(logits):
            if j != k:
                lpj = log_softmax64(zj / t)
                kls.append(t * t * np.mean(np.sum(np.exp(lpj) * (lpj - lpk), axis=1)))
        mutual = float(np.mean(kls))
        out.append(((1 - alpha) * ce + alpha * mutual, ce, mutual))
    return out


@pytest.mark.parametrize("peers", [2, 3])
@pytest.mark.parametrize(
    "t, alpha, case", [(1.0, 0.5, "random"), (4.0, 0.9, "random"), (2.0, 0.5, "identical"), (1.0, 0.7, "dominant")]
)
def test_dml_loss_matches_float64(peers, t, alpha, case):
    gen = torch.Generator().manual_seed(peers * 10 + int(t))
    z = [torch.randn(32, 10, generator=gen) * 3 for _ in range(peers)]
    if case == "identical":
        z = [z[0].clone() for _ in range(peers)]
    if case == "dominant":
        z[0][:, 3] += 40.0  # one class dominates peer 0 almost surely
    y = torch.randint(0, 10, (32,), generator=gen)
    got = [{k: v.item() for k, v in d.items()} for d in dml_losses(z, y, t, alpha)]
    want = dml_reference([v.double().numpy() for v in z], y.numpy(), t, alpha)
    for g, (loss, ce, mutual) in zip(got, want):
        assert g["loss"] == pytest.approx(loss, rel=1e-5, abs=1e-6)
        assert g["ce"] == pytest.approx(ce, rel=1e-5, abs=1e-6)
        assert g["dml"] == pytest.approx(mutual, rel=1e-5, abs=1e-6)
    if case == "identical":
        assert all(g["dml"] == pytest.approx(0.0, abs=1e-6) for g in got)


def test_dml_loss_sends_no_gradient_to_the_other_peers():
    z = [torch.randn(8, 5, requires_grad=True) for _ in range(3)]
    dml_losses(z, torch.zeros(8, dtype=torch.long), 2.0, 0.5)[0]["loss"].backward()
    assert z[0].grad is not None and z[0].grad.abs().sum() > 0
    assert z[1].grad is None and z[2].grad is None


DML_PEERS = [ModelSpec("mlp", 16, 1), ModelSpec("mlp", 24, 1), ModelSpec("mlp", 16, 1)]


@pytest.fixture(scope="module")
def dml_run(tmp_path_factory, digits):
    store = Store(tmp_path_factory.mktemp("dml") / "runs")
    base = make_config("student", epochs=1, temperature=2.0, alpha=0.5, seed=3)
    sink = StepRecorder()
    return store, base, sink, dml(store, base, digits, DML_PEERS, emit=sink)


def initial_peers(base, digits) -> list:
    """The peers as the trainer builds them: peer k from seed + k."""
    models = []
    for k, spec in enumerate(DML_PEERS):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(base.train.seed + k)
            models.append(build_model(spec, digits.input_shape, digits.num_classes))
    return models


def test_dml_peers_are_stored_linked_and_all_updated(dml_run, digits):
    store, base, _, result = dml_run
    assert result.status == "finished", result.message
    runs = pipeline_runs(store, result.pipeline_id)
    assert [r.config.pipeline.role for r in runs] == ["peer 0", "peer 1", "peer 2"]
    assert [r.config.train.seed for r in runs] == [3, 4, 5]
    assert all(r.status == "finished" and r.teacher_id is None for r in runs)
    assert all(len(store.epochs(r.id)) == 1 for r in runs)
    for run, init in zip(runs, initial_peers(base, digits)):
        trained, _ = load_checkpoint(run.weights)
        moved = [(a - b).abs().max().item() for a, b in zip(trained.state_dict().values(), init.state_dict().values())]
        assert min(moved) > 0, f"{run.id}: a parameter tensor did not change"


def test_dml_first_step_loss_matches_float64(dml_run, digits):
    """The trainer's first-step loss of each peer, against dml_reference on the same batch
    (the trainer's permutation from its seed) through the peers' initial weights."""
    _, base, sink, result = dml_run
    idx = torch.randperm(len(digits.train_y), generator=torch.Generator().manual_seed(base.train.seed))[:64]
    xb, yb = digits.train_x[idx], digits.train_y[idx]
    with torch.no_grad():
        logits = [m(xb).double().numpy() for m in initial_peers(base, digits)]
    want = dml_reference(logits, yb.numpy(), 2.0, 0.5)
    first = {r.run_id: r for r in reversed(sink.of("step"))}  # each peer's first step record
    for outcome, (loss, ce, mutual) in zip(result.outcomes, want):
        rec = first[outcome.run_id]
        assert rec.step == 1
        assert rec.loss == pytest.approx(loss, rel=1e-5)
        assert rec.terms["ce"] == pytest.approx(ce, rel=1e-5)
        assert rec.terms["dml"] == pytest.approx(mutual, rel=1e-5)


def test_dml_bad_input_refused_before_anything_is_stored(tmp_path, digits):
    store = Store(tmp_path / "runs")
    base = make_config("student", epochs=1)
    with pytest.raises(ConfigError, match="2 to"):
        dml(store, base, digits, DML_PEERS[:1])
    with pytest.raises(ConfigError, match="fp32"):
        dml(store, replace(base, train=replace(base.train, precision="bf16")), digits, DML_PEERS)
    with pytest.raises(ConfigError):
        dml(store, base, digits, [DML_PEERS[0], ModelSpec("mlp", 0, 1)])
    assert store.list_runs() == []


# ---------------------------------------------------------------- stops, failures, repair


def test_a_stop_ends_the_chain_at_the_stage_it_reached(tmp_path, digits, teacher):
    """A stop requested before training: the first stage is stored as stopped and no later
    stage is created; DML stores every peer as stopped."""
    store, stop = Store(tmp_path / "runs"), threading.Event()
    stop.set()
    base = make_config("student", epochs=1)
    chain = takd(store, base, digits, teacher, "t0", [ModelSpec("mlp", 48, 1), ModelSpec("mlp", 12, 1)], stop=stop)
    peers = dml(store, base, digits, DML_PEERS[:2], stop=stop)
    assert (chain.status, len(chain.outcomes)) == ("stopped", 1)
    assert peers.status == "stopped" and len(peers.outcomes) == 2
    assert sorted(r.status for r in store.list_runs()) == ["stopped"] * 3


def test_diverging_peers_are_stored_failed_with_the_reason(tmp_path, digits):
    store = Store(tmp_path / "runs")
    base = make_config("student", epochs=1, lr=1e30)  # Adam's first step alone sends the weights to ±1e30
    result = dml(store, base, digits, DML_PEERS[:2])
    assert result.status == "failed" and "loss became" in result.message
    assert [r.status for r in store.list_runs()] == ["failed", "failed"]
    assert all("loss became" in r.error for r in store.list_runs())


def test_the_pipeline_link_survives_store_repair(takd_store, tmp_path):
    """The link lives in each run's config, so `store repair` rebuilds it from the JSON records."""
    store, _, result = takd_store
    copy = tmp_path / "copy"
    shutil.copytree(store.root, copy)
    (copy / "runs.db").unlink()
    for extra in copy.glob("runs.db-*"):
        extra.unlink()
    repair(copy)
    again = pipeline_runs(Store(copy), result.pipeline_id)
    assert [r.id for r in again] == [o.run_id for o in result.outcomes]
    assert [r.config.pipeline for r in again] == [r.config.pipeline for r in pipeline_runs(store, result.pipeline_id)]


def test_reproduce_command_only_where_one_run_can_remake_the_stage(ban_store, dml_run):
    """A BAN generation taught by one stored run is `distill --teacher` that run; one taught by
    the ensemble, and a DML peer, have no single-run command (none rather than a wrong one)."""
    store, result = ban_store
    g0, g1, g2 = (store.get_run(o.run_id) for o in result.outcomes)
    assert reproduce_command(g0.config.to_dict()).split()[3] == "teacher"
    assert f"--teacher {g0.id}" in reproduce_command(g1.config.to_dict())  # its only parent was gen 0
    assert reproduce_command(g2.config.to_dict()) is None
    peer = dml_run[0].get_run(dml_run[3].outcomes[0].run_id)
    assert reproduce_command(peer.config.to_dict()) is None
