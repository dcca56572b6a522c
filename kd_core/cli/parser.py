"""The CLI's argument parser and exit codes: what `kd_core.cli` needs before it knows which
command runs, kept free of torch so that `kd-studio --help` imports none (see cli/__init__.py)."""

from __future__ import annotations

import argparse

from kd_core.errors import KDError

EXIT_USER_ERROR = 2


class UsageError(KDError):
    """A flag argparse refuses (a missing value, `--epochs abc`): reported like any other bad input."""


class Parser(argparse.ArgumentParser):
    """argparse, except that a refused argument is one `error:` line and exit 2 through `main`,
    like every other bad input, instead of a usage block and a SystemExit."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def one_line(err: BaseException) -> str:
    return " ".join(line.strip() for line in str(err).splitlines() if line.strip())
