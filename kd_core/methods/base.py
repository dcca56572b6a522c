"""The method plug-in interface: what a distillation method needs, and its loss.

A method is a stateless object. The engine asks it

  * `needs(params)`            which teacher/student outputs it reads (stage *selectors*,
                               resolved per model by `resolve_stages`);
  * `check_shapes(...)`        whether the two models' stages fit it (ConfigError if not);
  * `modules(...)`             extra trainable modules (FitNets' regressor); the optimizer
                               trains them with the student;
  * `teacher_targets(t, ...)`  a per-sample reduction of the teacher's outputs to what the loss
                               reads (AT: attention maps). Row i of the result depends on row i
                               of the input only, so it can be cached by sample index;
  * `loss(s, t, ...)`          named scalar terms, each already weighted by the method's own
                               coefficients (DKD: {"tckd": α·TCKD, "nckd": β·NCKD}).

The engine's total is  (1 − λ)·CE + λ·Σ_m w_m·Σ_terms  (λ = DistillConfig.alpha).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from kd_core.errors import ConfigError

Shapes = Mapping[str, tuple[int, ...]]  # stage name -> per-sample shape, in stage order
EMBEDDING = "embedding"  # the pooled, pre-classifier features of every family
SELECTORS = ("middle", "last", "spatial", EMBEDDING)


@dataclass(frozen=True)
class Needs:
    """What a method reads. Feature entries are stage names or selectors
    ("middle", "last", "spatial", "embedding"); see `resolve_stages`."""

    teacher_logits: bool = True
    student_features: tuple[str, ...] = ()
    teacher_features: tuple[str, ...] = ()
    uses_labels: bool = False


@dataclass(frozen=True)
class Outputs:
    """One model's outputs for a batch: logits (B, K) and features by stage name,
    in stage order, (B, C, H, W) for spatial stages or (B, D) for flat ones."""

    logits: torch.Tensor
    features: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class NoParams:
    """This method has no hyperparameters of its own (the temperature is global)."""


def param(default: Any, help: str) -> Any:
    """A documented `Params` field: `help` is shown in the CLI and the dashboard."""
    return field(default=default, metadata={"help": help})


class Method:
    """Base class of every distillation method; subclasses set the class attributes."""

    name: ClassVar[str]
    title: ClassVar[str]
    paper: ClassVar[str]  # citation
    family: ClassVar[str]  # response | feature | relation
    Params: ClassVar[type] = NoParams  # frozen dataclass, defaults from the paper
    cacheable: ClassVar[bool] = True  # teacher targets may be cached by sample index

    def needs(self, params: Any) -> Needs:
        return Needs(teacher_logits=True)

    def check_shapes(self, params: Any, student: Shapes, teacher: Shapes) -> None:
        """Raise ConfigError when the resolved stages cannot be compared."""

    def modules(self, params: Any, student: Shapes, teacher: Shapes) -> nn.ModuleDict:
        return nn.ModuleDict()

    def teacher_targets(self, t: Outputs, params: Any) -> Outputs:
        return t

    def check_params(self, params: Any) -> list[str]:
        """Problems with parameter values, as messages; empty when fine."""
        return []

    def loss(
        self,
        s: Outputs,
        t: Outputs,
        params: Any,
        extra: nn.ModuleDict,
        temperature: float,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def __call__(
        self,
        s: Outputs,
        t_raw: Outputs,
        params: Any = None,
        extra: nn.ModuleDict | None = None,
        temperature: float = 4.0,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """loss(s, teacher_targets(t_raw)): for callers that hold raw teacher outputs."""
        params = self.Params() if params is None else params
        extra = nn.ModuleDict() if extra is None else extra
        return self.loss(s, self.teacher_targets(t_raw, params), params, extra, temperature, labels)

    def __repr__(self) -> str:
        return f"<method {self.name}>"


# ---------------------------------------------------------------- parameters


@dataclass(frozen=True)
class ParamInfo:
    name: str
    type: str  # float | int | bool | str
    default: Any
    help: str


def param_info(method: Method) -> list[ParamInfo]:
    return [
        ParamInfo(f.name, _type_name(f), f.default, f.metadata.get("help", ""))
        for f in dataclasses.fields(method.Params)
    ]


def _type_name(f: dataclasses.Field) -> str:
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return t


def _coerce(method: Method, key: str, kind: str, value: Any) -> Any:
    """A CLI string or JSON scalar as the field's type; ConfigError if it is not one."""
    where = f"{method.name}.{key}"
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where} must be true or false, got '{value}'.")
    if kind == "str":
        return str(value).strip()
    try:
        number = float(value) if kind == "float" else int(str(value).strip())
    except (TypeError, ValueError):
        raise ConfigError(
            f"{where} must be {'a number' if kind == 'float' else 'an integer'}, got '{value}'."
        ) from None
    if isinstance(value, bool) or (kind == "float" and not math.isfinite(number)):
        raise ConfigError(f"{where} must be a finite number, got '{value}'.")
    return number


def negative(params: Any, *names: str) -> list[str]:
    """Messages for the named weights that are below 0 (check_params' common case)."""
    return [f"{k} must be >= 0, got {getattr(params, k)}" for k in names if getattr(params, k) < 0]


def single_stage(params: Any, *names: str) -> list[str]:
    """Messages for stage parameters that must pick exactly one stage."""
    return [
        f"{k} must name one stage, got '{getattr(params, k)}'"
        for k in names
        if "," in getattr(params, k) or getattr(params, k).strip() in ("", "spatial")
    ]


def make_params(method: Method, values: Mapping[str, Any]) -> Any:
    """`method.Params` from a mapping of overrides (strings from the CLI or JSON scalars)."""
    infos = {p.name: p for p in param_info(method)}
    unknown = sorted(set(values) - set(infos))
    if unknown:
        known = ", ".join(infos) or "none"
        raise ConfigError(
            f"method '{method.name}' has no parameter {', '.join(map(repr, unknown))}; its parameters: {known}."
        )
    kwargs = {k: _coerce(method, k, infos[k].type, v) for k, v in values.items()}
    params = method.Params(**kwargs)
    problems = method.check_params(params)
    if problems:
        raise ConfigError(f"method '{method.name}': " + "; ".join(problems) + ".")
    return params


# ---------------------------------------------------------------- stages


def resolve_stages(selectors: tuple[str, ...], shapes: Shapes, method: str, who: str) -> tuple[str, ...]:
    """Stage names for `selectors` on one model, in the selectors' order (no repeats).

    `shapes` maps the model's stage names to per-sample shapes, "embedding" last.
    Selectors (also comma lists): a stage name; "embedding"; "middle" / "last": the middle
    / last stage before the embedding (the embedding if there is none); "spatial": every
    stage with (C, H, W) maps. `who` names the model ("student", "teacher") in messages.
    """
    body = [n for n in shapes if n != EMBEDDING]
    out: list[str] = []
    for sel in (s.strip() for group in selectors for s in group.split(",") if s.strip()):
        if sel == "spatial":
            picked = [n for n in shapes if len(shapes[n]) == 3]
            if not picked:
                raise ConfigError(
                    f"method '{method}' needs spatial feature maps (C×H×W), but the {who} has only flat "
                    f"stages ({', '.join(shapes)}); use a CNN {who}."
                )
        elif sel == "middle":
            picked = [body[(len(body) - 1) // 2]] if body else [EMBEDDING]
        elif sel == "last":
            picked = [body[-1]] if body else [EMBEDDING]
        elif sel in shapes:
            picked = [sel]
        else:
            raise ConfigError(
                f"method '{method}': the {who} has no stage '{sel}'; its stages: "
                f"{', '.join(shapes)} (or {', '.join(SELECTORS)})."
            )
        out += [n for n in picked if n not in out]
    return tuple(out)


def check_paired(method: str, student: Shapes, teacher: Shapes) -> None:
    """Methods that compare stage j of the student with stage j of the teacher need as many of each."""
    if len(student) != len(teacher):
        raise ConfigError(
            f"method '{method}' pairs stages, but the student has {len(student)} "
            f"({', '.join(student)}) and the teacher {len(teacher)} ({', '.join(teacher)})."
        )
