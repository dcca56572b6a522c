"""The sweep's method axis: mixes are planned as cells of their own, refused up front when bad,
and a real two-method sweep on digits reports each method's mean ± std and paired gain, checked
against numbers computed here in float64 and by scipy directly."""

import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from kd_core.cli import main
from kd_core.config import MethodSpec
from kd_core.errors import ConfigError, KDError
from kd_core.store import Store
from kd_core.sweep.grid import SweepConfig, cell_key, create_sweep, load_sweep, plan

METHODS = ("kd", "DKD", "0.5*kd+1*at")


def grid(**kw) -> SweepConfig:
    base = dict(temperatures=(4.0,), alphas=(0.5, 0.9), sizes=(16,), seeds=(0, 1), teacher_id="t", methods=METHODS)
    return SweepConfig(**{**base, **kw})


def test_each_method_is_a_cell_per_t_lambda_size_and_seed_with_its_parsed_mix():
    cells = plan(grid())
    students = [c for c in cells if c.config.kind == "student"]
    assert len(cells) == 2 * (1 + 3 * 2) and len(students) == 2 * 3 * 2
    assert len({c.key for c in cells}) == len(cells)
    assert {c.key[6] for c in students} == {"kd", "dkd", "0.5*kd+1*at"}  # canonical: "DKD" is dkd
    mixes = {c.key[6]: c.config.distill.methods for c in students}
    assert mixes["0.5*kd+1*at"] == (MethodSpec("kd", 0.5), MethodSpec("at", 1.0))
    assert mixes["dkd"] == (MethodSpec("dkd", 1.0),)
    assert all("seed" in c.label and (c.key[6] or "baseline") in c.label for c in cells)


@pytest.mark.parametrize(
    "methods, phrase",
    [
        ((), "at least one value in methods"),
        (("kd", "nope"), "nope"),
        (("kd", "1*KD"), "same mix twice"),
        (("0*kd",), "weight 0"),
        (("kd+",), "not a method mix"),
        (("-1*kd",), "finite number >= 0"),
    ],
)
def test_a_bad_method_is_refused_before_the_sweep_is_stored(tmp_path, methods, phrase):
    store = Store(tmp_path)
    with pytest.raises(ConfigError, match=phrase):
        create_sweep(store, grid(methods=methods))
    assert store.list_sweeps() == []


def test_methods_and_kind_are_saved_and_old_sweeps_load_as_kd(tmp_path):
    store = Store(tmp_path)
    sweep = grid(kind="leaderboard")
    assert load_sweep(store, create_sweep(store, sweep)) == sweep
    old = grid().to_dict()
    del old["methods"], old["kind"]
    restored = SweepConfig.from_dict(old)
    assert (restored.methods, restored.kind, restored.method_texts) == (("kd",), "sweep", ("kd",))
    with pytest.raises(ConfigError, match="unknown sweep kind"):
        create_sweep(store, grid(kind="tournament"))


def test_a_method_the_models_cannot_serve_is_refused_before_the_sweep_is_stored(tmp_path, digits, teacher_path):
    store = Store(tmp_path)
    with pytest.raises(ConfigError, match="spatial"):  # AT on an MLP teacher and student
        create_sweep(store, grid(methods=("kd", "at"), teacher_id=teacher_path), digits)
    assert store.list_sweeps() == []
    assert create_sweep(store, grid(methods=("kd", "dkd"), teacher_id=teacher_path), digits)
    with pytest.raises(KDError, match="nope"):  # a teacher that is not there, when it has to be loaded
        create_sweep(store, grid(methods=("dist",), teacher_id=str(tmp_path / "nope.pt")), digits)
    assert len(store.list_sweeps()) == 1


def hand_t_p(d):
    """Paired t statistic and two-sided p from per-seed differences, in float64 (scipy only for the t cdf)."""
    d = np.asarray(d, dtype=np.float64)
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    t = mean / (sd / math.sqrt(n))
    return t, 2 * sps.t.sf(abs(t), n - 1)


def test_cli_sweep_over_two_methods_reports_each_against_its_baseline(tmp_path, teacher_path, capsys):
    args = ["sweep", "--teacher", teacher_path, "--methods", "kd,dkd", "--temperatures", "4", "--alphas", "0.9"]
    args += ["--sizes", "16", "--seeds", "3", "--epochs", "1", "--threads", "1", "--metric", "test_acc"]
    assert main([*args, "--store", str(tmp_path), "--quiet", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["grids"]) == {"16 kd", "16 dkd"}
    runs = Store(tmp_path).list_runs(sweep_id=out["sweep_id"])
    assert len(runs) == 3 * 3
    acc = {}
    for r in runs:
        kind, _, seed, _, _, _, method = cell_key(r.config)
        acc[(kind, method, seed)] = r.metrics["test_acc"]
    for method in ("kd", "dkd"):
        g = out["grids"][f"16 {method}"]
        x = [acc[("student", method, s)] for s in (0, 1, 2)]
        b = [acc[("baseline", None, s)] for s in (0, 1, 2)]
        mean = sum(x) / 3
        assert g["mean"][0][0] == pytest.approx(mean, abs=1e-12)
        assert g["std"][0][0] == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in x) / 2), abs=1e-12)
        d = [xi - bi for xi, bi in zip(x, b)]
        assert g["gain_mean"][0][0] == pytest.approx(sum(d) / 3, abs=1e-12)
        if g["significant"][0][0] is not None:  # a test was possible (the gain varies over seeds)
            _, p = hand_t_p(d)
            assert g["p"][0][0] == pytest.approx(p, rel=1e-9)
    assert out["tests"]["tested"] <= 2


@pytest.mark.slow
def test_a_method_sweep_on_ray_gives_the_in_process_numbers(tmp_path, digits, teacher_path):
    pytest.importorskip("ray")
    from kd_core.sweep.executors import make_executor
    from kd_core.sweep.runner import run_sweep

    cfg = grid(methods=("kd", "dkd"), alphas=(0.9,), seeds=(0,), teacher_id=teacher_path)
    cfg = SweepConfig.from_dict({**cfg.to_dict(), "train": {"epochs": 1, "threads": 1, "lr": 3e-3}})
    results = []
    for name, executor in (("local", None), ("ray", make_executor("ray", None, 1))):
        store = Store(tmp_path / name)
        sweep_id = create_sweep(store, cfg, digits)
        outcomes = run_sweep(store, sweep_id, digits, executor=executor)
        assert [o.status for o in outcomes] == ["finished"] * 3
        results.append({cell_key(r.config): r.metrics["test_acc"] for r in store.list_runs(sweep_id=sweep_id)})
    assert {k[6] for k in results[0]} == {None, "kd", "dkd"}
    assert results[0] == results[1]
