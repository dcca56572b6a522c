"""Hinton's KD loss as one function of logits and labels, with its CE and KD parts.

The engine composes losses from kd_core.methods (any mix of methods); this function is the
textbook formula in one place, for the dashboard's explanations and as KD's reference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from kd_core.methods.kd import kl_soft


class LossParts(NamedTuple):
    total: torch.Tensor  # scalar, the one that is back-propagated
    ce: torch.Tensor  # scalar, cross-entropy with the labels
    kd: torch.Tensor  # scalar, T²-scaled KL to the teacher's soft targets (0 without a teacher)


def soft_targets(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / T) over the last axis: (B, K) -> (B, K)."""
    return F.softmax(logits / temperature, dim=-1)


def hinton_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor,
    temperature: float = 4.0,
    alpha: float = 0.9,
) -> LossParts:
    """Knowledge distillation loss of Hinton, Vinyals & Dean (2015),
    "Distilling the Knowledge in a Neural Network", arXiv:1503.02531.

        L = (1 − λ)·CE(z_s, y) + λ·T²·KL( softmax(z_t/T) ‖ softmax(z_s/T) )

    with λ = `alpha`, T = `temperature`, z_s (B, K) student logits, z_t (B, K)
    teacher logits and y (B,) integer labels. KL is summed over the K classes
    and averaged over the batch ("batchmean"); the student side enters as
    log_softmax for numerical stability.

    Why T²: the gradient of the soft term with respect to z_s scales as 1/T²
    (for large T it tends to (z_s − z_t)/(K·T²)), so multiplying by T² keeps its
    magnitude roughly constant as T changes, and λ keeps the same meaning.

    λ = 0 is plain training on labels; λ = 1 is label-free distillation.
    With `teacher_logits=None` the KD term is zero and L = CE.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha (λ) must be in [0, 1], got {alpha}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    ce = F.cross_entropy(student_logits, labels)
    if teacher_logits is None:
        return LossParts(ce, ce, torch.zeros((), device=ce.device))
    kd = kl_soft(student_logits, teacher_logits, temperature) * temperature**2
    return LossParts((1.0 - alpha) * ce + alpha * kd, ce, kd)


LOSSES: dict[str, Callable[..., LossParts]] = {"hinton": hinton_kd_loss}
