"""Command line: `kd-studio` (or `python -m kd_core`) with one module per command group.

    train   teacher, distill, bench, datasets, runs
    methods methods (the distillation methods, their papers and parameters)
    pipelines  takd, ban, dml (multi-model methods: each stage or peer a stored run)
    sweep   sweep
    leaderboard  leaderboard (methods side by side over seeds, with paired tests)
    compress  compress (an Optuna search for a small fast student)
    deploy  export (and bench --runtimes)
    store   store check, store repair
    ui      start the dashboard

Every engine option is a flag. Progress goes to stderr as a bar; `--json`
prints one machine-readable summary on stdout. Errors print one line and exit 2;
SIGINT / SIGTERM end a training run as `stopped` and exit 130 / 143.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from kd_core.cli.parser import EXIT_USER_ERROR, Parser, one_line
from kd_core.errors import KDError

# Every command: (the module of its group, which adds it with `register(sub)`; its one-line help).
# Only the group of the command being run is imported, as pip's commands/__init__.py does: the
# groups import torch, the engine, pandas and optuna (3-6 s on 2 cores), which `kd-studio --help`,
# `kd-studio ui` (whose server imports them again) and `kd-studio methods` never use. The help
# lines are here so the top-level --help imports no group; tests/test_cli.py checks that each is
# the one its group registers. tests/test_layout.py reads this table and checks its modules like
# import statements (layer and cycles), so the lazy import hides nothing from the layering check.
COMMANDS: dict[str, tuple[str, str]] = {
    "teacher": ("kd_core.cli.train", "train a teacher"),
    "distill": ("kd_core.cli.train", "distil a student from a teacher"),
    "bench": ("kd_core.cli.train", "size and latency of a model"),
    "datasets": ("kd_core.cli.train", "list the datasets"),
    "runs": ("kd_core.cli.train", "list stored runs"),
    "methods": ("kd_core.cli.methods", "list the distillation methods, their papers and parameters"),
    "takd": (
        "kd_core.cli.pipelines",
        "teacher → assistant(s) → student, each stage a stored run (Mirzadeh et al. 2020)",
    ),
    "ban": ("kd_core.cli.pipelines", "born-again generations of one architecture (Furlanello et al. 2018)"),
    "dml": ("kd_core.cli.pipelines", "deep mutual learning: peers trained together (Zhang et al. 2018)"),
    "export": ("kd_core.cli.deploy", "export a stored run to ONNX or TorchScript, verified on its test split"),
    "sweep": ("kd_core.cli.sweep", "sweep method × temperature × λ × student size over seeds"),
    "leaderboard": ("kd_core.cli.leaderboard", "compare distillation methods over seeds, with paired tests"),
    "compress": ("kd_core.cli.compress", "search for the smallest fast student within an accuracy drop"),
    "store": ("kd_core.cli.store", "check the run store, or rebuild its index from its files"),
    "ui": ("kd_core.cli.ui", "start the dashboard (Streamlit) on http://localhost:PORT"),
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser. Given `argv`, only the group of the command it names is imported; every other
    command gets a stub with its help line, which is all `kd-studio --help` shows of it. Without
    `argv`, every group is imported (the whole parser, as tests and docs want it)."""
    parser = Parser(prog="kd-studio", description="KD Studio: knowledge distillation.")
    sub = parser.add_subparsers(dest="command", required=True)
    wanted = {m for m, _ in COMMANDS.values()} if argv is None else _group_of(argv)
    registered: set[str] = set()
    for command, (module, text) in COMMANDS.items():
        if module not in wanted:
            sub.add_parser(command, help=text)
        elif module not in registered:  # a group adds all its commands at once, in this table's order
            importlib.import_module(module).register(sub)
            registered.add(module)
    return parser


def _group_of(argv: Sequence[str]) -> set[str]:
    """The module of the command `argv` names: its first word not an option (the top-level parser
    has no option taking a value), or none for `--help`, no command or an unknown one."""
    command = next((a for a in argv if not a.startswith("-")), None)
    return {COMMANDS[command][0]} if command in COMMANDS else set()


def _quiet_stdout() -> None:
    """After the reader of a pipe went away (`kd-studio runs | head`): send the rest of stdout to
    /dev/null, so the interpreter's last flush does not raise BrokenPipeError again at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is no real file (captured in tests)
        pass


def main(argv: list[str] | None = None) -> int:
    try:
        argv = sys.argv[1:] if argv is None else argv
        args = build_parser(argv).parse_args(argv)
        return args.fn(args)
    except KDError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        return 0
