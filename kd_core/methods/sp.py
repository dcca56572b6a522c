"""SP: Tung & Mori (ICCV 2019), "Similarity-Preserving Knowledge Distillation"."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kd_core.methods.base import Method, Needs, Outputs, check_paired, negative, param


def similarity(a: torch.Tensor) -> torch.Tensor:
    """G̃ = row-L2-normalised Q·Qᵀ with Q = A reshaped (B, −1): (B, ...) -> (B, B)."""
    q = a.flatten(1)
    return F.normalize(q @ q.T, dim=1)


@dataclass(frozen=True)
class SPParams:
    gamma: float = param(3000.0, "γ, weight of the similarity term; 3000 on CIFAR-10 in the paper")
    stages: str = param("last", "stages compared pairwise: a stage name, 'last', 'embedding' or a comma list")


class SP(Method):
    name = "sp"
    title = "SP (similarity-preserving)"
    paper = "Tung & Mori, Similarity-Preserving Knowledge Distillation, ICCV 2019"
    family = "relation"
    Params = SPParams

    def needs(self, params) -> Needs:
        return Needs(teacher_logits=False, student_features=(params.stages,), teacher_features=(params.stages,))

    def check_params(self, params) -> list[str]:
        return negative(params, "gamma")

    def check_shapes(self, params, student, teacher) -> None:
        check_paired(self.name, student, teacher)

    def loss(
        self,
        s: Outputs,
        t: Outputs,
        params,
        extra: nn.ModuleDict,
        temperature: float,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """sp = γ/b² · Σ_(l,l') ‖G̃_T^(l) − G̃_S^(l')‖²_F   (Tung & Mori 2019)

        G = Q·Qᵀ (b × b) over the batch of b samples, Q the flattened activations of a
        stage; G̃ normalises each row to unit L2 norm. Channels and sizes may differ between
        student and teacher: only the b × b similarities are compared.
        """
        b = len(s.logits)
        total = sum(
            (similarity(t_a) - similarity(s_a)).pow(2).sum()
            for s_a, t_a in zip(s.features.values(), t.features.values())
        )
        return {"sp": params.gamma / (b * b) * total}


METHOD = SP()
