"""Datasets as normalised images with a fixed train/val/test split.

Every loader ends in the same `Dataset`: float32 inputs shaped (N, C, H, W),
int64 labels, class names. Training draws batches by index from these inputs,
so no per-sample Python transform runs in the training loop. Small datasets are
float tensors in RAM; an image folder (or CIFAR-10) too large for that is decoded
once into an on-disk uint8 cache and read through `imagecache.MappedImages`
(`DataConfig.storage`: auto by size, or forced).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch

from kd_core.config import DataConfig
from kd_core.errors import ConfigError, DataError
from kd_core.events import ProgressSink, ignore
from kd_core.train.image_folder import load_image_folder, read_image, scan
from kd_core.train.imagecache import (
    STATS_CHUNK,
    CachedImages,
    MappedImages,
    cached,
    files_key,
    normalise,
    pixel_stats,
    source_key,
    split_stats,
    to_uint8,
)

STORAGES = ("auto", "memory", "memmap")
# auto: images whose float32 copy would pass this are memory-mapped from the uint8 cache
AUTO_MEMMAP_BYTES = 1 << 30

DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


@dataclass
class Dataset:
    name: str
    classes: list[str]
    train_x: torch.Tensor  # (N_train, C, H, W) float32, normalised
    train_y: torch.Tensor  # (N_train,) int64
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: float = 0.0
    std: float = 1.0

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def info(self) -> dict:
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "classes": list(self.classes),
            "train": len(self.train_y),
            "val": len(self.val_y),
            "test": len(self.test_y),
        }


def dataset_names() -> list[str]:
    """The built-in datasets; `folder:PATH` is accepted too."""
    return list(LOADERS)


def load_dataset(cfg: DataConfig, emit: ProgressSink = ignore) -> Dataset:
    """Load `cfg.dataset`, normalised and split; a first memory-mapped load emits "cache"
    progress records while it decodes. Raises DataError (ConfigError for a validation
    fraction outside (0, 1) or an unknown storage)."""
    name = cfg.dataset.strip()
    if not 0.0 < cfg.val_fraction < 1.0:
        raise ConfigError(f"validation fraction must be between 0 and 1 (exclusive), got {cfg.val_fraction}.")
    if cfg.storage not in STORAGES:
        raise ConfigError(f"unknown storage '{cfg.storage}'; use {', '.join(STORAGES)}.")
    if name.startswith("folder:"):
        path = _folder_path(name, cfg.image_size)
        classes, samples = scan(path)
        if _mapped(cfg, len(samples) * 3 * cfg.image_size**2 * 4):
            return _split_mapped(name, _folder_cache(path, classes, samples, cfg, emit), cfg)
        x, y, classes, x_test, y_test = _load_folder(path, cfg.image_size)
    elif name == "cifar10" and _mapped(cfg, 60_000 * 3 * 32 * 32 * 4):
        return _split_mapped(name, _cifar_cache(cfg, emit), cfg)
    elif name in LOADERS:
        x, y, classes, x_test, y_test = LOADERS[name](cfg)
    else:
        known = ", ".join([*dataset_names(), "folder:PATH"])
        raise DataError(f"unknown dataset '{name}'. Choose one of: {known}.")
    return _split_and_normalise(name, x, y, classes, x_test, y_test, cfg)


# ---------------------------------------------------------------- splitting


def _stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    try:
        keep, held = train_test_split(idx, test_size=fraction, random_state=seed, stratify=y)
    except ValueError:  # a class too small to stratify: fall back to a plain random split
        try:
            keep, held = train_test_split(idx, test_size=fraction, random_state=seed)
        except ValueError as err:  # too few samples to hold out this share and keep some
            raise DataError(f"cannot hold out {fraction:g} of {len(y)} samples: {err}") from err
    return np.sort(keep), np.sort(held)


def _split_and_normalise(name, x, y, classes, x_test, y_test, cfg: DataConfig) -> Dataset:
    """x: uint8 or float (N, C, H, W); x_test None means carve a test split out of x."""
    y = np.asarray(y)
    if len(y) < 5:
        raise DataError(
            f"dataset '{name}' has only {len(y)} samples; at least 5 are needed "
            "to split it into train, validation and test."
        )
    if x_test is None:
        keep, held = _stratified_split(y, 0.2, cfg.split_seed)
        x, y, x_test, y_test = x[keep], y[keep], x[held], y[held]
    train, val = _stratified_split(y, cfg.val_fraction, cfg.split_seed)
    x = torch.as_tensor(np.asarray(x)).float()
    x_test = torch.as_tensor(np.asarray(x_test)).float()
    train_x, val_x = x[train], x[val]
    mean, std = pixel_stats(train_x[i : i + STATS_CHUNK].numpy() for i in range(0, len(train_x), STATS_CHUNK))

    def norm(t: torch.Tensor) -> torch.Tensor:
        return normalise(t.clone(), mean, std).contiguous()

    as_long = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.int64)  # noqa: E731
    return Dataset(
        name=name,
        classes=list(classes),
        train_x=norm(train_x),
        train_y=as_long(y[train]),
        val_x=norm(val_x),
        val_y=as_long(y[val]),
        test_x=norm(x_test),
        test_y=as_long(y_test),
        mean=mean,
        std=std,
    )


# ---------------------------------------------------------------- loaders


def _load_digits(cfg: DataConfig):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.float32)[:, None, :, :] / 16.0  # (1797, 1, 8, 8)
    return x, d.target, [str(c) for c in d.target_names], None, None


def _torchvision_error(name: str, folder: Path, files: tuple[str, ...], err: Exception) -> DataError:
    listing = ", ".join(files)
    return DataError(
        f"could not load '{name}': {err}. Without a network connection, put the files "
        f"{listing} into {folder} (or run once with network access so torchvision downloads them)."
    )


def _install_debian_fashion(raw: Path) -> None:
    """Unpack Debian's dataset-fashion-mnist IDX files where torchvision looks for them."""
    if all((raw / f).exists() for f in IDX_FILES):
        return
    if not all((DEBIAN_FASHION_DIR / f"{f}.gz").exists() for f in IDX_FILES):
        return
    raw.mkdir(parents=True, exist_ok=True)
    for f in IDX_FILES:
        target = raw / f
        if not target.exists():
            part = Path(f"{target}.{os.getpid()}.part")  # per process: two may unpack at once
            with gzip.open(DEBIAN_FASHION_DIR / f"{f}.gz", "rb") as src, open(part, "wb") as dst:
                shutil.copyfileobj(src, dst)
            part.replace(target)


def _mnist_like(cls_name: str, label: str, cfg: DataConfig):
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    root = Path(cfg.root).expanduser()
    raw = root / cls_name / "raw"
    if cls_name == "FashionMNIST":
        _install_debian_fashion(raw)
    try:
        train = cls(str(root), train=True, download=cfg.download)
        test = cls(str(root), train=False, download=cfg.download)
    except Exception as err:  # torchvision raises RuntimeError / URLError / OSError
        raise _torchvision_error(label, raw, IDX_FILES, err) from err
    x = train.data.numpy()[:, None]  # (60000, 1, 28, 28) uint8
    x_test = test.data.numpy()[:, None]
    scale = np.float32(255.0)
    return (
        (x / scale).astype(np.float32),
        train.targets.numpy(),
        list(train.classes),
        (x_test / scale).astype(np.float32),
        test.targets.numpy(),
    )


def _cifar10_sets(cfg: DataConfig):
    """torchvision's CIFAR10 train and test sets: from the standard python batches in
    ROOT/cifar-10-batches-py (checked against their published MD5 sums), else downloaded."""
    import torchvision.datasets as tvd

    root = Path(cfg.root).expanduser()
    try:
        return tvd.CIFAR10(str(root), train=True, download=cfg.download), tvd.CIFAR10(
            str(root), train=False, download=cfg.download
        )
    except Exception as err:
        raise _torchvision_error(
            "cifar10", root / "cifar-10-batches-py", ("data_batch_1..5", "test_batch", "batches.meta"), err
        ) from err


def _load_cifar10(cfg: DataConfig):
    train, test = _cifar10_sets(cfg)
    hwc_to_chw = lambda a: (np.asarray(a).transpose(0, 3, 1, 2) / np.float32(255.0)).astype(np.float32)  # noqa: E731
    return (
        hwc_to_chw(train.data),
        np.asarray(train.targets),
        list(train.classes),
        hwc_to_chw(test.data),
        np.asarray(test.targets),
    )


def _folder_path(name: str, image_size: int) -> Path:
    path = Path(name[len("folder:") :]).expanduser()
    if not path.is_dir():
        raise DataError(f"image folder '{path}' does not exist or is not a folder.")
    if image_size < 4 or image_size > 512:
        raise DataError(f"image size {image_size} is out of range; use 4 to 512 pixels.")
    return path


def _load_folder(path: Path, image_size: int):
    """PATH/<class>/<image>, resized once, at load time (image_folder.py: hidden entries, links,
    transparency and 16-bit images)."""
    images, labels, classes = load_image_folder(path, image_size)
    return images, labels, classes, None, None


# ---------------------------------------------------------------- memory-mapped


def _mapped(cfg: DataConfig, float_bytes: int) -> bool:
    return cfg.storage == "memmap" or (cfg.storage == "auto" and float_bytes > AUTO_MEMMAP_BYTES)


def _cache_dir(cfg: DataConfig) -> Path:
    return Path(cfg.cache_dir or Path(cfg.root) / "cache").expanduser()


def _folder_cache(path: Path, classes: list[str], samples, cfg: DataConfig, emit: ProgressSink) -> CachedImages:
    """The folder's uint8 cache at cfg.image_size px, one slot per folder and size."""
    if len(classes) < 2:
        raise DataError(f"image folder '{path}' has {len(classes)} class folder(s); at least 2 are needed.")
    size = cfg.image_size
    where = hashlib.sha256(str(path.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:12]
    slot = _cache_dir(cfg) / f"folder-{path.name}-{where}-{size}px"
    labels = np.asarray([k for _, k in samples])
    return cached(
        slot, files_key(path, samples, size), (len(samples), 3, size, size), labels, classes, len(samples),
        lambda i: to_uint8(read_image(samples[i][0], size)), emit, f"{len(samples)} images of {path.name}",
    )  # fmt: skip


def _cifar_cache(cfg: DataConfig, emit: ProgressSink) -> CachedImages:
    """CIFAR-10's train and test batches as one uint8 cache (rows from 50,000 on are the test split)."""
    train, test = _cifar10_sets(cfg)
    images = np.concatenate([np.asarray(train.data), np.asarray(test.data)])  # (60000, 32, 32, 3)
    labels = np.concatenate([np.asarray(train.targets), np.asarray(test.targets)])
    folder = Path(train.root) / train.base_folder
    key = source_key(f"{f.name}|{f.stat().st_size}|{f.stat().st_mtime_ns}" for f in sorted(folder.iterdir()))
    return cached(
        _cache_dir(cfg) / "cifar10-32px", key, (len(images), 3, 32, 32), labels, list(train.classes),
        len(train.data), lambda i: images[i].transpose(2, 0, 1), emit, "CIFAR-10",
    )  # fmt: skip


def _split_mapped(name: str, c: CachedImages, cfg: DataConfig) -> Dataset:
    """The same splits and normalisation as `_split_and_normalise`, over the cache's rows."""
    if len(c.labels) < 5:
        raise DataError(f"dataset '{name}' has only {len(c.labels)} samples; at least 5 are needed.")
    if c.n_train == len(c.labels):  # no test split of its own: carve one, as for an in-RAM folder
        keep, test = _stratified_split(c.labels, 0.2, cfg.split_seed)
    else:
        keep, test = np.arange(c.n_train), np.arange(c.n_train, len(c.labels))
    train, val = _stratified_split(c.labels[keep], cfg.val_fraction, cfg.split_seed)
    rows = {"train": keep[train], "val": keep[val], "test": test}
    mean, std = split_stats(c, rows["train"])
    # A MappedImages stands in for the split's tensor: the engine only takes len, shape, slices,
    # index_select and .to from it, all of which it answers by reading rows from the cache.
    x = {k: cast(torch.Tensor, MappedImages(c.images, r, mean, std)) for k, r in rows.items()}
    y = {k: torch.as_tensor(c.labels[r], dtype=torch.int64) for k, r in rows.items()}
    return Dataset(name, list(c.classes), x["train"], y["train"], x["val"], y["val"], x["test"], y["test"], mean, std)


LOADERS: dict[str, Callable] = {
    "digits": _load_digits,
    "mnist": lambda cfg: _mnist_like("MNIST", "mnist", cfg),
    "fashion-mnist": lambda cfg: _mnist_like("FashionMNIST", "fashion-mnist", cfg),
    "cifar10": _load_cifar10,
}
