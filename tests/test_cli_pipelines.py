"""`kd-studio takd | ban | dml`: the CLI as a subprocess on digits with a real store, and its
refusals in process (one `error:` line, exit 2, no run stored)."""

from __future__ import annotations

import json

import pytest

from helpers import run_cli
from kd_core.cli import main
from kd_core.config import ModelSpec
from kd_core.store import Store


def ran(proc) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_takd_cli_stores_a_linked_chain(tmp_path, teacher_path):
    out = ran(
        run_cli(tmp_path, "takd", "--teacher", teacher_path, "--assistant", "mlp:32", "--student", "mlp:8",
                "--epochs", "1", "--store", "s", "--json", "--quiet")
    )  # fmt: skip
    assert out["pipeline"] == "takd" and out["status"] == "finished"
    store = Store(tmp_path / "s")
    first, second = (store.get_run(r) for r in out["run_ids"])
    assert first.config.pipeline.parents == (teacher_path,)
    assert second.config.pipeline.parents == (first.id,) and second.teacher_id == first.id
    assert [first.config.model.size, second.config.model.size] == [32, 8]


@pytest.mark.slow
def test_ban_and_dml_cli(tmp_path):
    ban = ran(run_cli(tmp_path, "ban", "--size", "16", "--generations", "1", "--ensemble", "--epochs", "1",
                      "--store", "s", "--json", "--quiet"))  # fmt: skip
    dml = ran(run_cli(tmp_path, "dml", "--peer", "mlp:16", "--peer", "mlp:8x2", "--epochs", "1",
                      "--store", "s", "--json", "--quiet"))  # fmt: skip
    store = Store(tmp_path / "s")
    assert [store.get_run(r).kind for r in ban["run_ids"]] == ["teacher", "student"]
    peers = [store.get_run(r) for r in dml["run_ids"]]
    assert [p.config.model for p in peers] == [ModelSpec("mlp", 16, 1, 1.0), ModelSpec("mlp", 8, 2, 1.0)]
    assert all(p.status == "finished" and p.config.pipeline.id == dml["pipeline_id"] for p in peers)


@pytest.mark.parametrize(
    "argv, phrase",
    [
        (["dml", "--peer", "mlp:16"], "2 to 8 peers"),
        (["dml", "--peer", "mlp:16", "--peer", "mlp:16", "--precision", "bf16"], "fp32"),
        (["takd", "--teacher", "nope", "--assistant", "mlp:32", "--student", "mlp:8"], "no teacher 'nope'"),
        (["takd", "--teacher", "x", "--assistant", "mlp:abc", "--student", "mlp:8"], "mlp:abc"),
        (["takd", "--teacher", "x", "--assistant", "mlp:32", "--student", "mlp:8", "--epochs", "0"], "epochs"),
        (["ban", "--generations", "0"], "generations"),
        (["ban", "--ensemble", "--method", "at"], "logits only"),
        (["ban", "--family", "cnn", "--method", "at", "--teacher", "missing"], "no teacher"),
    ],
)
def test_bad_input_is_one_error_line_and_nothing_stored(tmp_path, capsys, argv, phrase):
    store = tmp_path / "s"
    assert main([*argv, "--store", str(store), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and phrase in err[0], err
    assert not store.exists() or Store(store).list_runs() == []
