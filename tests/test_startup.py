"""Start-up cost (issue 16) and `kd-studio --help` from any folder (issue 9): what the CLI's help
and the dashboard's first page import, in fresh interpreters; the lazy command table against
the parser every group builds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kd_core.cli import COMMANDS, build_parser, main

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "pandas", "optuna", "sklearn")


def fresh_modules(code: str, cwd: Path) -> list[str]:
    """Which of HEAVY a new interpreter has imported after running `code` (this checkout first
    on the path)."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_help_imports_no_group_and_no_torch(tmp_path):
    code = "from kd_core.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0"
    assert fresh_modules(code, tmp_path) == []


def test_kd_studio_ui_imports_no_torch_before_starting_the_server(tmp_path):
    """`kd-studio ui` only spawns the server (which imports what the pages need): its own process
    stays light, so the server starts seconds earlier."""
    code = "from kd_core.cli import build_parser\nbuild_parser(['ui']).parse_args(['ui', '--headless'])"
    assert fresh_modules(code, tmp_path) == []


@pytest.mark.slow  # a fresh interpreter importing torch: 3-6 s
def test_the_dashboard_core_leaves_torchvision_out(tmp_path):
    """kd_core.views.studio (what app.py and the Overview import) with its model families and the
    feature methods: torchvision (1.3-2 s to import on 2 cores) waits for a torchvision model."""
    loaded = fresh_modules("import kd_core.views.studio, kd_core.train.features, kd_core.train.zoo", tmp_path)
    assert "torch" in loaded  # the probe sees imports at all
    assert "torchvision" not in loaded


@pytest.mark.slow  # a fresh interpreter importing torch: 3-6 s
def test_building_a_torchvision_family_still_works_after_the_late_import(tmp_path):
    code = (
        "from kd_core.train.zoo import build_zoo\nimport torch\n"
        "m = build_zoo('resnet18', 0.25, (1, 8, 8), 10)\nassert m(torch.zeros(2, 1, 8, 8)).shape == (2, 10)\n"
        "assert type(m).__name__ == 'WideResNet' and m.stage_nodes['stage4'] == 'layer4'"
    )
    assert "torchvision" in fresh_modules(code, tmp_path)


def test_kd_studio_help_from_another_folder_lists_every_command(tmp_path):
    script = Path(sys.executable).with_name("kd-studio")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "kd_core"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [*cmd, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    listed = {line.split()[0] for line in out.stdout.splitlines() if line[:4] == "    " and line[4:5] not in ("", " ")}
    assert listed == set(COMMANDS), listed ^ set(COMMANDS)
    for _command, (_module, text) in COMMANDS.items():
        assert text.split()[0] in out.stdout


def subparsers(parser) -> dict:
    """{command: its sub-parser} of a kd-studio parser."""
    [action] = [a for a in parser._actions if a.dest == "command"]
    return dict(action.choices)


def help_lines(parser) -> dict[str, str]:
    [action] = [a for a in parser._actions if a.dest == "command"]
    return {a.dest: a.help for a in action._choices_actions}


def test_the_table_is_what_the_groups_register():
    """Every command a group registers is in the table, with the help line the group gives it,
    in the same order: the top-level help built from the table is the one the groups would print."""
    full = build_parser()
    assert list(help_lines(full)) == list(COMMANDS)
    assert help_lines(full) == {c: text for c, (_m, text) in COMMANDS.items()}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_command_parses_as_in_the_whole_parser(command, capsys):
    """The parser built for one command (its group alone imported) gives that command the same
    flags as the whole parser, and its --help works."""
    lazy, full = subparsers(build_parser([command]))[command], subparsers(build_parser())[command]
    assert lazy.format_help() == full.format_help()
    assert lazy.get_default("fn") is full.get_default("fn")  # a stub would have none (`datasets` has no flags)
    if full.get_default("fn") is not None:  # `store` sets it on its own sub-commands
        assert full.get_default("fn").__module__ == COMMANDS[command][0]
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0
    assert f"usage: kd-studio {command}" in capsys.readouterr().out


def test_an_unknown_command_is_one_error_line(capsys):
    assert main(["distil"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "invalid choice: 'distil'" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow  # a fresh interpreter importing torch: 3-6 s
def test_the_preloader_imports_what_the_overviews_first_run_needs_and_no_torchvision(tmp_path):
    """ui/serve.py imports before the server starts what the first script run (app.py, the
    sidebar and the Overview, digits) would otherwise import while the browser waits: after
    `preload()`, that run adds no heavy package, and torchvision is in neither."""
    code = (
        "import sys\nsys.path.insert(0, 'ui')\nimport serve\nserve.preload()\n"
        "from streamlit.testing.v1 import AppTest\n"
        "before = {m.split('.')[0] for m in sys.modules}\n"
        "at = AppTest.from_file('app.py', default_timeout=300).run()\n"
        "assert not at.exception, [e.value for e in at.exception]\n"
        "assert at.title[0].value == 'KD Studio' and at.button(key='quick_start')\n"
        "new = {m.split('.')[0] for m in sys.modules} - before\n"
        "print('NEW', sorted(new & {'torch', 'torchvision', 'sklearn', 'scipy', 'pandas', 'plotly', 'numpy'}))\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "KD_RUNS": str(tmp_path / "runs"),
        "KD_DATA": str(tmp_path / "data"),
    }
    code += f"print('LOADED', {HEAVY!r}[1] in sys.modules)\n"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if line.startswith(("NEW ", "LOADED ")))
    assert lines == {"NEW": "[]", "LOADED": "False"}, out.stdout[-2000:]
