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
import os
import sys

from kd_core.cli import compress, deploy, leaderboard, methods, pipelines, store, sweep, train, ui
from kd_core.cli.common import EXIT_USER_ERROR, Parser, one_line
from kd_core.errors import KDError


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="kd-studio", description="KD Studio: knowledge distillation.")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (train, methods, pipelines, deploy, sweep, leaderboard, compress, store, ui):
        group.register(sub)
    return parser


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
        args = build_parser().parse_args(argv)
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
