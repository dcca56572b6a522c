"""Image folders (PATH/<class>/<image>) read into one array, robust to what real folders hold.

- Hidden entries (.DS_Store, .ipynb_checkpoints/, ._photo.png) are neither classes nor images.
- Symlinks are followed, but each real folder is read once per class: a link loop (cats/again -> cats)
  cannot multiply a class's images.
- Transparency is composited on WHITE (`ALPHA_BACKGROUND`): a transparent pixel is white, as a
  viewer shows it on a page. PIL's plain RGBA -> RGB drops alpha, so a transparent PNG became the
  colour hidden under it, usually black (all zeros).
- 16-bit greyscale images (PIL modes I;16*, I) are scaled by 1/65535, not clipped at 255.

Every image becomes 3 channels, float32 in [0, 1], (3, S, S) after a bilinear resize to S × S,
as torchvision's Resize does on PIL images.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from kd_core.errors import DataError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's list
ALPHA_BACKGROUND = (255, 255, 255)  # white, stated in the docstring and the README
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # PIL's 16-bit greyscale (I: 32-bit ints holding them)
LAYOUT_HINT = "Put each class's images in its own sub-folder, e.g. PATH/cats/1.png, PATH/dogs/2.png."


def _visible(name: str) -> bool:
    return not name.startswith(".")


def scan(path: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """(class names, [(image file, class index)]): classes are the visible sub-folders, sorted."""
    classes = sorted(e.name for e in os.scandir(path) if _visible(e.name) and e.is_dir())
    if not classes:
        raise DataError(f"image folder '{path}': Couldn't find any class folder in it. {LAYOUT_HINT}")
    samples: list[tuple[Path, int]] = []
    empty = []
    for k, name in enumerate(classes):
        files = _images(path / name)
        if not files:
            empty.append(name)
        samples += [(f, k) for f in files]
    if empty:
        raise DataError(
            f"image folder '{path}': Found no valid file for the classes {', '.join(empty)}. Supported "
            f"extensions are: {', '.join(IMG_EXTENSIONS)}. {LAYOUT_HINT}"
        )
    return classes, samples


def _images(folder: Path) -> list[Path]:
    """Visible image files under `folder`, each real (device, inode) folder walked once."""
    seen: set[tuple[int, int]] = set()
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:  # reached again through a link: a loop or a second way in
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if _visible(d))
        found += [Path(dirpath) / f for f in sorted(filenames) if _visible(f) and f.lower().endswith(IMG_EXTENSIONS)]
    return found


def read_image(path: Path, size: int) -> np.ndarray:
    """One image as float32 (3, size, size) in [0, 1]; DataError naming the file if it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in SIXTEEN_BIT_MODES or img.mode == "F":
                scale = 1.0 if img.mode == "F" else 65535.0
                grey = np.clip(np.asarray(img, dtype=np.float32) / scale, 0.0, 1.0)  # (H, W)
                small = np.asarray(Image.fromarray(grey).resize((size, size), Image.Resampling.BILINEAR))
                return np.repeat(small[None], 3, axis=0).astype(np.float32)
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
            rgb = Image.alpha_composite(background, rgba).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)
    except Exception as err:  # PIL.UnidentifiedImageError, a truncated file, an odd mode...
        raise DataError(f"could not read image '{path}': {err}") from err


def load_image_folder(path: Path, image_size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images (N, 3, S, S) float32 in [0, 1], labels (N,), class names)."""
    classes, samples = scan(path)
    if len(classes) < 2:
        raise DataError(f"image folder '{path}' has {len(classes)} class folder(s); at least 2 are needed.")
    images = np.stack([read_image(f, image_size) for f, _ in samples])
    return images, np.asarray([k for _, k in samples]), classes
