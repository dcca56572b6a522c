"""Each dataset loader through its real code path, on real (small) files."""

from __future__ import annotations

import re
import struct
from collections import Counter

import numpy as np
import pytest
import torch

from helpers import write_idx_labels, write_image_folder, write_mnist_like
from kd_core.config import DataConfig
from kd_core.errors import ConfigError, DataError
from kd_core.train.data import DEBIAN_FASHION_DIR, FASHION_CLASSES, IDX_FILES, load_dataset

MNIST_CLASSES = [
    "0 - zero",
    "1 - one",
    "2 - two",
    "3 - three",
    "4 - four",
    "5 - five",
    "6 - six",
    "7 - seven",
    "8 - eight",
    "9 - nine",
]


def raw_pixels(data, split: str, scale: float) -> np.ndarray:
    """Undo the normalisation: back to the loader's integer pixel values, one row per sample."""
    x = getattr(data, f"{split}_x").double() * data.std + data.mean
    return np.rint(x.numpy() * scale).astype(np.uint8).reshape(len(x), -1)


def rows_with_labels(pixels: np.ndarray, labels) -> Counter:
    return Counter((row.tobytes(), int(y)) for row, y in zip(pixels, np.asarray(labels)))


def assert_normalised(data) -> None:
    assert abs(data.train_x.mean().item()) < 1e-4
    assert data.train_x.std().item() == pytest.approx(1.0, abs=1e-4)
    for split in ("train", "val", "test"):
        x, y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == data.train_x.shape[1:] and len(x) == len(y)


def assert_disjoint(a: Counter, b: Counter) -> None:
    assert not set(a) & set(b)


# ---------------------------------------------------------------- digits


def test_digits_split_sizes_shapes_and_classes(digits):
    from sklearn.datasets import load_digits

    total = len(load_digits().target)
    assert digits.input_shape == (1, 8, 8)
    assert digits.classes == [str(k) for k in range(10)]
    n_test = int(np.ceil(0.2 * total))
    n_val = int(np.ceil(0.1 * (total - n_test)))
    assert (len(digits.train_y), len(digits.val_y), len(digits.test_y)) == (total - n_test - n_val, n_val, n_test)
    assert digits.info()["train"] == len(digits.train_y) and digits.info()["num_classes"] == 10
    assert_normalised(digits)
    # Stratified: each held-out split holds every class in its overall proportion to within one
    # sample (two for train, which is what both splits leave).
    overall = Counter(load_digits().target.tolist())
    for y, slack in ((digits.train_y, 2.0), (digits.val_y, 1.0), (digits.test_y, 1.0)):
        counts = Counter(y.tolist())
        for k, n in overall.items():
            assert abs(counts[k] - n * len(y) / total) <= slack, (k, counts[k], n * len(y) / total)


def test_digits_splits_partition_the_original_samples(digits):
    from sklearn.datasets import load_digits

    d = load_digits()
    original = rows_with_labels(d.images.reshape(len(d.target), -1).astype(np.uint8), d.target)
    parts = [rows_with_labels(raw_pixels(digits, s, 16.0), getattr(digits, f"{s}_y")) for s in ("train", "val", "test")]
    # Every (image, label) exactly once overall; since all three splits are undone with the
    # training split's mean and std, this also shows val and test were normalised with them.
    assert parts[0] + parts[1] + parts[2] == original


def test_split_is_fixed_by_split_seed_not_training_seed():
    a = load_dataset(DataConfig("digits", split_seed=0))
    b = load_dataset(DataConfig("digits", split_seed=0))
    c = load_dataset(DataConfig("digits", split_seed=1))
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.val_x, c.val_x)


def test_val_fraction_sets_validation_size():
    data = load_dataset(DataConfig("digits", val_fraction=0.25))
    n_rest = len(data.train_y) + len(data.val_y)
    assert len(data.val_y) == int(np.ceil(0.25 * n_rest))


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5, -0.1])
def test_val_fraction_out_of_range_is_a_clear_error(fraction):
    with pytest.raises(ConfigError, match="validation fraction"):
        load_dataset(DataConfig("digits", val_fraction=fraction))


def test_val_fraction_that_leaves_no_training_data_is_a_clear_error(tmp_path):
    root = write_image_folder(tmp_path / "imgs", classes=("a", "b"), per_class=3)
    with pytest.raises(DataError, match=re.escape("cannot hold out 0.95 of 4 samples")):
        load_dataset(DataConfig(f"folder:{root}", val_fraction=0.95))


def test_unknown_dataset_names_the_choices():
    with pytest.raises(DataError) as err:
        load_dataset(DataConfig("imagenet-22k"))
    text = str(err.value)
    assert "imagenet-22k" in text
    for name in ("digits", "mnist", "fashion-mnist", "cifar10", "folder:PATH"):
        assert name in text


# ---------------------------------------------------------------- MNIST-style IDX files


@pytest.mark.parametrize(
    "name, folder, classes", [("mnist", "MNIST", MNIST_CLASSES), ("fashion-mnist", "FashionMNIST", FASHION_CLASSES)]
)
def test_idx_datasets_load_from_local_files(tmp_path, name, folder, classes):
    written = write_mnist_like(tmp_path, folder, n_train=100, n_test=30)
    data = load_dataset(DataConfig(name, root=str(tmp_path), download=False))
    assert data.name == name and data.classes == classes
    assert data.input_shape == (1, 28, 28)
    assert (len(data.train_y) + len(data.val_y), len(data.test_y)) == (100, 30)
    assert len(data.val_y) == 10
    assert_normalised(data)
    train_images, train_labels = written["train"]
    test_images, test_labels = written["t10k"]
    train, val = (rows_with_labels(raw_pixels(data, s, 255.0), getattr(data, f"{s}_y")) for s in ("train", "val"))
    assert_disjoint(train, val)
    assert train + val == rows_with_labels(train_images.reshape(100, -1), train_labels)
    # The test split is the t10k file, in its order, labels included.
    np.testing.assert_array_equal(raw_pixels(data, "test", 255.0), test_images.reshape(30, -1))
    np.testing.assert_array_equal(data.test_y.numpy(), test_labels)


def test_missing_idx_files_say_which_files_and_where(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset(DataConfig("mnist", root=str(tmp_path), download=False))
    text = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in text
    assert all(f in text for f in IDX_FILES)


def test_corrupt_idx_file_is_a_data_error(tmp_path):
    write_mnist_like(tmp_path, "MNIST")
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x09\x07garbage")
    with pytest.raises(DataError, match="mnist"):
        load_dataset(DataConfig("mnist", root=str(tmp_path), download=False))


def test_wrong_label_dtype_in_idx_is_a_data_error(tmp_path):
    write_mnist_like(tmp_path, "MNIST")
    # An IDX file whose header says int32 (type 0x0C), where labels must be ubyte.
    path = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    path.write_bytes(struct.pack(">II", 0x0C01, 30) + np.arange(30, dtype=">i4").tobytes())
    with pytest.raises(DataError):
        load_dataset(DataConfig("mnist", root=str(tmp_path), download=False))
    write_idx_labels(path, np.arange(30) % 10)  # the repaired file loads again
    assert len(load_dataset(DataConfig("mnist", root=str(tmp_path), download=False)).test_y) == 30


@pytest.fixture(scope="session")
def debian_fashion(tmp_path_factory):
    if not all((DEBIAN_FASHION_DIR / f"{f}.gz").exists() for f in IDX_FILES):
        pytest.skip(f"Debian's dataset-fashion-mnist is not installed at {DEBIAN_FASHION_DIR}")
    root = tmp_path_factory.mktemp("fashion-root")
    return root, load_dataset(DataConfig("fashion-mnist", root=str(root), download=False))


@pytest.mark.slow
def test_debian_fashion_mnist_is_found_offline(debian_fashion):
    root, data = debian_fashion
    assert all((root / "FashionMNIST" / "raw" / f).is_file() for f in IDX_FILES)
    assert not list((root / "FashionMNIST" / "raw").glob("*.part"))
    assert data.classes == FASHION_CLASSES and data.num_classes == 10
    assert data.input_shape == (1, 28, 28)
    assert len(data.train_y) + len(data.val_y) == 60000 and len(data.test_y) == 10000
    assert len(data.val_y) == 6000
    train_counts = Counter(data.train_y.tolist() + data.val_y.tolist())
    assert train_counts == {k: 6000 for k in range(10)}
    assert Counter(data.test_y.tolist()) == {k: 1000 for k in range(10)}
    assert_normalised(data)
    pixels = raw_pixels(data, "test", 255.0)
    assert pixels.min() == 0 and pixels.max() == 255  # uint8 images scaled by 1/255, then normalised


# ---------------------------------------------------------------- image folders


def test_image_folder_loads_with_classes_and_pixels(tmp_path):
    root = write_image_folder(tmp_path / "imgs", per_class=10)
    data = load_dataset(DataConfig(f"folder:{root}", image_size=8))
    assert data.classes == ["cat", "dog", "owl"]
    assert data.input_shape == (3, 8, 8)
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (21, 3, 6)
    assert_normalised(data)
    seen = []
    for split in ("train", "val", "test"):
        x = getattr(data, split + "_x").double() * data.std + data.mean  # back to [0, 1]
        for img, label in zip(x, getattr(data, split + "_y").tolist()):
            r, g, b = (round(v) for v in (img * 255).mean(dim=(1, 2)).tolist())
            assert torch.allclose(img * 255, torch.tensor([r, g, b], dtype=torch.float64)[:, None, None], atol=1e-3)
            assert (r, b) == (80 * label, 7)  # the image's colour encodes its class
            seen.append((split, label, g // 10))
    ids = [(label, i) for _, label, i in seen]
    assert sorted(ids) == [(k, i) for k in range(3) for i in range(10)]  # each image exactly once


def test_missing_image_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(DataConfig(f"folder:{tmp_path / 'nope'}"))


def test_empty_class_folder_is_named(tmp_path):
    root = write_image_folder(tmp_path / "imgs", classes=("a", "b"), per_class=3)
    (root / "empty").mkdir()
    with pytest.raises(DataError) as err:
        load_dataset(DataConfig(f"folder:{root}"))
    assert "empty" in str(err.value) and "sub-folder" in str(err.value)


def test_folder_without_class_folders(tmp_path):
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="sub-folder"):
        load_dataset(DataConfig(f"folder:{tmp_path / 'flat'}"))


def test_single_class_folder_is_refused(tmp_path):
    root = write_image_folder(tmp_path / "imgs", classes=("only",), per_class=6)
    with pytest.raises(DataError, match="at least 2"):
        load_dataset(DataConfig(f"folder:{root}"))


@pytest.mark.slow
def test_unreadable_image_is_named(tmp_path):
    root = write_image_folder(tmp_path / "imgs", classes=("a", "b"), per_class=4)
    bad = root / "b" / "broken.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=re.escape("broken.png")):
        load_dataset(DataConfig(f"folder:{root}"))


@pytest.mark.parametrize("size", [2, 1000])
def test_image_size_out_of_range(tmp_path, size):
    root = write_image_folder(tmp_path / "imgs", classes=("a", "b"), per_class=3)
    with pytest.raises(DataError, match="image size"):
        load_dataset(DataConfig(f"folder:{root}", image_size=size))


def test_too_few_images_to_split(tmp_path):
    root = write_image_folder(tmp_path / "imgs", classes=("a", "b"), per_class=2)
    with pytest.raises(DataError, match="at least 5"):
        load_dataset(DataConfig(f"folder:{root}"))
