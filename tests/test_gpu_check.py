"""benchmarks/gpu_check.sh: the GPU check runs to completion on the CPU as a dry run (CI has no
GPU), prints its one table with every row checked, and refuses --device cuda where there is none."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def run_script(*args: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


@pytest.mark.slow
def test_the_dry_run_on_the_cpu_trains_distils_and_checks_every_row():
    done = run_script("--device", "cpu", "--dry-run", timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [line.split(" | ") for line in done.stdout.splitlines() if line.count(" | ") == 8]
    header, body = rows[0], rows[1:]
    assert header[0] == "dataset" and len(body) == 8  # 2 datasets × (teacher, student) × (fp32, bf16)
    assert {(r[0], r[1], r[3]) for r in body} == {
        (d, role, p) for d in ("digits", "fashion-mnist") for role in ("teacher", "student") for p in ("fp32", "bf16")
    }
    for r in body:
        assert r[7] == "cpu/float32" and r[8] == "yes", r  # the cache on the device, in float32
        assert float(r[4]) > 0 and 10 < float(r[5].rstrip(" %")) <= 100, r  # seconds per epoch, accuracy
    assert "all checks passed" in done.stdout


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused_with_one_line():
    done = run_script("--device", "cuda", timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: --device cuda but torch sees no CUDA GPU")
