"""The Hinton KD loss against an independent float64 computation, and its T² scaling."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest
import torch

from kd_core.train.losses import LOSSES, hinton_kd_loss, soft_targets

B, K = 16, 7


def np_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def reference_loss(zs: np.ndarray, zt: np.ndarray, y: np.ndarray, T: float, lam: float):
    """(total, ce, kd) by hand in float64: CE averaged over the batch; KL(p_t ‖ p_s)
    of the temperature-T softmaxes summed over classes, averaged over the batch, times T²."""
    zs, zt = zs.astype(np.float64), zt.astype(np.float64)
    ce = -np.mean(np_log_softmax(zs)[np.arange(len(y)), y])
    log_ps, log_pt = np_log_softmax(zs / T), np_log_softmax(zt / T)
    kl = np.sum(np.exp(log_pt) * (log_pt - log_ps), axis=1).mean()
    kd = T * T * kl
    return (1 - lam) * ce + lam * kd, ce, kd


def reference_kd_grad(zs: np.ndarray, zt: np.ndarray, T: float) -> np.ndarray:
    """d(T²·KL)/dz_s = T·(softmax(z_s/T) − softmax(z_t/T)) / B, in float64."""
    zs, zt = zs.astype(np.float64), zt.astype(np.float64)
    return T * (np.exp(np_log_softmax(zs / T)) - np.exp(np_log_softmax(zt / T))) / len(zs)


def logits(seed: int, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    zs = torch.randn(B, K, generator=g) * scale
    zt = torch.randn(B, K, generator=g) * scale
    y = torch.randint(0, K, (B,), generator=g)
    return zs, zt, y


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0, 10.0])
@pytest.mark.parametrize("lam", [0.0, 0.3, 0.9, 1.0])
def test_loss_matches_float64_reference(T, lam):
    zs, zt, y = logits(seed=int(T * 10 + lam * 100))
    parts = hinton_kd_loss(zs, zt, y, temperature=T, alpha=lam)
    total, ce, kd = reference_loss(zs.numpy(), zt.numpy(), y.numpy(), T, lam)
    assert parts.total.item() == pytest.approx(total, rel=1e-5, abs=1e-6)
    assert parts.ce.item() == pytest.approx(ce, rel=1e-5, abs=1e-6)
    assert parts.kd.item() == pytest.approx(kd, rel=1e-5, abs=1e-6)
    assert kd > 0.01  # the teacher and student differ, so the soft term is not trivially zero


def test_registry_serves_the_hinton_loss():
    zs, zt, y = logits(seed=3)
    assert LOSSES["hinton"](zs, zt, y, 3.0, 0.5).total.item() == pytest.approx(
        reference_loss(zs.numpy(), zt.numpy(), y.numpy(), 3.0, 0.5)[0], rel=1e-5
    )


def test_lambda_zero_is_pure_cross_entropy():
    zs, zt, y = logits(seed=1)
    parts = hinton_kd_loss(zs, zt, y, temperature=4.0, alpha=0.0)
    _, ce, _ = reference_loss(zs.numpy(), zt.numpy(), y.numpy(), 4.0, 0.0)
    assert parts.total.item() == pytest.approx(ce, rel=1e-6)
    # The teacher has no influence at all: another teacher gives the same total.
    other = hinton_kd_loss(zs, -zt, y, temperature=4.0, alpha=0.0)
    assert other.total.item() == parts.total.item()


def test_lambda_one_is_label_free():
    zs, zt, y = logits(seed=2)
    zs.requires_grad_(True)
    a = hinton_kd_loss(zs, zt, y, temperature=4.0, alpha=1.0)
    (grad_a,) = torch.autograd.grad(a.total, zs)
    b = hinton_kd_loss(zs, zt, (y + 1) % K, temperature=4.0, alpha=1.0)
    (grad_b,) = torch.autograd.grad(b.total, zs)
    assert a.ce.item() != pytest.approx(b.ce.item())  # the labels did change the CE...
    assert a.total.item() == b.total.item()  # ...but not the loss
    assert torch.equal(grad_a, grad_b)
    assert a.total.item() == pytest.approx(
        reference_loss(zs.detach().numpy(), zt.numpy(), y.numpy(), 4.0, 1.0)[2], rel=1e-5
    )


def test_no_teacher_gives_cross_entropy_and_zero_kd():
    zs, zt, y = logits(seed=4)
    parts = hinton_kd_loss(zs, None, y, temperature=4.0, alpha=0.9)
    _, ce, _ = reference_loss(zs.numpy(), zt.numpy(), y.numpy(), 4.0, 0.9)
    assert parts.kd.item() == 0.0
    assert parts.total.item() == pytest.approx(ce, rel=1e-6)


def test_identical_logits_have_zero_kd():
    zs, _, y = logits(seed=5)
    assert hinton_kd_loss(zs, zs.clone(), y, temperature=3.0, alpha=1.0).kd.item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("T", [1.0, 3.0, 8.0])
def test_kd_gradient_matches_analytic_float64(T):
    zs, zt, y = logits(seed=6)
    zs64 = zs.double().requires_grad_(True)
    parts = hinton_kd_loss(zs64, zt.double(), y, temperature=T, alpha=1.0)
    (grad,) = torch.autograd.grad(parts.kd, zs64)
    np.testing.assert_allclose(grad.numpy(), reference_kd_grad(zs.numpy(), zt.numpy(), T), rtol=1e-9, atol=1e-12)


def kd_grad_norm(zs: torch.Tensor, zt: torch.Tensor, y: torch.Tensor, T: float, with_t2: bool) -> float:
    z = zs.double().requires_grad_(True)
    kd = hinton_kd_loss(z, zt.double(), y, temperature=T, alpha=1.0).kd
    term = kd if with_t2 else kd / (T * T)  # kd / T² is the bare KL, without Hinton's factor
    (grad,) = torch.autograd.grad(term, z)
    return grad.norm().item()


def test_t_squared_keeps_the_kd_gradient_scale_roughly_constant():
    zs, zt, y = logits(seed=7)
    temps = [2.0, 4.0, 8.0, 16.0]
    scaled = [kd_grad_norm(zs, zt, y, T, with_t2=True) for T in temps]
    bare = [kd_grad_norm(zs, zt, y, T, with_t2=False) for T in temps]
    # With T²: within a factor of 2 across an 8x range of temperatures.
    assert max(scaled) / min(scaled) < 2.0, scaled
    # Without T²: the gradient falls about as 1/T², so each doubling of T cuts it by well over 2x,
    # and from T=2 to T=16 by far more than the factor 2 allowed above.
    for lo, hi in pairwise(bare):
        assert hi < lo / 2.5, bare
    assert bare[0] / bare[-1] > 64 / 2, bare
    # And the two differ by exactly T².
    for T, s, b in zip(temps, scaled, bare):
        assert s == pytest.approx(b * T * T, rel=1e-9)


def test_soft_targets_are_tempered_softmax():
    zs, _, _ = logits(seed=8)
    for T in (1.0, 5.0):
        expected = np.exp(np_log_softmax(zs.numpy().astype(np.float64) / T))
        np.testing.assert_allclose(soft_targets(zs, T).numpy(), expected, rtol=1e-5, atol=1e-7)
    # Higher temperature means softer (higher-entropy) targets.
    ent = [-(p * p.log()).sum(-1).mean().item() for p in (soft_targets(zs, 1.0), soft_targets(zs, 5.0))]
    assert ent[1] > ent[0]


@pytest.mark.parametrize(
    "kw, word",
    [
        ({"alpha": -0.1}, "alpha"),
        ({"alpha": 1.5}, "alpha"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -2.0}, "temperature"),
    ],
)
def test_out_of_range_hyperparameters_are_refused(kw, word):
    zs, zt, y = logits(seed=9)
    args = {"temperature": 4.0, "alpha": 0.5, **kw}
    with pytest.raises(ValueError, match=word):
        hinton_kd_loss(zs, zt, y, **args)
    assert not math.isnan(hinton_kd_loss(zs, zt, y).total.item())
