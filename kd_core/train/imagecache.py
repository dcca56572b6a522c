"""Images larger than memory: decoded once into an on-disk uint8 cache, read by index.

A folder of 100k images at 224 px is ~60 GB as float32 and cannot be loaded; as uint8 it
is 15 GB on disk, memory-mapped, with only the pages a batch touches in memory. Layout of
one cache slot, `<cache_dir>/<source>-<S>px/`:

    images.npy   (N, C, S, S) uint8, written through np.lib.format.open_memmap
    labels.npy   (N,) int64
    meta.json    {"key": ..., "classes": [...], "n_train": ..., "source": ...}

The slot is reused while its key matches: for a folder, a hash of every image's relative
path, class, size and modification time, and the pixel size; a folder that changed is
decoded again into the same slot. A slot is built under a temporary name and renamed when
complete, so a crash or a concurrent run never leaves a half-written cache in use.

`MappedImages` is what a `Dataset` holds instead of a float tensor: a float32
(N, C, S, S) view normalised on the fly, supporting what training and evaluation do with
an image tensor (len, shape, slicing, x[i], index_select, .to(device)).
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch

from kd_core.errors import DataError
from kd_core.events import Progress, ProgressSink, ignore

FORMAT = "kd-studio-image-cache/1"
PROGRESS_EVERY = 256  # images between progress records


@dataclass
class CachedImages:
    images: np.ndarray  # (N, C, S, S) uint8, memory-mapped read-only
    labels: np.ndarray  # (N,) int64
    classes: list[str]
    n_train: int  # rows [0, n_train) are the training pool; the rest the source's own test split
    slot: Path


def source_key(parts: Iterable[str]) -> str:
    h = hashlib.sha256(FORMAT.encode())
    for part in parts:
        h.update(part.encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest()


def files_key(root: Path, files: list[tuple[Path, int]], size: int) -> str:
    """What the cache of these files at `size` px depends on: each path, class, byte size and
    modification time. Editing, adding, removing or renaming an image changes it."""

    def entry(path: Path, label: int) -> str:
        st = path.stat()
        return f"{path.relative_to(root) if path.is_relative_to(root) else path}|{label}|{st.st_size}|{st.st_mtime_ns}"

    return source_key([f"size={size}", *(entry(p, k) for p, k in files)])


def _open(slot: Path, key: str) -> CachedImages | None:
    try:
        meta = json.loads((slot / "meta.json").read_text())
        if meta.get("format") != FORMAT or meta.get("key") != key:
            return None
        images = np.load(slot / "images.npy", mmap_mode="r")
        labels = np.load(slot / "labels.npy")
    except (OSError, ValueError):
        return None
    return CachedImages(images, labels, list(meta["classes"]), int(meta["n_train"]), slot)


def cached(
    slot: Path,
    key: str,
    shape: tuple[int, ...],
    labels: np.ndarray,
    classes: list[str],
    n_train: int,
    decode: Callable[[int], np.ndarray],
    emit: ProgressSink = ignore,
    what: str = "images",
) -> CachedImages:
    """The cache in `slot` if its key is `key`; else built by `decode(i)` -> (C, S, S) uint8 for
    every row i of `shape` = (N, C, S, S), with "cache" progress records, then opened."""
    found = _open(slot, key)
    if found is not None:
        return found
    slot.parent.mkdir(parents=True, exist_ok=True)
    part = slot.with_name(f"{slot.name}.{os.getpid()}.part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir()
    try:
        _build(part, key, shape, labels, classes, n_train, decode, emit, what)
        shutil.rmtree(slot, ignore_errors=True)  # the stale cache of a folder that changed
        part.rename(slot)
    except OSError as err:
        shutil.rmtree(part, ignore_errors=True)
        found = _open(slot, key)  # another process finished the same cache first
        if found is None:
            raise DataError(f"could not write the image cache in {slot.parent}: {err}") from err
        return found
    except BaseException:
        shutil.rmtree(part, ignore_errors=True)
        raise
    opened = _open(slot, key)
    assert opened is not None
    return opened


def _build(part, key, shape, labels, classes, n_train, decode, emit, what) -> None:
    images = np.lib.format.open_memmap(part / "images.npy", mode="w+", dtype=np.uint8, shape=tuple(shape))
    n = shape[0]
    for i in range(n):
        images[i] = decode(i)
        if (i + 1) % PROGRESS_EVERY == 0 or i + 1 == n:
            emit(Progress("cache", 0, i + 1, n, message=f"decoding {what} into the cache"))
    images.flush()
    del images
    np.save(part / "labels.npy", np.asarray(labels, dtype=np.int64))
    meta = {"format": FORMAT, "key": key, "classes": classes, "n_train": n_train, "shape": list(shape)}
    (part / "meta.json").write_text(json.dumps(meta))


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """float pixels in [0, 1] -> uint8; an 8-bit image's values come back exactly."""
    return np.rint(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)


# ---------------------------------------------------------------- reading


def pixel_stats(chunks: Iterable[np.ndarray]) -> tuple[float, float]:
    """Mean and (unbiased) std of all pixels in [0, 1], from float32 chunks, summed in float64
    by numpy in a fixed order: the in-RAM and memory-mapped paths get the very same numbers."""
    n, total, squares = 0, 0.0, 0.0
    for chunk in chunks:
        chunk = np.ascontiguousarray(chunk)  # numpy's summation order follows the memory layout
        n += chunk.size
        total += float(np.sum(chunk, dtype=np.float64))
        squares += float(np.sum(np.square(chunk, dtype=np.float64)))
    mean = total / n
    var = max(0.0, (squares - n * mean * mean) / max(1, n - 1))
    return mean, (var**0.5) or 1.0


STATS_CHUNK = 4096  # rows per chunk in pixel_stats, the same for both paths


def unit_float(u8: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1] (one correctly rounded division, as read_image does)."""
    return u8.astype(np.float32) / np.float32(255.0)


def normalise(t: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """float32 pixels in [0, 1] -> (t − mean) / std; the in-RAM and mapped paths both use this."""
    return t.sub_(mean).div_(std)


class MappedImages:
    """(len(rows), C, S, S) float32 images, row i being `images[rows[i]]` normalised on the fly.

    Reads copy only the rows asked for. Pages the kernel maps in for them would otherwise
    stay counted in this process's resident memory until the whole file is, and it maps far
    more than the rows: whole large folios around each fault (measured on ext4 here: 52 MiB for
    64 random rows of 27 KiB). So every read releases them (MADV_DONTNEED, ~0.3 ms: they stay in
    the page cache, a later read maps them again), and resident memory stays near one batch's."""

    def __init__(
        self, images: np.ndarray, rows: np.ndarray, mean: float, std: float, device: str | torch.device = "cpu"
    ):
        self.images, self.rows, self.mean, self.std = images, np.asarray(rows, dtype=np.int64), mean, std
        self.device = torch.device(device)
        self.dtype = torch.float32

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.rows), *self.images.shape[1:]))

    def __len__(self) -> int:
        return len(self.rows)

    def dim(self) -> int:
        return self.images.ndim  # (N, C, S, S) like the tensor it stands for

    def _read(self, rows: np.ndarray) -> torch.Tensor:
        order = np.argsort(rows, kind="stable")  # in file order: sequential pages, then back in place
        u8 = np.empty((len(rows), *self.images.shape[1:]), dtype=np.uint8)
        u8[order] = self.images[rows[order]]
        self._release()
        t = torch.from_numpy(unit_float(u8))
        return normalise(t, self.mean, self.std).to(self.device)

    def _release(self) -> None:
        handle = getattr(self.images, "_mmap", None)  # None for an in-memory array (tests)
        if isinstance(handle, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
            handle.madvise(mmap.MADV_DONTNEED)

    def index_select(self, dim: int, index: torch.Tensor) -> torch.Tensor:
        assert dim == 0, "images are selected by row"
        return self._read(self.rows[index.cpu().numpy()])

    def subset(self, index: torch.Tensor | np.ndarray) -> MappedImages:
        """Rows `index` as another mapped view (no pixels read): a labelled subset, a split."""
        idx = index.cpu().numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
        return MappedImages(self.images, self.rows[idx], self.mean, self.std, self.device)

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, int | np.integer):
            return self._read(self.rows[[int(key)]])[0]
        if isinstance(key, slice):
            return self._read(self.rows[key])
        raise TypeError(f"MappedImages takes an int or a slice, not {type(key).__name__}; use index_select")

    def to(self, device) -> MappedImages:
        return MappedImages(self.images, self.rows, self.mean, self.std, device)

    def chunks(self, size: int = STATS_CHUNK):
        """float32 [0, 1] numpy chunks of `size` rows, for pixel_stats."""
        for start in range(0, len(self.rows), size):
            u8 = self.images[self.rows[start : start + size]]
            self._release()  # a pass over the whole split must not stay resident either
            yield unit_float(u8)


def take_rows(x: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    """`x[rows]` along dim 0; of a MappedImages, another mapped view (no pixels read)."""
    if isinstance(x, MappedImages):
        return cast(torch.Tensor, x.subset(rows))
    return x.index_select(0, torch.as_tensor(rows))


def row_range(x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """`x[start:stop]`: a view of a tensor; of a MappedImages, another mapped view (slicing one reads)."""
    return take_rows(x, np.arange(start, stop)) if isinstance(x, MappedImages) else x[start:stop]


def split_stats(c: CachedImages, rows: np.ndarray) -> tuple[float, float]:
    """pixel_stats of the cache's `rows` (a training split), kept in the slot beside the pixels:
    a reused cache would otherwise read its whole training split again on every load (18-99 s
    for 36,000 images at 96 px here). Keyed by the rows; a rebuilt cache is a new slot, so no
    stale entry survives. JSON keeps the floats exact, so the batches match the in-RAM path's."""
    path = c.slot / "stats.json"
    key = hashlib.sha256(np.asarray(rows, dtype=np.int64).tobytes()).hexdigest()[:32]
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        mean, std = known[key]
        return float(mean), float(std)
    mean, std = pixel_stats(MappedImages(c.images, rows, 0.0, 1.0).chunks())
    try:  # a read-only cache folder still works, it only computes the statistics each time
        part = path.with_name(f"stats.{os.getpid()}.part")
        part.write_text(json.dumps({**known, key: [mean, std]}))
        part.replace(path)
    except OSError:
        pass
    return mean, std
