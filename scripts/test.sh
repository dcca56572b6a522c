#!/usr/bin/env bash
# The README's test command. On a fresh machine it installs what the tests use:
# Debian's chromium (browser tests) and dataset-fashion-mnist (real data), and
# the Python dependencies; then it runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null || [ ! -d /usr/share/datasets/fashion-mnist ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver dataset-fashion-mnist >/dev/null
fi
python -m pip install -q -r requirements-dev.txt
python -m pytest -q "$@"
