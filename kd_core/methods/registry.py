"""The registry: every single-teacher method by name, in the order the UI lists them."""

from __future__ import annotations

import inspect

from kd_core.errors import ConfigError
from kd_core.methods import at, dist, dkd, fitnets, kd, logit_std, rkd, sp
from kd_core.methods.base import Method, param_info

METHODS: dict[str, Method] = {m.METHOD.name: m.METHOD for m in (kd, dkd, dist, logit_std, fitnets, at, sp, rkd)}
FAMILIES = ("response", "feature", "relation")


def get_method(name: str) -> Method:
    """The method called `name`; ConfigError naming the known ones otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown distillation method '{name}'; choose from: {', '.join(METHODS)}.") from None


def catalogue() -> list[dict]:
    """Every method as plain data, in registry order: name, title, family, paper, whether its
    targets are cacheable, `formula` (the loss docstring's first paragraph), `loss` (all of
    it, whitespace collapsed) and its parameters with type, default and help."""
    return [
        {
            "name": m.name,
            "title": m.title,
            "family": m.family,
            "paper": m.paper,
            "cacheable": m.cacheable,
            "formula": " ".join(inspect.cleandoc(m.loss.__doc__ or "").split("\n\n")[0].split()),
            "loss": " ".join((m.loss.__doc__ or "").split()),
            "params": [{"name": p.name, "type": p.type, "default": p.default, "help": p.help} for p in param_info(m)],
        }
        for m in METHODS.values()
    ]
