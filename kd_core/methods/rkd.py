"""RKD: Park, Kim, Lu & Cho (CVPR 2019), "Relational Knowledge Distillation"."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kd_core.methods.base import EMBEDDING, Method, Needs, Outputs, negative, param, single_stage

EPS = 1e-12  # squared-distance floor before the square root, as in the authors' code


def pairwise_distances(e: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between the rows of e (B, D) -> (B, B), exact zeros on the diagonal."""
    sq = e.pow(2).sum(1)
    d = (sq[:, None] + sq[None, :] - 2 * e @ e.T).clamp(min=EPS).sqrt()
    return d * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))


def distance_potential(e: torch.Tensor) -> torch.Tensor:
    """ψ_D = ‖e_i − e_j‖ / μ, μ the mean distance over pairs i ≠ j: (B, D) -> (B, B)."""
    d = pairwise_distances(e)
    positive = d[d > 0]
    mu = positive.mean() if positive.numel() else d.new_ones(())
    return d / mu


def angle_potential(e: torch.Tensor) -> torch.Tensor:
    """ψ_A(i, j, k) = cos∠(e_i − e_j, e_k − e_j): (B, D) -> (B, B, B). Memory B²·D."""
    diff = F.normalize(e[None, :, :] - e[:, None, :], dim=2)  # [j, i] = e_i − e_j, unit
    return diff @ diff.transpose(1, 2)


@dataclass(frozen=True)
class RKDParams:
    distance: float = param(25.0, "λ_D, weight of the distance-wise term; 25 in the paper")
    angle: float = param(50.0, "λ_A, weight of the angle-wise term; 50 in the paper")
    stage: str = param(EMBEDDING, "the embedding compared: 'embedding' (pooled, pre-classifier) or a stage name")


class RKD(Method):
    name = "rkd"
    title = "RKD (distance + angle)"
    paper = "Park, Kim, Lu & Cho, Relational Knowledge Distillation, CVPR 2019"
    family = "relation"
    Params = RKDParams

    def needs(self, params) -> Needs:
        return Needs(teacher_logits=False, student_features=(params.stage,), teacher_features=(params.stage,))

    def check_params(self, params) -> list[str]:
        return negative(params, "distance", "angle") + single_stage(params, "stage")

    def teacher_targets(self, t: Outputs, params) -> Outputs:
        return Outputs(t.logits, {k: v.flatten(1) for k, v in t.features.items()})

    def loss(
        self,
        s: Outputs,
        t: Outputs,
        params,
        extra: nn.ModuleDict,
        temperature: float,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """rkd_dist = λ_D · mean_(i,j) ℓ_δ(ψ_D(s_i, s_j), ψ_D(t_i, t_j)),
        rkd_angle = λ_A · mean_(i,j,k) ℓ_δ(ψ_A(s_i, s_j, s_k), ψ_A(t_i, t_j, t_k))
        (Park et al. 2019), ℓ_δ the Huber loss with δ = 1.

        ψ_D: pairwise distance over its batch mean; ψ_A: cosine of the angle at e_j. The means
        run over all B² pairs and B³ triples (diagonals included, zero on both sides), as in
        the authors' code. Only relations are compared, so the embedding sizes may differ.
        """
        (es,), (et,) = s.features.values(), t.features.values()
        es, et = es.flatten(1), et.flatten(1)
        dist = F.smooth_l1_loss(distance_potential(es), distance_potential(et))
        ang = F.smooth_l1_loss(angle_potential(es), angle_potential(et))
        return {"rkd_dist": params.distance * dist, "rkd_angle": params.angle * ang}


METHOD = RKD()
