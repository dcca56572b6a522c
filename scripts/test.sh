#!/usr/bin/env bash
# The README's test command: install the Python dependencies, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -r requirements-dev.txt
python -m pytest -q "$@"
