"""Command line for deployment: `export RUN --format ...` and `bench RUN --runtimes ...`.

`register(subparsers)` adds the `export` subcommand; `cmd_bench_runtimes` is what
`bench` calls when --runtimes is given. Both print a short report, or one JSON
object with --json; a refused export prints its numbers and exits non-zero
through the CLI's KDError handling (no traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from kd_core.deploy.export import ExportError, export_run, verify_file
from kd_core.deploy.runtimes import bench_run, latency_markdown, machine_line
from kd_core.errors import ConfigError
from kd_core.train.engine import MAX_THREADS

FORMAT_CHOICES = ("onnx", "torchscript")


def _threads(n: int) -> int:
    """Fix torch's thread count for the whole command and report it (0: keep torch's default)."""
    if not 0 <= n <= MAX_THREADS:
        raise ConfigError(f"threads must be 0 (torch's default) or a count up to {MAX_THREADS}, got {n}.")
    if n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def _describe(r: dict) -> str:
    t = r["tolerance"]
    kind = f"{r['format']}{' int8' if r.get('quantize') else ''}"
    where = f" → {r['path']} ({r['bytes']:,} bytes)" if r.get("path") else ""
    return (
        f"{r['kind']} {r['run_id']} as {kind}{where}\n"
        f"  max |Δlogit| {r['max_abs_diff']:.3g} (allowed {t['max_abs_diff']:.3g}), "
        f"top-1 agreement {r['agreement']:.4f} (at least {t['min_agreement']}) on {r['samples']} test samples\n"
        f"  test accuracy {r['test_acc']:.4f} (PyTorch float32: {r['reference_test_acc']:.4f})"
    )


def cmd_export(a) -> int:
    started = time.perf_counter()
    threads = _threads(a.threads)
    if not a.verify and not a.format:
        raise ConfigError("export needs --format onnx|torchscript (or --verify PATH to check an existing file).")
    try:
        if a.verify:
            report = verify_file(a.store, a.run, a.verify)
        else:
            report = export_run(a.store, a.run, a.format, a.quantize, a.out)
    except ExportError as err:
        if a.json and err.report:
            print(json.dumps({"command": "export", "ok": False, "error": str(err), **err.report}, indent=2))
        raise
    report.update(command="export", threads=threads, seconds=time.perf_counter() - started)
    if a.json:
        print(json.dumps(report, indent=2))
    else:
        print(("verified " if a.verify else "exported ") + _describe(report))
    if a.verify and not report["ok"]:
        print("error: the file is outside tolerance of the run it came from.", file=sys.stderr)
        return 2
    return 0


def cmd_bench_runtimes(a) -> int:
    """`bench RUN --runtimes eager,torchscript,onnxruntime`: the cross-runtime latency table."""
    if not a.model:
        raise ConfigError("bench --runtimes needs a stored run id: it measures the run's exported files.")
    started = time.perf_counter()
    threads = _threads(a.threads)
    batches = a.batch_sizes  # parsed and checked by --batch-sizes' argparse type
    result = bench_run(a.store, a.model, a.runtimes, batches, threads, a.warmup, a.repeats)
    result.update(command="bench", seconds=time.perf_counter() - started)
    for w in result["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    if a.json:
        print(json.dumps(result, indent=2))
    else:
        print(machine_line(result["machine"]))
        print(latency_markdown(result["rows"]))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a stored run to ONNX or TorchScript, verified on its test split")
    p.add_argument("run", help="stored run id")
    p.add_argument("--format", choices=FORMAT_CHOICES, help="file format")
    p.add_argument("--quantize", choices=["int8"], default=None, help="dynamic int8 quantization of the Linear layers")
    p.add_argument("--out", help="where to write (default: beside the run's weights in the store)")
    p.add_argument("--verify", metavar="PATH", help="check an existing export against the run instead")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--store", default="kd_runs", help="run store folder")
    p.add_argument("--json", action="store_true", help="print a JSON report on stdout")
    p.set_defaults(fn=cmd_export)
