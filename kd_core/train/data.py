"""Datasets as in-memory, normalised tensors with a fixed train/val/test split.

Every loader ends in the same `Dataset`: float32 inputs shaped (N, C, H, W),
int64 labels, class names. Training draws batches by index from these tensors,
so no per-sample Python transform runs in the training loop.
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kd_core.config import DataConfig
from kd_core.errors import ConfigError, DataError
from kd_core.train.image_folder import load_image_folder

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


def load_dataset(cfg: DataConfig) -> Dataset:
    """Load `cfg.dataset` into memory, normalised and split. Raises DataError
    (ConfigError for a validation fraction outside (0, 1))."""
    name = cfg.dataset.strip()
    if not 0.0 < cfg.val_fraction < 1.0:
        raise ConfigError(f"validation fraction must be between 0 and 1 (exclusive), got {cfg.val_fraction}.")
    if name.startswith("folder:"):
        x, y, classes, x_test, y_test = _load_folder(Path(name[len("folder:") :]).expanduser(), cfg.image_size)
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
    mean, std = train_x.mean().item(), train_x.std().item() or 1.0

    def norm(t: torch.Tensor) -> torch.Tensor:
        return ((t - mean) / std).contiguous()

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


def _load_cifar10(cfg: DataConfig):
    import torchvision.datasets as tvd

    root = Path(cfg.root).expanduser()
    try:
        train = tvd.CIFAR10(str(root), train=True, download=cfg.download)
        test = tvd.CIFAR10(str(root), train=False, download=cfg.download)
    except Exception as err:
        raise _torchvision_error(
            "cifar10", root / "cifar-10-batches-py", ("data_batch_1..5", "test_batch", "batches.meta"), err
        ) from err
    hwc_to_chw = lambda a: (np.asarray(a).transpose(0, 3, 1, 2) / np.float32(255.0)).astype(np.float32)  # noqa: E731
    return (
        hwc_to_chw(train.data),
        np.asarray(train.targets),
        list(train.classes),
        hwc_to_chw(test.data),
        np.asarray(test.targets),
    )


def _load_folder(path: Path, image_size: int):
    """PATH/<class>/<image>, resized once, at load time (image_folder.py: hidden entries, links,
    transparency and 16-bit images)."""
    if not path.is_dir():
        raise DataError(f"image folder '{path}' does not exist or is not a folder.")
    if image_size < 4 or image_size > 512:
        raise DataError(f"image size {image_size} is out of range; use 4 to 512 pixels.")
    images, labels, classes = load_image_folder(path, image_size)
    return images, labels, classes, None, None


LOADERS: dict[str, Callable] = {
    "digits": _load_digits,
    "mnist": lambda cfg: _mnist_like("MNIST", "mnist", cfg),
    "fashion-mnist": lambda cfg: _mnist_like("FashionMNIST", "fashion-mnist", cfg),
    "cifar10": _load_cifar10,
}
