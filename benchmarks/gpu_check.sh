#!/usr/bin/env bash
# The GPU check (issue 16): teacher and distill on digits and Fashion-MNIST with --device cuda,
# fp32 and bf16, each against an fp32 CPU run; the teacher-target cache's device; seconds per
# epoch; one table. Exit 0 when every check passed.
#
#   benchmarks/gpu_check.sh                        # on a machine with an NVIDIA GPU
#   benchmarks/gpu_check.sh --device cpu --dry-run # anywhere: checks the script itself (CI)
#
# Extra flags go to benchmarks/gpu_check.py (--data-root DIR, --datasets digits,fashion-mnist).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" benchmarks/gpu_check.py "$@"
