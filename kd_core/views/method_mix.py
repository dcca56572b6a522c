"""The Distill page's method picker, in plain data: the catalogue, the mix the widgets
describe as the CLI writes it, and the preview of what a mix costs before it trains."""

from __future__ import annotations

import shlex
from typing import Any

from torch import nn

from kd_core.config import RunConfig, format_methods, format_params
from kd_core.errors import KDError
from kd_core.methods import catalogue, parse_methods
from kd_core.train.data import Dataset
from kd_core.train.engine import method_preview


def methods() -> list[dict]:
    """Every method with its title, paper, formula and parameters (see methods.catalogue)."""
    return catalogue()


def mix_args(
    selected: list[str], weights: dict[str, float], params: dict[str, dict[str, Any]]
) -> tuple[str, list[str]]:
    """The picker's state as `--method` and `--method-param` values, parameters only where they
    differ from the paper's default: (["kd", "at"], {"at": 2}, {"at": {"beta": 500}}) ->
    ("1*kd+2*at", ["at.beta=500"]). Checked by the same parser the CLI uses (ConfigError)."""
    defaults = {m["name"]: {p["name"]: p["default"] for p in m["params"]} for m in catalogue()}
    text = "+".join(f"{weights.get(n, 1.0):g}*{n}" for n in selected)
    pairs = [f"{n}.{k}={v}" for n in selected for k, v in params.get(n, {}).items() if v != defaults[n].get(k, v)]
    specs = parse_methods(text, pairs)
    return format_methods(specs), format_params(specs)


def cli_flags(method: str, params: list[str] | tuple[str, ...]) -> str:
    """The mix as the CLI's flags, quoted for a shell: --method '1*kd+0.5*at' --method-param at.p=1."""
    args = ["--method", method] + [a for p in params for a in ("--method-param", p)]
    return " ".join(shlex.quote(a) for a in args)


def preview(cfg: RunConfig, data: Dataset, teacher: nn.Module) -> dict:
    """Extra trainable parameters, how the teacher's targets will be served and the stages
    each method reads; {"error": message} where the models cannot serve the mix."""
    try:
        return method_preview(cfg, data, teacher)
    except KDError as err:
        return {"error": str(err)}
