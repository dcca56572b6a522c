"""FitNets: Romero, Ballas, Kahou, Chassang, Gatta & Bengio (ICLR 2015), "FitNets: Hints for Thin Deep Nets"."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from kd_core.methods.base import Method, Needs, Outputs, Shapes, negative, param, single_stage


@dataclass(frozen=True)
class FitNetsParams:
    student_stage: str = param("middle", "the student's guided layer: a stage name, 'middle' or 'last'")
    teacher_stage: str = param("middle", "the teacher's hint layer: a stage name, 'middle' or 'last'")
    coef: float = param(1.0, "weight of the hint term ½‖u_t − r(v_s)‖²; the paper's loss has none")


def _regressor(s_shape: tuple[int, ...], t_shape: tuple[int, ...]) -> nn.Module:
    """r: a 1×1 convolution between spatial maps of the same H×W (the paper's convolutional
    regressor, smallest kernel); otherwise a linear map between the flattened features."""
    if len(s_shape) == 3 and len(t_shape) == 3 and s_shape[1:] == t_shape[1:]:
        return nn.Conv2d(s_shape[0], t_shape[0], kernel_size=1)
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(s_shape), math.prod(t_shape)), nn.Unflatten(1, t_shape))


class FitNets(Method):
    name = "fitnets"
    title = "FitNets (hints)"
    paper = "Romero, Ballas, Kahou, Chassang, Gatta & Bengio, FitNets: Hints for Thin Deep Nets, ICLR 2015"
    family = "feature"
    Params = FitNetsParams

    def needs(self, params) -> Needs:
        return Needs(
            teacher_logits=False, student_features=(params.student_stage,), teacher_features=(params.teacher_stage,)
        )

    def check_params(self, params) -> list[str]:
        return single_stage(params, "student_stage", "teacher_stage") + negative(params, "coef")

    def modules(self, params, student: Shapes, teacher: Shapes) -> nn.ModuleDict:
        (s_shape,), (t_shape,) = student.values(), teacher.values()
        return nn.ModuleDict({"regressor": _regressor(tuple(s_shape), tuple(t_shape))})

    def loss(
        self,
        s: Outputs,
        t: Outputs,
        params,
        extra: nn.ModuleDict,
        temperature: float,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """hint = coef · mean_i ½‖u_t(x_i) − r(v_s(x_i))‖²   (Romero et al. 2015)

        u_t: the teacher's hint layer; v_s: the student's guided layer; r: the trainable
        regressor (in `extra`, trained with the student). The squared norm sums over all
        feature elements. The paper trains in two stages (hint first, then KD on the whole
        student); this is the joint form, hint and the other terms together from step 1.
        A two-stage run is a pipeline of two runs, not a loop special case.
        """
        (v,), (u,) = s.features.values(), t.features.values()
        diff = u - extra["regressor"](v)
        return {"hint": params.coef * 0.5 * diff.pow(2).flatten(1).sum(1).mean()}


METHOD = FitNets()
