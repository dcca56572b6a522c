"""Consistent augmentation ("function matching", Beyer et al., CVPR 2022).

The student and the teacher see the *same* augmented view of every image, so the
student learns to match the teacher's function on views the training set never had:
random shifts, horizontal flips where they keep the class, and mixup between images.
The teacher must then run on every batch (its logits cannot be cached by index).

Mixup pairs labelled rows with labelled rows and transfer rows with transfer rows,
so the labelled rows' cross-entropy can mix their two labels (Zhang et al., ICLR 2018)
while the transfer rows, whose labels are hidden, only ever meet the teacher.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from kd_core.config import TrainConfig
from kd_core.errors import ConfigError

AUGMENT_SHIFT = 2  # pixels of random translation when shifts are on
FUNCTION_MATCHING_MIXUP = 1.0  # Beta(1, 1): a uniform mixing weight, as in Beyer et al.'s recipe
# A mirrored digit is another digit or none (2/5, 3/ε); clothes and CIFAR's objects keep their class.
NO_FLIP_DATASETS = {"digits": "digits", "mnist": "MNIST digits"}


def flips_allowed(dataset: str) -> bool:
    return dataset.strip() not in NO_FLIP_DATASETS


def validate_augment(t: TrainConfig, dataset: str) -> None:
    if t.flip and not flips_allowed(dataset):
        raise ConfigError(
            f"horizontal flips change {NO_FLIP_DATASETS[dataset.strip()]}' classes (a mirrored 2 is no 2); "
            "turn flips off for this dataset."
        )
    if not (0.0 <= t.mixup <= 10.0):
        raise ConfigError(f"mixup α must be 0 (off) or a positive Beta parameter up to 10, got {t.mixup}.")


def augmented(t: TrainConfig) -> bool:
    """Whether every epoch shows new views, so teacher outputs cannot be cached by index."""
    return t.augment or t.flip or t.mixup > 0


def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator, fill: float = 0.0) -> torch.Tensor:
    """Translate each image by up to ±max_shift pixels, padding with `fill`. (B,C,H,W) -> (B,C,H,W).

    The images are normalised, so a black border is fill = −mean/std, not 0."""
    b, c, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=fill)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen).to(x.device)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (B,1,H,1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (B,1,1,W)
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2. (B,C,H,W) -> (B,C,H,W)."""
    flip = (torch.rand(len(x), generator=gen) < 0.5).to(x.device)[:, None, None, None]
    return torch.where(flip, x.flip(-1), x)


@dataclass
class Mix:
    """A batch mixed as lam·x + (1 − lam)·x[partner]; partner pairs rows within each group."""

    x: torch.Tensor  # (B, C, H, W)
    partner: torch.Tensor  # (B,) row index each row was mixed with
    lam: float


def mixup(
    x: torch.Tensor, groups: tuple[int, ...], alpha: float, gen: torch.Generator, rng: np.random.Generator
) -> Mix:
    """Mix rows with a random partner inside their own group (`groups`: consecutive row
    counts, e.g. (labelled, transfer)); lam ~ Beta(alpha, alpha), one per batch."""
    lam = float(rng.beta(alpha, alpha))
    parts, start = [], 0
    for n in groups:
        parts.append(start + torch.randperm(n, generator=gen))
        start += n
    partner = torch.cat(parts).to(x.device)
    return Mix(lam * x + (1.0 - lam) * x.index_select(0, partner), partner, lam)


def mixed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, mix: Mix | None) -> torch.Tensor:
    """CE of the labelled rows (the first len(labels) rows of `logits`), against both
    mixed labels when mixup is on: lam·CE(y) + (1 − lam)·CE(y[partner])."""
    z = logits[: len(labels)]
    if mix is None:
        return F.cross_entropy(z, labels)
    other = labels.index_select(0, mix.partner[: len(labels)])
    return mix.lam * F.cross_entropy(z, labels) + (1.0 - mix.lam) * F.cross_entropy(z, other)


class Augmenter:
    """The training config's augmentations, applied to one batch in a fixed order
    (shift, flip, mixup) from the run's own generators."""

    def __init__(self, t: TrainConfig, fill: float, gen: torch.Generator):
        self.t, self.fill, self.gen = t, fill, gen
        self.rng = np.random.default_rng(t.seed)  # Beta draws; torch has no seeded Beta sampler

    def __call__(self, x: torch.Tensor, groups: tuple[int, ...]) -> tuple[torch.Tensor, Mix | None]:
        if self.t.augment:
            x = random_shift(x, AUGMENT_SHIFT, self.gen, self.fill)
        if self.t.flip:
            x = random_flip(x, self.gen)
        if self.t.mixup > 0:
            mix = mixup(x, groups, self.t.mixup, self.gen, self.rng)
            return mix.x, mix
        return x, None
