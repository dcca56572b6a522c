"""benchmarks/bench_models.py: its generated folder, its hard-linked subset and its ratios,
on real files; the memmap part end to end at a tiny size, its printed ratios recomputed here
from the JSON the same run wrote."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from helpers import REPO

SCRIPT = REPO / "benchmarks" / "bench_models.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_models", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_folder_and_its_linked_subset(tmp_path, bench):
    big = bench.make_folder(tmp_path / "big", 30, 16, classes=3)
    files = sorted(big.glob("class*/*.jpg"))
    assert len(files) == 30 and {p.parent.name for p in files} == {"class0", "class1", "class2"}
    assert Image.open(files[0]).size == (16, 16) and Image.open(files[0]).mode == "RGB"
    # classes differ in the colour of their stripes: per-channel contrast (std) per class
    contrast = [np.mean([np.asarray(Image.open(p), np.float64).std((0, 1)) for p in big.glob(f"class{k}/*.jpg")], 0)
                for k in range(3)]  # fmt: skip
    assert min(np.abs(contrast[a] - contrast[b]).max() for a, b in ((0, 1), (0, 2), (1, 2))) > 5
    small = bench.linked_subset(big, tmp_path / "small", 12)
    linked = sorted(small.glob("class*/*.jpg"))
    assert sorted(int(p.stem) for p in linked) == list(range(12))
    assert all(os.path.samefile(p, big / p.parent.name / p.name) for p in linked)  # no copies


def test_ratios_divide_the_same_runs_figures(bench):
    rows = {"a": {"x": 3.0, "y": 10.0}, "b": {"x": 1.5, "y": 40.0}}
    assert bench.ratios(rows, "a", "b", ("x", "y")) == {"x": 2.0, "y": 0.25}
    assert bench.ratio_line("a / b", {"x": 2.0, "y": 0.25}) == "| a / b | 2.00× | 0.25× |"


@pytest.mark.slow  # three child processes, each importing torch and training a few steps
def test_memmap_part_end_to_end_prints_ratios_of_its_own_run(tmp_path):
    args = ["--part", "memmap", "--work", tmp_path, "--images", 60, "--in-ram", 30, "--size", 16, "--steps", 6,
            "--threads", 1]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads((tmp_path / "results.json").read_text())["memmap"]
    assert r["ram_subset"]["train_images"] == r["memmap_subset"]["train_images"]  # the same subset both ways
    assert r["memmap_full"]["train_images"] > r["ram_subset"]["train_images"] > 0
    assert r["cache_bytes"] >= 60 * 3 * 16 * 16  # uint8 pixels of every image, on disk
    assert "CPU:" in proc.stdout and "the machine is shared" in proc.stdout
    line = re.search(r"\| memmap / RAM, same subset \| ([\d.]+)× \| ([\d.]+)×", proc.stdout)
    assert line, proc.stdout
    speed = r["memmap_subset"]["samples_per_s"] / r["ram_subset"]["samples_per_s"]
    rss = r["memmap_subset"]["peak_rss_mib"] / r["ram_subset"]["peak_rss_mib"]
    assert abs(float(line[1]) - speed) <= 0.005 and abs(float(line[2]) - rss) <= 0.005
