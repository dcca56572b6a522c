"""Size and latency of a model, measured the same way everywhere.

Latency: eval mode, `torch.inference_mode`, warm-up first, then many timed
runs; median and p90 in milliseconds, with the thread count that was in force.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from kd_core.train.models import param_count, serialized_bytes


def time_call(
    fn: Callable[[], object],
    warmup: int,
    repeats: int,
    min_seconds: float = 0.0,
    sync: Callable[[], None] = lambda: None,
) -> list[float]:
    """Wall-clock seconds of `repeats` calls of fn (more if `min_seconds` is not reached)."""
    for _ in range(warmup):
        fn()
    sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
        if len(times) >= 20 * repeats:
            break
    return times


def summarize_latency(times_s: list[float], batch_size: int) -> dict:
    ordered = sorted(times_s)
    median = statistics.median(ordered)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {
        "batch_size": batch_size,
        "runs": len(ordered),
        "median_ms": median * 1e3,
        "p90_ms": p90 * 1e3,
        "ms_per_sample": median * 1e3 / batch_size,
        "samples_per_s": batch_size / median if median > 0 else float("inf"),
    }


def _sync_for(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


@torch.inference_mode()
def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_sizes=(1, 256),
    warmup: int = 10,
    repeats: int = 50,
    device: str | torch.device = "cpu",
) -> dict:
    """Median/p90 latency per batch size, plus the thread count in force."""
    device = torch.device(device)
    was_training = model.training
    model.eval().to(device)
    results = {"threads": torch.get_num_threads(), "device": str(device), "batches": {}}
    for bs in batch_sizes:
        x = torch.randn(bs, *input_shape, device=device)
        times = time_call(lambda x=x: model(x), warmup, repeats, min_seconds=0.2, sync=_sync_for(device))
        results["batches"][str(bs)] = summarize_latency(times, bs)
    model.train(was_training)
    return results


def size_report(model: nn.Module) -> dict:
    return {"params": param_count(model), "bytes": serialized_bytes(model)}


def matmul_flops_per_s(n: int = 512, seconds: float = 0.5) -> float:
    """Measured float32 matmul rate of this machine (FLOP/s) at the current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    times = time_call(lambda: a @ b, warmup=3, repeats=10, min_seconds=seconds)
    return 2 * n**3 / statistics.median(times)


@contextmanager
def torch_threads(n: int) -> Iterator[int]:
    """Fix torch's intra-op threads for a measurement and restore them after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)
