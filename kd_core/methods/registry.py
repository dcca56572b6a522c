"""The registry: every single-teacher method by name, in the order the UI lists them."""
from __future__ import annotations

from ..errors import ConfigError
from . import at, dist, dkd, fitnets, kd, logit_std, rkd, sp
from .base import Method

METHODS: dict[str, Method] = {m.METHOD.name: m.METHOD for m in (kd, dkd, dist, logit_std, fitnets, at, sp, rkd)}
FAMILIES = ("response", "feature", "relation")


def get_method(name: str) -> Method:
    """The method called `name`; ConfigError naming the known ones otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown distillation method '{name}'; choose from: {', '.join(METHODS)}.") from None
