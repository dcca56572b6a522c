"""`kd-studio store check` and `kd-studio store repair`: the run store's index against its files.

kd-studio store check  [--store kd_runs]   says what is wrong, changes nothing (exit 2 if anything is)
kd-studio store repair [--store kd_runs]   rebuilds the index from the weights folder's JSON records
"""

from __future__ import annotations

import argparse
import sys

from kd_core.cli.parser import EXIT_USER_ERROR
from kd_core.store.repair import check, repair


def cmd_check(a) -> int:
    report = check(a.store)
    for line in report.lines:
        print(line)
    if report.ok:
        return 0
    print(f"error: the run store {report.root} needs repair: kd-studio store repair --store {a.store}", file=sys.stderr)
    return EXIT_USER_ERROR


def cmd_repair(a) -> int:
    report = repair(a.store)
    for line in report.lines:
        print(line)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `store check` and `store repair` to the CLI's sub-parsers."""
    p = sub.add_parser("store", help="check the run store, or rebuild its index from its files")
    actions = p.add_subparsers(dest="store_command", required=True)
    for name, fn, text in (
        ("check", cmd_check, "say what is wrong with the run store (changes nothing)"),
        ("repair", cmd_repair, "rebuild the index of runs from the weights folder (moves a damaged runs.db aside)"),
    ):
        q = actions.add_parser(name, help=text)
        q.add_argument("--store", default="kd_runs", help="run store folder (SQLite + weights)")
        q.set_defaults(fn=fn)
