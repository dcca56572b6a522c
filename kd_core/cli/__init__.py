"""Command line: `kd-studio` (or `python -m kd_core`) with one module per command group.

    train   teacher, distill, bench, datasets, runs
    methods methods (the distillation methods, their papers and parameters)
    sweep   sweep
    compress  compress (an Optuna search for a small fast student)
    deploy  export (and bench --runtimes)
    ui      start the dashboard

Every engine option is a flag. Progress goes to stderr as a bar; `--json`
prints one machine-readable summary on stdout. Errors print one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys

from kd_core.cli import compress, deploy, methods, sweep, train, ui
from kd_core.cli.common import EXIT_USER_ERROR
from kd_core.errors import KDError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kd-studio", description="KD Studio: knowledge distillation.")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (train, methods, deploy, sweep, compress, ui):
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except KDError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
