#!/usr/bin/env bash
# The README's test command. On a fresh machine it installs what the tests use:
# Debian's chromium (browser tests) and dataset-fashion-mnist (real data), and
# the package with its [dev] extra (pytest, playwright's driver, ray, ruff, mypy,
# hypothesis); then the linters and mypy, then the whole suite. Arguments go to pytest,
# e.g. `bash scripts/test.sh -m "not browser and not slow"` for the fast loop.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null || [ ! -d /usr/share/datasets/fashion-mnist ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver dataset-fashion-mnist >/dev/null
fi
python -m pip install -q -r requirements.txt -e ".[dev]"
python -m ruff check .
python -m ruff format --check .
python -m mypy
python -m pytest -q "$@"
