"""Size and latency of a model, measured the same way everywhere.

Latency: eval mode, `torch.inference_mode`, warm-up first, then many timed
runs; median and p90 in milliseconds, with the thread count that was in force.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

import torch
from torch import nn

from kd_core.errors import ConfigError
from kd_core.train.engine import MAX_THREADS
from kd_core.train.models import param_count, serialized_bytes

# Sane bounds on what a latency run allocates: a stray flag or a checkpoint's claimed input
# shape must not ask for tens of GB (one batch's input is batch × C × H × W float32 numbers).
MAX_SIDE, MAX_CHANNELS, MAX_CLASSES = 4096, 64, 100_000
MAX_BATCH_BYTES = 2 * 2**30


def check_bench(
    input_shape: tuple[int, ...],
    batch_sizes: tuple[int, ...],
    warmup: int = 0,
    repeats: int = 1,
    threads: int = 0,
    classes: int = 1,
) -> None:
    """Refuse a latency measurement whose inputs are malformed or would not fit in memory."""
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or not all(v >= 1 for v in shape):
        raise ConfigError(f"input shape must be three positive numbers C H W, got {list(shape)}.")
    if shape[0] > MAX_CHANNELS or max(shape[1:]) > MAX_SIDE:
        raise ConfigError(f"input shape {list(shape)} is out of range (up to {MAX_CHANNELS} channels, {MAX_SIDE} px).")
    if not 1 <= classes <= MAX_CLASSES:
        raise ConfigError(f"classes must be 1 to {MAX_CLASSES}, got {classes}.")
    if not batch_sizes or min(batch_sizes) < 1:
        raise ConfigError(f"batch sizes must be at least 1, got {list(batch_sizes)}.")
    need = max(batch_sizes) * shape[0] * shape[1] * shape[2] * 4
    if need > MAX_BATCH_BYTES:
        raise ConfigError(
            f"a batch of {max(batch_sizes)} inputs of shape {list(shape)} needs {need / 2**30:.1f} GiB; "
            f"the limit is {MAX_BATCH_BYTES / 2**30:.0f} GiB. Use smaller batch sizes."
        )
    if warmup < 0 or repeats < 1 or not 0 <= threads <= MAX_THREADS:
        raise ConfigError(
            f"warm-up must be >= 0, repeats >= 1 and threads 0 to {MAX_THREADS}, got {warmup}, {repeats} and {threads}."
        )


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
    threads = torch.get_num_threads()
    batches = {}
    for bs in batch_sizes:
        x = torch.randn(bs, *input_shape, device=device)
        times = time_call(partial(model, x), warmup, repeats, min_seconds=0.2, sync=_sync_for(device))
        batches[str(bs)] = summarize_latency(times, bs)
    model.train(was_training)
    return {"threads": threads, "device": str(device), "batches": batches}


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
