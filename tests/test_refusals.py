"""Careless arguments: each one is refused up front with one `error:` line on stderr and exit 2,
and nothing is stored (no run row, no sweep, no stray file); values are never silently replaced."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import STUDENT_SPEC, StepRecorder, cli_env, make_config
from kd_core.cli import main
from kd_core.store import Store
from kd_core.train.engine import fit

QUICK = ["--epochs", "1", "--quiet"]
# case -> (arguments without --store, a phrase of the one error line)
CASES = {
    "epochs 0": (["teacher", "--epochs", "0", "--quiet"], "epochs must be at least 1, got 0"),
    "epochs not a number": (["teacher", "--epochs", "abc", "--quiet"], "invalid int value: 'abc'"),
    "batch size 0": (["teacher", "--batch-size", "0", *QUICK], "batch size must be at least 1"),
    "lr 0": (["teacher", "--lr", "0", *QUICK], "learning rate must be a positive number"),
    "lr nan": (["teacher", "--lr", "nan", *QUICK], "learning rate must be a positive number, got nan"),
    "lr inf": (["teacher", "--lr", "inf", *QUICK], "learning rate must be a positive number, got inf"),
    "size 0 (was: the preset)": (["teacher", "--size", "0", *QUICK], "model size 0 is out of range"),
    "depth -1": (["teacher", "--depth", "-1", *QUICK], "MLP depth -1 is out of range"),
    "patience -1 (was: off)": (["teacher", "--patience", "-1", *QUICK], "patience must be 0 (off)"),
    "momentum -0.5": (["teacher", "--optimizer", "sgd", "--momentum", "-0.5", *QUICK], "momentum must be in [0, 1)"),
    "momentum 1": (["teacher", "--optimizer", "sgd", "--momentum", "1", *QUICK], "momentum must be in [0, 1)"),
    "weight decay -1": (["teacher", "--weight-decay", "-1", *QUICK], "weight decay must be >= 0"),
    "weight decay nan": (["teacher", "--weight-decay", "nan", *QUICK], "weight decay must be >= 0"),
    "seed -1": (["teacher", "--seed", "-1", *QUICK], "seed must be in [0, 4294967295]"),
    "split seed 2**32": (["teacher", "--split-seed", str(2**32), *QUICK], "split seed must be in"),
    "val fraction 1": (["teacher", "--val-fraction", "1", *QUICK], "validation fraction must be between 0 and 1"),
    "image size 0": (["teacher", "--image-size", "0", *QUICK], "image size must be 4 to 512"),
    "threads -2": (["teacher", "--threads", "-2", *QUICK], "threads must be 0 (auto)"),
    "threads 10**6": (["teacher", "--threads", "1000000", *QUICK], "threads must be 0 (auto)"),
    "precision fp16": (["teacher", "--precision", "fp16", *QUICK], "unknown precision 'fp16'; use fp32, bf16, auto"),
    "distill precision 16": (
        ["distill", "--teacher", "{teacher}", "--precision", "16", *QUICK],
        "unknown precision '16'",
    ),
    "device tpu": (["teacher", "--device", "tpu", *QUICK], "unknown device 'tpu'"),
    "device cuda:x": (["teacher", "--device", "cuda:x", *QUICK], "unknown device 'cuda:x'"),
    "family rnn": (["teacher", "--family", "rnn", *QUICK], "invalid choice: 'rnn'"),
    "missing value": (["teacher", "--epochs"], "expected one argument"),
    "out is a folder": (["teacher", "--out", "{tmp}", *QUICK], "is a folder; give a file path"),
    "out under a file": (["teacher", "--out", "{tmp}/a-file/teacher.pt", *QUICK], "cannot be written"),
    "temperature 0": (
        ["distill", "--teacher", "{teacher}", "-T", "0", *QUICK],
        "temperature must be a positive number",
    ),
    "temperature inf": (["distill", "--teacher", "{teacher}", "-T", "inf", *QUICK], "temperature must be a positive"),
    "lambda 1.5": (["distill", "--teacher", "{teacher}", "--alpha", "1.5", *QUICK], "λ (alpha) must be in [0, 1]"),
    "lambda nan": (["distill", "--teacher", "{teacher}", "--alpha", "nan", *QUICK], "λ (alpha) must be in [0, 1]"),
    "bench size 0 (was: 64)": (["bench", "--size", "0"], "model size 0 is out of range"),
    "bench batch sizes abc": (["bench", "--batch-sizes", "abc"], "expected comma-separated whole numbers"),
    "bench batch size 0 (was: ZeroDivisionError)": (["bench", "--batch-sizes", "1,0"], "at least 1"),
    "bench batch too big for memory": (["bench", "--batch-sizes", "100000000"], "GiB; the limit is 2 GiB"),
    "bench zero input shape": (["bench", "--input-shape", "0", "28", "28"], "three positive numbers C H W"),
    "bench classes 0": (["bench", "--classes", "0"], "classes must be 1 to"),
    "bench repeats 0": (["bench", "--repeats", "0"], "repeats >= 1"),
    "sweep seeds 0": (["sweep", "--teacher", "{teacher}", "--seeds", "0", *QUICK], "--seeds must be at least 1"),
    "sweep lambda 2": (["sweep", "--teacher", "{teacher}", "--alphas", "2", *QUICK], "λ (alpha) must be in [0, 1]"),
    "sweep temperatures abc": (["sweep", "--teacher", "{teacher}", "--temperatures", "abc"], "comma-separated"),
    "sweep unknown method": (["sweep", "--teacher", "{teacher}", "--methods", "kd,nope", *QUICK], "nope"),
    "sweep method twice": (["sweep", "--teacher", "{teacher}", "--methods", "kd,1*KD", *QUICK], "same mix twice"),
    "sweep AT on an MLP": (["sweep", "--teacher", "{teacher}", "--methods", "kd,at", *QUICK], "spatial"),
    "leaderboard AT on an MLP": (["leaderboard", "--teacher", "{teacher}", "--methods", "at", *QUICK], "spatial"),
    "leaderboard one seed": (["leaderboard", "--teacher", "{teacher}", "--seeds", "1", *QUICK], "at least 2 seeds"),
    "leaderboard unknown method": (["leaderboard", "--teacher", "{teacher}", "--methods", "kd,nope", *QUICK], "nope"),
    "leaderboard no teacher": (["leaderboard", *QUICK], "needs --teacher"),
    "leaderboard unknown id": (["leaderboard", "--show", "sw-nope"], "no sweep 'sw-nope'"),
    "sweep ray without CPUs": (
        ["sweep", "--teacher", "{teacher}", "--backend", "ray", "--ray-cpus", "0", *QUICK],
        "needs at least 1 CPU",
    ),
}


@pytest.fixture(scope="module")
def stocked(tmp_path_factory):
    """A store holding one finished teacher, made by the CLI itself."""
    tmp = tmp_path_factory.mktemp("refusals")
    store = tmp / "store"
    (tmp / "a-file").write_text("not a folder")
    assert main(["teacher", "--size", "8", "--depth", "1", *QUICK, "--store", str(store)]) == 0
    (teacher,) = Store(store).list_runs()
    return tmp, store, teacher.id


def files_under(folder) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize("case", list(CASES))
def test_refused_with_one_error_line_and_nothing_stored(stocked, case, capsys):
    tmp, store, teacher = stocked
    args, phrase = CASES[case]
    args = [a.format(tmp=tmp, teacher=teacher) for a in args]
    before_runs = [r.id for r in Store(store).list_runs()]
    before_files = files_under(tmp)
    capsys.readouterr()

    code = main([*args, "--store", str(store)])

    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert phrase in lines[0], lines[0]
    assert "Traceback" not in err and out == ""
    assert [r.id for r in Store(store).list_runs()] == before_runs
    assert Store(store).list_sweeps() == []
    assert files_under(tmp) == before_files  # no .part, no probe file, no sweep record


def test_the_edges_of_every_range_are_accepted(stocked, capsys):
    """The checks are not stricter than the ranges they state: each bound's allowed end trains."""
    _, store, _ = stocked
    args = ["teacher", "--size", "1", "--depth", "0", "--optimizer", "sgd", "--momentum", "0", "--seed", "0"]
    args += ["--patience", "0", "--weight-decay", "0", "--split-seed", str(2**32 - 1), "--batch-size", "1"]
    code = main([*args, "--epochs", "1", "--quiet", "--json", "--store", str(store)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert '"status": "finished"' in out


def test_throughput_counts_the_samples_trained_on_not_steps_times_batch(digits):
    """A batch larger than the training split is one short batch per epoch: 2 epochs train on
    2 × N samples, whatever the batch size says (steps × batch claimed millions per second)."""
    n = len(digits.train_y)
    rec = StepRecorder()
    result = fit(make_config("teacher", STUDENT_SPEC, epochs=2, batch_size=100 * n), digits, emit=rec)
    assert result.status == "finished"
    assert result.samples_per_s * result.seconds == pytest.approx(2 * n, rel=1e-9)
    steps = rec.of("step")
    assert len(steps) == 2
    for done, r in zip((n, 2 * n), steps):
        assert r.samples_per_s * r.elapsed_s == pytest.approx(done, rel=1e-9)


@pytest.mark.slow
def test_runs_piped_into_head_ends_quietly(tmp_path):
    """`kd-studio runs --json | head -c 100`: the reader leaves early; no BrokenPipeError, exit 0."""
    store = Store(tmp_path)
    for seed in range(300):  # well past a pipe's 64 KiB buffer
        store.create_run(make_config("teacher", seed=seed))
    cmd = f"set -o pipefail; {sys.executable} -m kd_core runs --json --store {tmp_path} | head -c 100 > /dev/null"
    proc = subprocess.run(["bash", "-c", cmd], env=cli_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
