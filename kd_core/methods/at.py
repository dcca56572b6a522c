"""AT: Zagoruyko & Komodakis (ICLR 2017), "Paying More Attention to Attention: Improving the
Performance of Convolutional Neural Networks via Attention Transfer"."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kd_core.errors import ConfigError
from kd_core.methods.base import Method, Needs, Outputs, Shapes, check_paired, negative, param


def attention(a: torch.Tensor, p: float) -> torch.Tensor:
    """Q = vec(mean_c |A_c|^p) / ‖·‖₂: the L2-normalised spatial attention map of
    activations A (B, C, H, W) -> (B, H·W). (The paper sums over channels; the mean
    differs by a constant that the normalisation removes.)"""
    return F.normalize(a.abs().pow(p).mean(1).flatten(1), dim=1)


@dataclass(frozen=True)
class ATParams:
    beta: float = param(1000.0, "β; the term is β/2 · Σ_j mean((Q_s − Q_t)²); 10³ in the paper")
    p: float = param(2.0, "exponent p of the attention map Σ_c |A_c|^p; 2 in the paper")
    stages: str = param("spatial", "stages compared pairwise: 'spatial' (all conv stages) or a comma list")


class AT(Method):
    name = "at"
    title = "AT (attention transfer)"
    paper = (
        "Zagoruyko & Komodakis, Paying More Attention to Attention: Improving the Performance "
        "of Convolutional Neural Networks via Attention Transfer, ICLR 2017"
    )
    family = "feature"
    Params = ATParams

    def needs(self, params) -> Needs:
        return Needs(teacher_logits=False, student_features=(params.stages,), teacher_features=(params.stages,))

    def check_params(self, params) -> list[str]:
        return negative(params, "beta") + ([f"p must be > 0, got {params.p}"] if params.p <= 0 else [])

    def check_shapes(self, params, student: Shapes, teacher: Shapes) -> None:
        check_paired(self.name, student, teacher)
        for (sn, ss), (tn, ts) in zip(student.items(), teacher.items()):
            if len(ss) != 3 or len(ts) != 3 or ss[1:] != ts[1:]:
                raise ConfigError(
                    f"method 'at' compares attention maps of equal size, but the student's "
                    f"{sn} is {'×'.join(map(str, ss))} and the teacher's {tn} is "
                    f"{'×'.join(map(str, ts))}."
                )

    def teacher_targets(self, t: Outputs, params) -> Outputs:
        return Outputs(t.logits, {k: attention(v, params.p) for k, v in t.features.items()})

    def loss(
        self,
        s: Outputs,
        t: Outputs,
        params,
        extra: nn.ModuleDict,
        temperature: float,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """at = β/2 · Σ_j mean_{i,k} (Q_s^j[i,k] − Q_t^j[i,k])²   (Zagoruyko & Komodakis 2017)

        Q^j: the L2-normalised attention map of stage pair j (see `attention`); the mean over
        batch i and positions k is the paper's "β divided by the number of elements in the
        attention map and batch size", as in the authors' code, with β = 10³. The paper writes
        the p-norm of the difference; its code, followed here, squares it.
        `t` holds the teacher's maps already (`teacher_targets`), so they can be cached.
        """
        total = sum(
            (attention(a, params.p) - q).pow(2).mean() for a, q in zip(s.features.values(), t.features.values())
        )
        return {"at": params.beta / 2 * total}


METHOD = AT()
