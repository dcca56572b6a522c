"""DIST: Huang, You, Wang, Qian & Xu (NeurIPS 2022), "Knowledge Distillation from A Stronger Teacher"."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kd_core.methods.base import Method, Outputs, negative, param

EPS = 1e-8  # as in the authors' cosine similarity


def pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each row of a with the same row of b: (N, M), (N, M) -> (N,)."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + EPS)


@dataclass(frozen=True)
class DISTParams:
    beta: float = param(1.0, "β, weight of the inter-class relation (per sample, across classes); 1 in the paper")
    gamma: float = param(1.0, "γ, weight of the intra-class relation (per class, across the batch); 1 in the paper")


class DIST(Method):
    name = "dist"
    title = "DIST (Pearson relations)"
    paper = "Huang, You, Wang, Qian & Xu, Knowledge Distillation from A Stronger Teacher, NeurIPS 2022"
    family = "response"
    Params = DISTParams

    def check_params(self, params) -> list[str]:
        return negative(params, "beta", "gamma")

    def loss(
        self,
        s: Outputs,
        t: Outputs,
        params,
        extra: nn.ModuleDict,
        temperature: float,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """inter = β·T²·(1 − mean_i ρ(Y_s[i,:], Y_t[i,:])),
        intra = γ·T²·(1 − mean_j ρ(Y_s[:,j], Y_t[:,j]))
        (Huang et al. 2022), Y = softmax(z/T), ρ the Pearson correlation.

        Matching relations instead of exact probabilities tolerates a large teacher–student gap.
        The paper's default τ = 1 is the global temperature here. With fewer than two samples
        the intra-class correlation is undefined and the term is 0.
        """
        ys, yt = (s.logits / temperature).softmax(1), (t.logits / temperature).softmax(1)
        scale = temperature**2
        inter = scale * (1 - pearson_rows(ys, yt).mean())
        intra = scale * (1 - pearson_rows(ys.T, yt.T).mean()) if len(ys) > 1 else ys.sum() * 0
        return {"inter": params.beta * inter, "intra": params.gamma * intra}


METHOD = DIST()
