"""Logit standardisation: Sun, Ren, Li, Wang & Cao (CVPR 2024), "Logit Standardization in Knowledge Distillation"."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kd_core.methods.base import Method, Outputs, param
from kd_core.methods.kd import kl_soft


def zscore(z: torch.Tensor, eps: float) -> torch.Tensor:
    """(z − mean(z)) / (std(z) + eps) per row, std with Bessel's correction as in the
    authors' code: (B, K) -> (B, K)."""
    return (z - z.mean(1, keepdim=True)) / (z.std(1, keepdim=True) + eps)


@dataclass(frozen=True)
class LogitStdParams:
    eps: float = param(1e-7, "ε added to the standard deviation, as in the authors' code")


class LogitStd(Method):
    name = "logit_std"
    title = "KD with standardised logits"
    paper = "Sun, Ren, Li, Wang & Cao, Logit Standardization in Knowledge Distillation, CVPR 2024"
    family = "response"
    Params = LogitStdParams

    def check_params(self, params) -> list[str]:
        return [] if params.eps > 0 else [f"eps must be > 0, got {params.eps}"]

    def loss(
        self,
        s: Outputs,
        t: Outputs,
        params,
        extra: nn.ModuleDict,
        temperature: float,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """kd_std = T²·KL( softmax(Z(z_t)/T) ‖ softmax(Z(z_s)/T) ),  Z(z) = (z − z̄)/σ(z)
        (Sun et al. 2024).

        The student need only match the teacher's logit *relations*, not their scale and
        shift, which KD with one shared T forces. T here is the paper's "base temperature";
        the authors weight the KD term well above CE (a λ near 1 here).
        """
        zs, zt = zscore(s.logits, params.eps), zscore(t.logits, params.eps)
        return {"kd_std": temperature**2 * kl_soft(zs, zt, temperature)}


METHOD = LogitStd()
