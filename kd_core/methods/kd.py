"""KD: Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network"."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kd_core.methods.base import Method, Outputs


def kl_soft(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL( softmax(z_t/T) ‖ softmax(z_s/T) ), summed over classes, averaged over the batch.
    (B, K), (B, K) -> scalar. Both sides enter as log-softmax for stability."""
    log_ps = F.log_softmax(student_logits / temperature, dim=-1)
    log_pt = F.log_softmax(teacher_logits / temperature, dim=-1)
    return F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True)


class KD(Method):
    name = "kd"
    title = "KD (soft targets)"
    paper = "Hinton, Vinyals & Dean, Distilling the Knowledge in a Neural Network, arXiv:1503.02531 (2015)"
    family = "response"

    def loss(
        self,
        s: Outputs,
        t: Outputs,
        params,
        extra: nn.ModuleDict,
        temperature: float,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """kd = T²·KL( softmax(z_t/T) ‖ softmax(z_s/T) )   (Hinton et al. 2015)

        KL summed over the K classes, averaged over the batch. The T² keeps the gradient's
        size about constant as T changes (it scales as 1/T² otherwise), so λ keeps its meaning.
        """
        return {"kd": temperature**2 * kl_soft(s.logits, t.logits, temperature)}


METHOD = KD()
