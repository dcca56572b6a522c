"""The leaderboard: methods × seeds beside the no-KD baseline, for one teacher and one student.

The table's statistics are checked on a real store filled by hand against means, sample stds,
paired t-tests and a Benjamini–Hochberg step-up written here in float64; a real leaderboard on
digits (one epoch) checks the CLI end to end against the runs it stored."""

import json
import math

import pytest
from scipy import stats as sps

from helpers import hand_bh
from kd_core.cli import main
from kd_core.config import TrainConfig
from kd_core.errors import ConfigError
from kd_core.store import Store
from kd_core.sweep.grid import SweepConfig, cell_key, create_sweep, plan
from kd_core.views.leaderboard import BASELINE, leaderboard, leaderboards, make_leaderboard

SEEDS = 4


def board_cfg(methods=("kd", "dkd", "dist")) -> SweepConfig:
    return make_leaderboard("t", methods, SEEDS, "mlp", 16)


def fill(store: Store, cfg: SweepConfig, values: dict) -> str:
    """Store every planned run of `cfg` as finished with test_acc = values[method][seed]."""
    sweep_id = create_sweep(store, cfg)
    for cell in plan(cfg, sweep_id):
        name = cell.key[6] or BASELINE
        run_id = store.create_run(cell.config)
        store.finish_run(run_id, "finished", {"test_acc": values[name][cell.config.train.seed]})
    return sweep_id


def hand_mean_std(xs):
    m = math.fsum(xs) / len(xs)
    return m, math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def hand_paired_p(x, y):
    d = [a - b for a, b in zip(x, y)]
    m, s = hand_mean_std(d)
    t = m / (s / math.sqrt(len(d)))
    return m, 2 * sps.t.sf(abs(t), len(d) - 1)


BASE = [0.80, 0.81, 0.79, 0.80]
KD = [b + d for b, d in zip(BASE, [0.020, 0.025, 0.015, 0.021])]
CLEAR = {
    BASELINE: BASE,
    "kd": KD,
    "dkd": [k + d for k, d in zip(KD, [0.030, 0.035, 0.028, 0.033])],  # above KD on every seed
    "dist": [k + d for k, d in zip(KD, [0.010, -0.012, 0.004, -0.003])],  # KD give or take noise
}


def test_table_matches_float64_means_paired_tests_and_bh(tmp_path):
    store = Store(tmp_path)
    values = {k: dict(enumerate(v)) for k, v in CLEAR.items()}
    board = leaderboard(store, fill(store, board_cfg(), values))
    rows = {r["method"]: r for r in board.table.to_dict("records")}
    assert list(rows) == [BASELINE, "kd", "dkd", "dist"]
    family = []  # (method, side, p) in the order the table adjusts them
    for name, xs in CLEAR.items():
        mean, std = hand_mean_std(xs)
        assert rows[name]["n"] == SEEDS
        assert rows[name]["mean"] == pytest.approx(mean, abs=1e-12)
        assert rows[name]["std"] == pytest.approx(std, rel=1e-9)
        for side, other in (("base", BASELINE), ("kd", "kd")):
            if name in (BASELINE, other):
                assert math.isnan(rows[name][f"{side}_p"])
                continue
            gain, p = hand_paired_p(xs, CLEAR[other])
            assert rows[name][f"{side}_gain"] == pytest.approx(gain, abs=1e-12)
            assert rows[name][f"{side}_p"] == pytest.approx(p, rel=1e-9)
            family.append((name, side, p))
    adjusted = hand_bh([p for _, _, p in family])
    for (name, side, _), q in zip(family, adjusted):
        assert rows[name][f"{side}_p_bh"] == pytest.approx(q, rel=1e-9)
    assert board.tested == len(family) == 3 + 2
    assert board.significant_bh == sum(q < 0.05 for q in adjusted)
    assert board.best == "dkd" and [r for r in rows if rows[r]["best"]] == ["dkd"]
    assert board.verdict.startswith("Best: dkd") and "Benjamini–Hochberg" in board.verdict


def test_nothing_is_crowned_when_no_method_beats_kd_beyond_noise(tmp_path):
    store = Store(tmp_path)
    noisy = {**CLEAR, "dkd": [k + d for k, d in zip(KD, [0.03, -0.02, 0.01, -0.015])]}
    board = leaderboard(store, fill(store, board_cfg(), {k: dict(enumerate(v)) for k, v in noisy.items()}))
    assert board.best is None and not board.table["best"].any()
    assert board.verdict.startswith("Within noise: no method beats plain KD")  # KD beats the baseline
    flat = {k: dict(enumerate(BASE)) for k in CLEAR}  # every method equals the baseline
    store2 = Store(tmp_path / "flat")
    board = leaderboard(store2, fill(store2, board_cfg(), flat))
    assert board.best is None and board.verdict.startswith("Within noise: no method beats both")
    assert "worse than the baseline" not in board.verdict  # equal is not worse
    worse = {**CLEAR, "dkd": [b - d for b, d in zip(BASE, [0.05, 0.06, 0.055, 0.052])]}
    store3 = Store(tmp_path / "worse")
    board = leaderboard(store3, fill(store3, board_cfg(), {k: dict(enumerate(v)) for k, v in worse.items()}))
    assert board.best is None and "1 of 3 methods (dkd) is significantly worse than the baseline" in board.verdict


def test_plain_kd_is_always_compared_and_bad_settings_are_refused(tmp_path):
    assert board_cfg(("dkd", "dist")).methods == ("kd", "dkd", "dist")
    assert board_cfg(("KD", "dkd")).methods == ("KD", "dkd")  # KD given in any spelling is not added twice
    with pytest.raises(ConfigError, match="at least 2 seeds"):
        make_leaderboard("t", ("kd",), 1, "mlp", 16)
    with pytest.raises(ConfigError, match="nope"):
        make_leaderboard("t", ("kd", "nope"), 3, "mlp", 16)
    store = Store(tmp_path)
    create_sweep(store, SweepConfig(temperatures=(4.0,), alphas=(0.5,), sizes=(16,), teacher_id="t"))
    lb = create_sweep(store, board_cfg())
    assert [r["id"] for r in leaderboards(store)] == [lb]  # a plain sweep is not a leaderboard


def test_cli_leaderboard_end_to_end_on_digits(tmp_path, teacher_path, capsys):
    args = ["leaderboard", "--teacher", teacher_path, "--methods", "dkd", "--seeds", "2", "--size", "16"]
    args += ["--epochs", "1", "--threads", "1", "--store", str(tmp_path), "--quiet"]
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    runs = Store(tmp_path).list_runs(sweep_id=out["sweep_id"])
    assert len(runs) == len(out["runs"]) == 2 * 3
    acc: dict = {}
    for r in runs:
        _, size, seed, t, a, _, method = cell_key(r.config)
        assert (size, seed in (0, 1)) == (16, True) and (t, a) in ((4.0, 0.5), (None, None))
        acc.setdefault(method or BASELINE, {})[seed] = r.metrics["test_acc"]
    rows = {r["method"]: r for r in out["rows"]}
    for name in (BASELINE, "kd", "dkd"):
        mean, std = hand_mean_std([acc[name][0], acc[name][1]])
        assert rows[name]["mean"] == pytest.approx(mean, abs=1e-12)
        assert rows[name]["std"] == pytest.approx(std, rel=1e-9, abs=1e-12)
    gain = (acc["dkd"][0] - acc["kd"][0] + acc["dkd"][1] - acc["kd"][1]) / 2
    assert rows["dkd"]["kd_gain"] == pytest.approx(gain, abs=1e-12)
    assert out["verdict"] and (out["best"] is None or out["best"] == "dkd")
    assert main(["leaderboard", "--list", "--store", str(tmp_path)]) == 0
    assert out["sweep_id"] in capsys.readouterr().out
    assert main(["leaderboard", "--show", out["sweep_id"], "--store", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "no KD (baseline)" in text and "dkd" in text and ("Best:" in text or "Within noise" in text)


def test_cli_resume_runs_only_the_missing_runs_and_refuses_a_plain_sweep(tmp_path, teacher_path, digits, capsys):
    store = Store(tmp_path)
    cfg = make_leaderboard(teacher_path, ("dkd",), 2, "mlp", 16, train=TrainConfig(epochs=1, threads=1))
    sweep_id = create_sweep(store, cfg)
    first = plan(cfg, sweep_id)[0].config  # one run already there: resuming must not train it again
    run_id = store.create_run(first)
    store.finish_run(run_id, "finished", {"test_acc": 0.5})
    assert main(["leaderboard", "--resume", sweep_id, "--store", str(tmp_path), "--quiet", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["runs"]) == 5 and out["sweep_id"] == sweep_id
    assert run_id in {r.id for r in store.list_runs(sweep_id=sweep_id)}
    assert {r["method"]: r["n"] for r in out["rows"]} == {BASELINE: 2, "kd": 2, "dkd": 2}
    plain_id = create_sweep(store, SweepConfig(temperatures=(4.0,), alphas=(0.5,), sizes=(16,), teacher_id="t"))
    assert main(["leaderboard", "--resume", plain_id, "--store", str(tmp_path), "--quiet"]) == 2
    assert "is a sweep, not a leaderboard" in capsys.readouterr().err
