"""Image folders as real folders are: hidden entries, link loops, transparency, 16-bit PNGs.
Pixel values are checked against numbers computed here from what was written."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from helpers import write_image_folder
from kd_core.config import DataConfig
from kd_core.errors import DataError
from kd_core.train.data import load_dataset
from kd_core.train.image_folder import ALPHA_BACKGROUND, load_image_folder


def test_hidden_folders_and_files_are_neither_classes_nor_images(tmp_path):
    root = write_image_folder(tmp_path / "imgs", classes=("cat", "dog"), per_class=4, size=(8, 8))
    write_image_folder(root / ".ipynb_checkpoints", classes=("cat",), per_class=3, size=(8, 8))
    (root / "cat" / ".hidden").mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(root / "cat" / ".hidden" / "x.png")
    Image.new("RGB", (8, 8), (1, 2, 3)).save(root / "cat" / "._resource-fork.png")
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    _, labels, classes = load_image_folder(root, 8)
    assert classes == ["cat", "dog"]
    assert np.bincount(labels).tolist() == [4, 4]


def test_a_symlink_loop_does_not_multiply_a_class(tmp_path):
    root = write_image_folder(tmp_path / "imgs", classes=("cat", "dog"), per_class=4, size=(8, 8))
    os.symlink(root / "cat", root / "cat" / "again")  # cat/again/again/... for ever
    os.symlink(root, root / "dog" / "up")  # and a way back to the top
    _, labels, classes = load_image_folder(root, 8)
    assert classes == ["cat", "dog"]
    # dog/up leads into cat/ and dog/ once more: each real folder is read once per class, so dog
    # gains cat's 4 images via the link, never the endless cat/again/again/...
    assert np.bincount(labels).tolist() == [4, 8]


def test_a_linked_class_folder_is_still_a_class(tmp_path):
    real = write_image_folder(tmp_path / "elsewhere", classes=("owl",), per_class=3, size=(8, 8))
    root = write_image_folder(tmp_path / "imgs", classes=("cat",), per_class=3, size=(8, 8))
    os.symlink(real / "owl", root / "owl")
    _, labels, classes = load_image_folder(root, 8)
    assert classes == ["cat", "owl"] and np.bincount(labels).tolist() == [3, 3]


def test_transparency_is_composited_on_white(tmp_path):
    """A fully transparent pixel is white; a half-transparent red one is red over white:
    out = α·c + (1 − α)·255, per channel (PIL's RGBA → RGB gave the hidden colour: black)."""
    root = tmp_path / "imgs"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGBA", (6, 6), (0, 0, 0, 0)).save(root / name / f"clear{i}.png")
    half = Image.new("RGBA", (6, 6), (200, 0, 0, 128))
    half.save(root / "a" / "half.png")
    images, labels, _ = load_image_folder(root, 6)
    assert ALPHA_BACKGROUND == (255, 255, 255)
    clear = images[[i for i in range(len(labels)) if i != 3]]
    np.testing.assert_allclose(clear, 1.0)  # white, not zeros
    alpha = 128 / 255
    expected = [(alpha * c + (1 - alpha) * 255) / 255 for c in (200, 0, 0)]
    np.testing.assert_allclose(images[3].mean(axis=(1, 2)), expected, atol=1 / 255)


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path):
    """Values 1000, 30000, 65535 of 65535 are 0.015, 0.458 and 1.0 (clipping made all three 1.0)."""
    root = tmp_path / "imgs"
    values = {"dim": [1000, 2000, 3000], "mid": [30000, 31000, 32000], "full": [65535, 65000, 64000]}
    for name, vs in values.items():
        (root / name).mkdir(parents=True)
        for v in vs:
            Image.fromarray(np.full((5, 5), v, dtype=np.uint16)).save(root / name / f"{v}.png")
    assert Image.open(root / "dim" / "1000.png").mode.startswith("I;16")  # really a 16-bit file
    images, labels, classes = load_image_folder(root, 5)
    for img, label in zip(images, labels):
        v = values[classes[label]]
        assert img.shape == (3, 5, 5)
        assert any(np.allclose(img, x / 65535, atol=1e-4) for x in v), (classes[label], img.mean())


def test_an_8_bit_folder_loads_as_before(tmp_path):
    """Solid RGB images keep their exact colours through the new reader (the encoding of
    conftest.write_image_folder: R = 80·class, G = 10·i, B = 7)."""
    root = write_image_folder(tmp_path / "imgs", classes=("a", "b", "c"), per_class=5, size=(9, 7))
    images, labels, _ = load_image_folder(root, 4)
    for k in range(3):
        rows = images[labels == k]
        got = sorted(tuple(round(float(c) * 255) for c in img.mean(axis=(1, 2))) for img in rows)
        assert got == [(80 * k, 10 * i, 7) for i in range(5)]


def test_the_dataset_of_a_tricky_folder_trains_end_to_end(tmp_path):
    root = write_image_folder(tmp_path / "imgs", classes=("cat", "dog"), per_class=6, size=(8, 8))
    (root / ".git").mkdir()
    os.symlink(root / "dog", root / "dog" / "loop")
    data = load_dataset(DataConfig(f"folder:{root}", image_size=8))
    assert data.classes == ["cat", "dog"] and len(data.train_y) + len(data.val_y) + len(data.test_y) == 12


def test_a_folder_with_only_hidden_class_folders_says_so(tmp_path):
    write_image_folder(tmp_path / "imgs", classes=(".hidden-only",), per_class=3)
    with pytest.raises(DataError, match="Couldn't find any class folder"):
        load_image_folder(tmp_path / "imgs", 8)
