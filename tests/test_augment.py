"""Consistent augmentation (kd_core.train.augment) against float64 references written here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kd_core.config import TrainConfig
from kd_core.errors import ConfigError
from kd_core.train import augment as A


def test_flip_mirrors_about_half_the_rows_and_leaves_the_rest():
    x = torch.arange(200 * 2 * 3 * 4, dtype=torch.float32).reshape(200, 2, 3, 4)
    out = A.random_flip(x, torch.Generator().manual_seed(0))
    ref = x.double().numpy()
    flipped = 0
    for i in range(len(x)):
        row = out[i].double().numpy()
        if np.array_equal(row, ref[i][:, :, ::-1]):
            flipped += 1
        else:
            assert np.array_equal(row, ref[i])
    assert 70 < flipped < 130  # Binomial(200, 1/2): far outside this is a broken coin


def test_mixup_mixes_within_groups_with_one_beta_draw():
    x = torch.randn(10, 1, 3, 3)
    gen, rng = torch.Generator().manual_seed(1), np.random.default_rng(2)
    mix = A.mixup(x, (4, 6), 0.4, gen, rng)
    lam = np.random.default_rng(2).beta(0.4, 0.4)  # the same draw, made independently
    assert mix.lam == pytest.approx(lam, abs=0)
    assert sorted(mix.partner[:4].tolist()) == [0, 1, 2, 3]  # labelled rows pair with labelled rows
    assert sorted(mix.partner[4:].tolist()) == [4, 5, 6, 7, 8, 9]
    xd = x.double().numpy()
    want = lam * xd + (1 - lam) * xd[mix.partner.numpy()]
    np.testing.assert_allclose(mix.x.double().numpy(), want, atol=1e-6)


def test_mixed_cross_entropy_matches_a_float64_reference():
    logits = torch.randn(7, 5)
    labels = torch.tensor([0, 3, 1, 4])  # the first 4 rows are labelled
    mix = A.Mix(torch.zeros(7, 1, 1, 1), torch.tensor([2, 0, 3, 1, 6, 4, 5]), 0.3)
    z = logits.double().numpy()[:4]
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    y, y2 = labels.numpy(), labels.numpy()[[2, 0, 3, 1]]
    want = 0.3 * -logp[np.arange(4), y].mean() + 0.7 * -logp[np.arange(4), y2].mean()
    assert A.mixed_cross_entropy(logits, labels, mix).item() == pytest.approx(want, rel=1e-5)
    assert A.mixed_cross_entropy(logits, labels, None).item() == pytest.approx(-logp[np.arange(4), y].mean(), rel=1e-5)


def test_flips_are_refused_where_they_change_the_class():
    with pytest.raises(ConfigError, match="mirrored"):
        A.validate_augment(TrainConfig(flip=True), "digits")
    with pytest.raises(ConfigError, match="mirrored"):
        A.validate_augment(TrainConfig(flip=True), "mnist")
    A.validate_augment(TrainConfig(flip=True), "fashion-mnist")
    with pytest.raises(ConfigError, match="mixup"):
        A.validate_augment(TrainConfig(mixup=-1.0), "digits")
    assert A.flips_allowed("cifar10") and not A.flips_allowed("digits")


def test_augmenter_applies_each_switch_and_only_those():
    x = torch.randn(6, 1, 8, 8)
    plain = A.Augmenter(TrainConfig(), 0.0, torch.Generator().manual_seed(0))
    out, mix = plain(x, (6,))
    assert out is x and mix is None
    full = A.Augmenter(TrainConfig(augment=True, flip=True, mixup=1.0), 0.0, torch.Generator().manual_seed(0))
    out, mix = full(x, (3, 3))
    assert mix is not None and out.shape == x.shape and not torch.equal(out, x)
    assert A.augmented(TrainConfig(mixup=0.2)) and not A.augmented(TrainConfig())
