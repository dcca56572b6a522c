"""Label budgets and transfer sets: which training images a run may read the labels of.

A budget (`LabelConfig.labels` in total, or `per_class`) draws a stratified labelled
subset of the training split from its own seed. The other training images become
the transfer set *as inputs only*: `training_set` hands the engine their pixels and
never their labels, so nothing downstream can leak them (tests/test_labels.py
poisons the hidden labels and checks that a run is bit-identical). Extra unlabeled
images may come from a folder (`folder:PATH`), resized and normalised like the dataset.

A run with a transfer set steps through a `StepPlan`: each step takes labelled rows
and transfer rows in a fixed ratio, and an epoch is one pass over the larger of the
two streams. A teacher or baseline trained on the same budget follows the same plan
without the transfer rows, so it takes the same steps over the same labelled batches.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from kd_core.config import LabelConfig
from kd_core.errors import ConfigError, DataError
from kd_core.train.data import Dataset
from kd_core.train.imagecache import row_range, take_rows

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
MAX_LISTED_BAD = 5  # bad files named in one error message; the rest are counted


@dataclass(frozen=True)
class TransferSource:
    rest: bool  # the training split outside the labelled subset, labels hidden
    folder: str | None  # a folder of images without labels


def parse_transfer(spec: str) -> TransferSource:
    """`rest`, `none`, `folder:PATH` or `rest+folder:PATH` (the path may hold any character)."""
    text = spec.strip()
    rest = text == "rest" or text.startswith("rest+")
    tail = text[len("rest+") :] if text.startswith("rest+") else text
    if text in ("rest", "none", ""):
        return TransferSource(rest=text == "rest", folder=None)
    if tail.startswith("folder:") and tail[len("folder:") :].strip():
        return TransferSource(rest=rest, folder=tail[len("folder:") :].strip())
    raise ConfigError(
        f"unknown transfer set '{spec}'. Use rest (the unlabelled rest of the training split), none, "
        "folder:PATH (images without class folders) or rest+folder:PATH."
    )


def validate_labels(cfg: LabelConfig) -> None:
    """The checks that need no data: run before anything is stored."""
    if cfg.labels < 0 or cfg.per_class < 0:
        raise ConfigError(f"a label budget must be 0 (all labels) or positive, got {cfg.labels or cfg.per_class}.")
    if cfg.labels > 0 and cfg.per_class > 0:
        raise ConfigError("give a total label budget or a per-class one, not both.")
    if not (math.isfinite(cfg.transfer_ratio) and cfg.transfer_ratio > 0):
        raise ConfigError(f"the transfer ratio must be a positive number, got {cfg.transfer_ratio}.")
    parse_transfer(cfg.transfer)


def has_transfer(cfg: LabelConfig) -> bool:
    """Whether a student with this config sees images without labels."""
    source = parse_transfer(cfg.transfer)
    return bool(source.folder) or (source.rest and cfg.budgeted)


# ---------------------------------------------------------------- the labelled subset


def class_quotas(counts: np.ndarray, total: int) -> np.ndarray:
    """Labels per class for a total budget: in proportion to the class sizes, rounded by
    largest remainder (ties to the lower class index), and at least one per class."""
    k = len(counts)
    if total < k:
        raise ConfigError(f"a budget of {total} labels cannot cover {k} classes; give at least {k}.")
    share = counts * (total / counts.sum())
    quota = np.floor(share).astype(np.int64)
    order = np.lexsort((np.arange(k), -(share - quota)))  # largest remainder first
    quota[order[: total - quota.sum()]] += 1
    while (quota == 0).any():  # a tiny class rounded to nothing: take one from the largest quota
        quota[np.argmax(quota)] -= 1
        quota[np.argmin(quota)] += 1
    return quota


def draw_labelled(y: np.ndarray, cfg: LabelConfig, classes: list[str] | None = None) -> np.ndarray:
    """Sorted indices of the labelled subset of `y` (the training split's labels).

    Each class is shuffled once by `label_seed` and its first quota taken, so for one
    seed a larger per-class budget contains every smaller one."""
    y = np.asarray(y)
    if not cfg.budgeted:
        return np.arange(len(y))
    labels_present = np.unique(y)
    counts = np.asarray([(y == c).sum() for c in labels_present])
    if cfg.per_class > 0:
        small = int(np.argmin(counts))
        if cfg.per_class > counts[small]:
            name = classes[labels_present[small]] if classes else str(labels_present[small])
            raise ConfigError(
                f"{cfg.per_class} labels per class is more than class '{name}' has in the training split "
                f"({counts[small]}); give at most {counts[small]}."
            )
        quota = np.full(len(counts), cfg.per_class)
    else:
        if cfg.labels > len(y):
            raise ConfigError(
                f"a budget of {cfg.labels:,} labels exceeds the {len(y):,} training images; "
                "give fewer, or 0 for all of them."
            )
        quota = class_quotas(counts, cfg.labels)
    rng = np.random.default_rng(cfg.label_seed)
    picked = [rng.permutation(np.flatnonzero(y == c))[:q] for c, q in zip(labels_present, quota)]
    return np.sort(np.concatenate(picked))


def fingerprint(idx: np.ndarray) -> str:
    """A short hash of an index set: equal for runs that saw exactly the same labels."""
    return hashlib.sha256(np.asarray(idx, dtype=np.int64).tobytes()).hexdigest()[:12]


# ---------------------------------------------------------------- unlabeled folders


def image_files(path: Path) -> list[Path]:
    """Image files anywhere under `path`, by suffix, in a fixed order."""
    if not path.is_dir():
        raise DataError(f"transfer folder '{path}' does not exist or is not a folder.")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"transfer folder '{path}' holds no images ({', '.join(IMAGE_SUFFIXES)}).")
    return files


def _listing(path: Path) -> tuple:
    """What the folder cache is keyed by: a file changed, added or removed loads it again."""
    return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in image_files(path))


@lru_cache(maxsize=4)
def _load_folder(listing: tuple, shape: tuple[int, int, int], mean: float, std: float) -> torch.Tensor:
    from PIL import Image
    from torchvision import transforms

    c, h, w = shape
    tf = transforms.Compose([transforms.Resize((h, w)), transforms.ToTensor()])
    mode = "L" if c == 1 else "RGB"
    images, bad = [], []
    for name, _, _ in listing:
        try:
            with Image.open(name) as img:
                images.append(tf(img.convert(mode)))
        except Exception as err:  # PIL.UnidentifiedImageError, truncated files, OSError
            bad.append(f"{name} ({type(err).__name__}: {err})")
    if bad:
        more = f" and {len(bad) - MAX_LISTED_BAD} more" if len(bad) > MAX_LISTED_BAD else ""
        raise DataError(
            f"{len(bad)} of {len(listing)} files in the transfer folder could not be read as images: "
            f"{'; '.join(bad[:MAX_LISTED_BAD])}{more}. Remove or replace them."
        )
    return ((torch.stack(images) - mean) / std).contiguous()  # (N, C, H, W) float32


def load_unlabelled_folder(path: str | Path, data: Dataset) -> torch.Tensor:
    """The folder's images as (N, C, H, W), resized to the dataset's side and channels
    and normalised with its mean and std. Raises DataError naming every bad file."""
    c = data.input_shape[0]
    if c not in (1, 3):
        raise DataError(f"a transfer folder needs 1- or 3-channel data; {data.name} has {c} channels.")
    listing = _listing(Path(path).expanduser())
    return _load_folder(listing, tuple(data.input_shape), float(data.mean), float(data.std))


def count_folder_images(path: str | Path) -> int:
    return len(image_files(Path(path).expanduser()))


# ---------------------------------------------------------------- what the engine trains on


@dataclass
class TrainingSet:
    """The labelled rows and the transfer inputs of one run, in one tensor; never the hidden labels."""

    inputs: torch.Tensor  # (N_l + N_t, C, H, W): the labelled rows first, then the transfer rows
    y: torch.Tensor  # (N_l,) labels of the first N_l rows
    labelled_idx: np.ndarray  # where the labelled rows sit in the training split

    @property
    def n_labelled(self) -> int:
        return len(self.y)

    def head(self, n: int) -> torch.Tensor:
        """The first `n` rows of `inputs`, as a view (a memory-mapped split stays mapped)."""
        return self.inputs if n == len(self.inputs) else row_range(self.inputs, 0, n)

    @property
    def x(self) -> torch.Tensor:  # (N_l, C, H, W)
        return self.head(self.n_labelled)

    @property
    def transfer_x(self) -> torch.Tensor:  # (N_t, C, H, W), a view; N_t may be 0
        return row_range(self.inputs, self.n_labelled, len(self.inputs))

    @property
    def n_transfer(self) -> int:  # N_t, without reading a memory-mapped split
        return len(self.inputs) - self.n_labelled

    def report(self, n_transfer: int | None = None, used: int | None = None) -> dict:
        """What the store keeps with the run: the subset's size, classes and fingerprint,
        the transfer set the steps were planned by (`n_transfer`, else the one held) and
        how many of its rows the run drew from (`used`; 0 for a baseline or a teacher)."""
        held = self.n_transfer
        return {
            "labelled": self.n_labelled,
            "per_class": torch.bincount(self.y).tolist(),
            "subset": fingerprint(self.labelled_idx),
            "transfer": held if n_transfer is None else n_transfer,
            "transfer_used": held if used is None else used,
        }


def training_set(
    data: Dataset, cfg: LabelConfig, with_transfer: bool = True, labelled_idx: np.ndarray | None = None
) -> TrainingSet:
    """Split `data`'s training split by `cfg`. Without `with_transfer` (no teacher to
    imitate) the transfer set is left empty and a folder is not read.

    Which images get labels is drawn from the labels themselves (stratification, as any
    labelled-subset benchmark does); given that subset (`labelled_idx`, else drawn here),
    nothing returned depends on a label outside it."""
    validate_labels(cfg)
    idx = draw_labelled(data.train_y.numpy(), cfg, data.classes) if labelled_idx is None else labelled_idx
    rows = torch.as_tensor(idx)
    source = parse_transfer(cfg.transfer) if with_transfer else TransferSource(rest=False, folder=None)
    if not cfg.budgeted and not source.folder:  # every row labelled, nothing else: no copy
        return TrainingSet(data.train_x, data.train_y, idx)
    order = [idx]
    if source.rest and len(idx) < len(data.train_y):
        order.append(np.setdiff1d(np.arange(len(data.train_y)), idx))  # inputs only
    picked = np.concatenate(order)
    if source.folder:  # joined with the folder's pixels in RAM (a memory-mapped split is read here)
        inputs = torch.cat(
            [data.train_x.index_select(0, torch.as_tensor(picked)), load_unlabelled_folder(source.folder, data)]
        )
    else:
        inputs = take_rows(data.train_x, picked)  # a memory-mapped split stays mapped
    return TrainingSet(inputs, data.train_y.index_select(0, rows), idx)


def transfer_count(data: Dataset, cfg: LabelConfig) -> int:
    """How many transfer images `cfg` gives, without decoding a folder's images."""
    source = parse_transfer(cfg.transfer)
    n = len(draw_labelled(data.train_y.numpy(), cfg, data.classes))
    rest = len(data.train_y) - n if source.rest else 0
    return rest + (count_folder_images(source.folder) if source.folder else 0)


def check_labels(data: Dataset, cfg: LabelConfig) -> None:
    """Refuse, before anything is stored, a budget the data cannot give or a transfer folder
    with a bad image (read once: `training_set` then finds it in the cache)."""
    label_counts(data, cfg)
    folder = parse_transfer(cfg.transfer).folder
    if folder:
        load_unlabelled_folder(folder, data)


def label_counts(data: Dataset, cfg: LabelConfig) -> dict:
    """The dashboard's live count: labelled and transfer images for a budget."""
    validate_labels(cfg)
    return {
        "labelled": len(draw_labelled(data.train_y.numpy(), cfg, data.classes)),
        "transfer": transfer_count(data, cfg),
        "train": len(data.train_y),
    }


# ---------------------------------------------------------------- steps


@dataclass(frozen=True)
class StepPlan:
    labelled_rows: int  # labelled rows per step
    transfer_rows: int  # transfer rows per step; 0 without a transfer set
    steps_per_epoch: int


def step_plan(n_labelled: int, n_transfer: int, batch_size: int, ratio: float) -> StepPlan:
    """Rows per step and steps per epoch. Without a transfer set, plain epochs over the
    labelled rows; with one, `batch_size` rows split labelled : transfer = 1 : ratio
    (each side at least one), and an epoch passes once over the longer stream."""
    if n_transfer == 0 or batch_size < 2:
        return StepPlan(batch_size, 0, math.ceil(n_labelled / batch_size))
    t_rows = min(batch_size - 1, max(1, round(batch_size * ratio / (1 + ratio))))
    l_rows = batch_size - t_rows
    return StepPlan(l_rows, t_rows, math.ceil(max(n_labelled / l_rows, n_transfer / t_rows)))
