"""DKD: Zhao, Cui, Song, Qiu & Liang (CVPR 2022), "Decoupled Knowledge Distillation"."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kd_core.methods.base import Method, Needs, Outputs, negative, param


def _binary_log_probs(z: torch.Tensor, gt: torch.Tensor, temperature: float) -> torch.Tensor:
    """log [p_t, 1 − p_t] of softmax(z/T), target vs all other classes: (B, K) -> (B, 2).
    1 − p_t comes from a log-sum-exp over the non-target logits, exact even when p_t ≈ 1."""
    zt = z / temperature
    lse_all = torch.logsumexp(zt, dim=1, keepdim=True)
    log_target = zt.masked_select(gt).view(-1, 1) - lse_all
    log_rest = torch.logsumexp(zt.masked_select(~gt).view(len(z), -1), dim=1, keepdim=True) - lse_all
    return torch.cat([log_target, log_rest], dim=1)


def dkd_parts(
    zs: torch.Tensor, zt: torch.Tensor, labels: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample (TCKD, NCKD), each (B,), without T² or coefficients.

    TCKD_i = KL(b^T ‖ b^S), b = [p_t, 1 − p_t] (target vs non-target mass);
    NCKD_i = KL(p̂^T ‖ p̂^S), p̂ = softmax over the K − 1 non-target logits / T.
    They decompose KD exactly (Zhao et al. 2022):
        KL(p^T ‖ p^S) = TCKD + (1 − p_t^T)·NCKD.
    """
    gt = F.one_hot(labels, zs.shape[1]).bool()
    b_s, b_t = _binary_log_probs(zs, gt, temperature), _binary_log_probs(zt, gt, temperature)
    tckd = (b_t.exp() * (b_t - b_s)).sum(1)

    def rest(z: torch.Tensor) -> torch.Tensor:  # log-softmax over the K − 1 non-target logits: (B, K − 1)
        return F.log_softmax(z.masked_select(~gt).view(len(z), -1) / temperature, dim=1)

    n_s, n_t = rest(zs), rest(zt)
    nckd = (n_t.exp() * (n_t - n_s)).sum(1)
    return tckd, nckd


@dataclass(frozen=True)
class DKDParams:
    alpha: float = param(1.0, "α, weight of TCKD (target-class knowledge); 1 in the paper")
    beta: float = param(8.0, "β, weight of NCKD (non-target-class knowledge); 8 on CIFAR-100 in the paper")


class DKD(Method):
    name = "dkd"
    title = "DKD (decoupled KD)"
    paper = "Zhao, Cui, Song, Qiu & Liang, Decoupled Knowledge Distillation, CVPR 2022"
    family = "response"
    Params = DKDParams

    def needs(self, params) -> Needs:
        return Needs(teacher_logits=True, uses_labels=True)

    def check_params(self, params) -> list[str]:
        return negative(params, "alpha", "beta")

    def loss(
        self,
        s: Outputs,
        t: Outputs,
        params,
        extra: nn.ModuleDict,
        temperature: float,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """tckd = α·T²·mean_i KL(b^T_i ‖ b^S_i),  nckd = β·T²·mean_i KL(p̂^T_i ‖ p̂^S_i)
        (Zhao et al. 2022; T² as in their code).

        b = [p_t, 1 − p_t]: the binary target/non-target split of softmax(z/T) at the true
        class t; p̂: softmax over the non-target classes only. KD itself is
        TCKD + (1 − p_t^T)·NCKD, which couples NCKD to the teacher's confidence; DKD frees β.
        (The paper's warm-up of the DKD term over the first 20 epochs is not applied.)
        """
        if labels is None:
            raise ValueError("DKD needs the labels: the target class defines its decoupling")
        tckd, nckd = dkd_parts(s.logits, t.logits, labels, temperature)
        scale = temperature**2
        return {"tckd": params.alpha * scale * tckd.mean(), "nckd": params.beta * scale * nckd.mean()}


METHOD = DKD()
