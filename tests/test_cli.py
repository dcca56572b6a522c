"""The CLI as users run it: `python -m kd_core ...` in a subprocess, on digits.

Bad input must end in one `error:` line (or a failed run's message) and exit 2, never
a traceback. Every case runs through `main()`; one of each kind also runs as a real
process. Those are independent, so they start at once and each test waits for its own.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch

from helpers import (
    TEACHER_SPEC,
    CodeRunningPickle,
    assert_clean_failure,
    cli_command,
    cli_env,
    run_cli,
    write_image_folder,
)
from kd_core.config import ModelSpec
from kd_core.store import Store
from kd_core.train.checkpoint import FORMAT, save_checkpoint
from kd_core.train.models import build_model

RUN_KEYS = {
    "run_id",
    "kind",
    "status",
    "test_acc",
    "best_val_acc",
    "final_val_acc",
    "params",
    "bytes",
    "latency",
    "seconds",
    "ece",
    "confusion_matrix",
    "per_class_accuracy",
    "flops",
}


def prepare_error_inputs(root) -> dict[str, list]:
    """Files for each bad-input case, and the command line that should refuse it."""
    write_image_folder(root / "one_empty", classes=("a", "b"), per_class=4)
    (root / "one_empty" / "c").mkdir()
    (root / "noise.pt").write_bytes(os.urandom(2048))
    digits_mlp = build_model(TEACHER_SPEC, (1, 8, 8), 10)
    save_checkpoint(root / "real.pt", digits_mlp, TEACHER_SPEC, (1, 8, 8), [str(k) for k in range(10)], "digits")
    data = (root / "real.pt").read_bytes()
    (root / "truncated.pt").write_bytes(data[: len(data) // 2])
    torch.save(torch.zeros(4), root / "tensor.pt")
    # A well-formed torch zip whose pickle would call os.mkdir: only weights_only stands in the way.
    torch.save({"format": FORMAT, "state_dict": CodeRunningPickle(str(root / "was-run"))}, root / "evil.pt")
    rgb = ModelSpec("cnn", 4)
    save_checkpoint(root / "rgb.pt", build_model(rgb, (3, 8, 8), 3), rgb, (3, 8, 8), ["a", "b", "c"], "folder:x")
    quick = ["--epochs", "1", "--quiet"]
    return {
        "unknown dataset": ["teacher", "--dataset", "imagenet", *quick],
        "missing folder": ["teacher", "--dataset", f"folder:{root / 'nope'}", *quick],
        "empty class folder": ["teacher", "--dataset", f"folder:{root / 'one_empty'}", *quick],
        "missing idx files": ["teacher", "--dataset", "mnist", "--no-download", "--data-root", root / "empty", *quick],
        "val fraction": ["teacher", "--val-fraction", "0", *quick],
        "random bytes": ["distill", "--teacher", root / "noise.pt", *quick],
        "truncated": ["distill", "--teacher", root / "truncated.pt", *quick],
        "plain tensor": ["distill", "--teacher", root / "tensor.pt", *quick],
        "pickle with code": ["distill", "--teacher", root / "evil.pt", *quick],
        "other dataset": ["distill", "--teacher", root / "rgb.pt", *quick],
        "unknown teacher": ["distill", "--teacher", "t0000-000000-dead", *quick],
        "diverging lr": ["teacher", "--lr", "1e6", *quick],
        "negative threads": ["teacher", "--threads", "-2", *quick],
        "unknown method": ["distill", "--teacher", root / "real.pt", "--method", "dkdd", *quick],
        "ambiguous method param": [
            "distill",
            "--teacher",
            root / "real.pt",
            "--method",
            "dkd+dist",
            "--method-param",
            "beta=2",
            *quick,
        ],
        "AT on an MLP": [
            "distill",
            "--teacher",
            root / "real.pt",
            "--method",
            "kd+at",
            "--store",
            root / "at-store",
            *quick,
        ],
    }


EXPECTED = {  # case -> (phrases, stream)
    "unknown dataset": (["error:", "unknown dataset 'imagenet'", "digits, mnist"], "stderr"),
    "negative threads": (["error:", "threads must be 0 (auto) or a count up to 1024, got -2"], "stderr"),
    "missing folder": (["error:", "does not exist"], "stderr"),
    "empty class folder": (["error:", "no valid file", "classes c", "sub-folder"], "stderr"),
    "missing idx files": (["error:", "could not load 'mnist'", "train-images-idx3-ubyte"], "stderr"),
    "val fraction": (["error:", "validation fraction"], "stderr"),
    "random bytes": (["error:", "not a readable checkpoint"], "stderr"),
    "truncated": (["error:", "not a readable checkpoint"], "stderr"),
    "plain tensor": (["error:", "not a kd studio checkpoint"], "stderr"),
    "pickle with code": (["error:", "not a readable checkpoint"], "stderr"),
    "other dataset": (["error:", "shape [3, 8, 8]", "[1, 8, 8]"], "stderr"),
    "unknown teacher": (["error:", "neither a checkpoint file nor a stored run id"], "stderr"),
    "diverging lr": (["failed", "learning rate"], "stdout"),  # a run that failed, reported as such
    "unknown method": (["error:", "unknown distillation method 'dkdd'", "kd, dkd, dist"], "stderr"),
    "ambiguous method param": (["error:", "several methods have 'beta' (dkd, dist)", "dkd.beta=2"], "stderr"),
    "AT on an MLP": (["error:", "method 'at' needs spatial feature maps", "use a CNN student"], "stderr"),
}


# Each category of bad input also goes through a real `python -m kd_core` process; the rest
# run through the same `main()` in-process (an escaping exception would fail the test just
# as a traceback would), which spares an interpreter-plus-torch start per case.
SUBPROCESS_CASES = ["unknown dataset", "empty class folder", "truncated", "pickle with code", "diverging lr"]


class Launched:
    """Processes started together; `result(name)` waits for one of them."""

    def __init__(self, cwd, commands: dict[str, list]):
        self.procs = {
            name: subprocess.Popen(
                cli_command(*args), cwd=cwd, env=cli_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            for name, args in commands.items()
        }
        self.done: dict[str, subprocess.CompletedProcess] = {}
        self.cwd = cwd

    def result(self, name: str) -> subprocess.CompletedProcess:
        if name not in self.done:
            proc = self.procs[name]
            out, err = proc.communicate(timeout=300)
            self.done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        return self.done[name]

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


@pytest.fixture(scope="module")
def error_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-errors")
    return root, prepare_error_inputs(root)


@pytest.fixture(scope="module")
def error_runs(error_root):
    root, commands = error_root
    launched = Launched(root, {name: commands[name] for name in SUBPROCESS_CASES})
    yield launched
    launched.close()


def check_refusal(proc: subprocess.CompletedProcess, case: str, root) -> None:
    phrases, stream = EXPECTED[case]
    assert_clean_failure(proc, *phrases, stream=stream)
    assert proc.returncode == 2
    if case == "pickle with code":
        assert not (root / "was-run").exists()
    if case == "AT on an MLP":  # refused before anything was stored
        assert not (root / "at-store" / "runs.db").exists() or not Store(root / "at-store").list_runs()


@pytest.mark.slow
@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_bad_input_exits_non_zero_without_traceback(error_root, error_runs, case):
    check_refusal(error_runs.result(case), case, error_root[0])


@pytest.mark.parametrize("case", list(EXPECTED))
def test_bad_input_gives_one_clear_line(error_root, case, monkeypatch, capsys):
    from kd_core.cli import main

    root, commands = error_root
    monkeypatch.chdir(root)
    args = [str(a) for a in commands[case]]
    code = main(args)
    out, err = capsys.readouterr()
    check_refusal(subprocess.CompletedProcess(args, code, out, err), case, root)
    if EXPECTED[case][1] == "stderr":
        assert len(err.strip().splitlines()) == 1, err


# ---------------------------------------------------------------- end to end on digits


@pytest.fixture(scope="module")
def cli_teacher(tmp_path_factory, error_runs):  # starts while the error cases run
    work = tmp_path_factory.mktemp("cli-e2e")
    proc = run_cli(
        work, "teacher", "--epochs", "3", "--size", "64", "--depth", "1", "--json", "--quiet", "--out", "teacher.pt"
    )
    assert proc.returncode == 0, proc.stderr
    return work, json.loads(proc.stdout)


@pytest.fixture(scope="module")
def cli_distills(cli_teacher):
    """Both distillations from the teacher, started together: by run id, and from `--out`'s file."""
    work, teacher_out = cli_teacher
    launched = Launched(
        work,
        {
            "by run id": [
                "distill",
                "--teacher",
                teacher_out["runs"][0]["run_id"],
                "--baseline",
                "--json",
                "--quiet",
                "--epochs",
                "2",
                "-T",
                "3",
                "--alpha",
                "0.5",
            ],
            "from file": [
                "distill",
                "--teacher",
                "teacher.pt",
                "--size",
                "256",
                "--depth",
                "1",
                "--epochs",
                "1",
                "--quiet",
            ],
        },
    )
    yield launched
    launched.close()


@pytest.mark.slow
def test_teacher_json_and_checkpoint(cli_teacher):
    work, out = cli_teacher
    assert out["command"] == "teacher" and out["config"]["model"] == {
        "family": "mlp",
        "size": 64,
        "depth": 1,
        "width": 1.0,
    }
    (run,) = out["runs"]
    assert set(run) >= RUN_KEYS
    assert run["kind"] == "teacher" and run["status"] == "finished" and run["epochs_done"] == 3
    assert run["test_acc"] > 0.5  # well above chance (0.1) after three epochs
    assert (work / "teacher.pt").is_file()
    stored = Store(work / "kd_runs").get_run(run["run_id"])
    assert stored.status == "finished" and stored.metrics["test_acc"] == run["test_acc"]


@pytest.mark.slow  # cli_teacher trains a teacher through a CLI subprocess (~15 s)
def test_runs_json_prints_every_stored_field(cli_teacher):
    """`runs --json`: one object per stored run with the runs table's columns, the config and the
    metrics as stored (typed records inside the store; plain JSON out)."""
    work, out = cli_teacher
    proc = run_cli(work, "runs", "--json")
    assert proc.returncode == 0, proc.stderr
    (printed,) = [r for r in json.loads(proc.stdout) if r["id"] == out["runs"][0]["run_id"]]
    assert list(printed) == [
        *("id", "kind", "dataset", "status", "error", "label", "config", "metrics"),
        *("teacher_id", "sweep_id", "created", "finished", "pid", "weights"),
    ]
    stored = Store(work / "kd_runs").get_run(printed["id"])
    assert printed["config"] == stored.config.to_dict() and printed["config"]["model"]["size"] == 64
    assert printed["metrics"]["test_acc"] == out["runs"][0]["test_acc"] and printed["weights"] == stored.weights


@pytest.mark.slow
def test_distill_from_run_id_with_baseline_json(cli_teacher, cli_distills):
    work, teacher_out = cli_teacher
    teacher_id = teacher_out["runs"][0]["run_id"]
    proc = cli_distills.result("by run id")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "warning:" not in proc.stderr
    out = json.loads(proc.stdout)
    assert out["command"] == "distill" and isinstance(out["seconds"], float)
    assert out["config"]["teacher_id"] == teacher_id
    assert out["config"]["distill"] == {
        "temperature": 3.0,
        "alpha": 0.5,
        "cache_teacher_logits": True,
        "methods": [{"name": "kd", "weight": 1.0, "params": []}],  # the default: Hinton's KD
    }
    assert set(out["runs"][0]["loss_terms"]) == {"ce", "kd"} and set(out["runs"][1]["loss_terms"]) == {"ce"}
    assert out["dataset"]["train"] + out["dataset"]["val"] + out["dataset"]["test"] == 1797
    student, baseline = out["runs"]
    assert (student["kind"], baseline["kind"]) == ("student", "baseline")
    for run in (student, baseline):
        assert set(run) >= RUN_KEYS, RUN_KEYS - set(run)
        assert run["status"] == "finished" and 0.0 <= run["test_acc"] <= 1.0
        assert run["best_val_acc"] >= run["final_val_acc"]
        assert set(run["latency"]["batches"]) == {"1", "256"}
        assert run["params"] < teacher_out["runs"][0]["params"]
        assert "agreement" in run
    assert student["params"] == baseline["params"] and student["bytes"] == baseline["bytes"]
    store = Store(work / "kd_runs")
    assert store.get_run(student["run_id"]).teacher_id == teacher_id
    assert store.get_run(baseline["run_id"]).kind == "baseline"


@pytest.mark.slow
def test_distill_from_out_checkpoint_warns_for_larger_student(cli_distills):
    proc = cli_distills.result("from file")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "warning:" in proc.stderr and "larger than its teacher" in proc.stderr
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("student")]
    assert "finished" in line and "test acc" in line
    # A checkpoint given by a relative path is stored absolute: the reproduce command works anywhere.
    students = [
        r for r in Store(cli_distills.cwd / "kd_runs").list_runs(kind="student") if r.teacher_id.endswith(".pt")
    ]
    assert [r.teacher_id for r in students] == [str((cli_distills.cwd / "teacher.pt").resolve())]
