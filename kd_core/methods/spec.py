"""Method mixes as written on the command line and in URLs, checked against the registry.

Syntax: methods joined by "+", each optionally weighted as "w*name":
    kd            kd+at          0.5*kd+1*at
Parameters: "key=value" (the one method in the mix that has `key`) or "name.key=value".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kd_core.config import MethodSpec, format_methods, format_params  # noqa: F401  (re-exported)
from kd_core.errors import ConfigError
from kd_core.methods.base import Method, make_params, param_info
from kd_core.methods.registry import METHODS, get_method


def _lookup(registry: Mapping[str, Method], name: str) -> Method:
    return get_method(name) if registry is METHODS else registry[name]


def _parse_term(term: str, registry: Mapping[str, Method]) -> tuple[str, float]:
    weight_text, star, name = term.rpartition("*")
    name = name.strip().lower()
    if not name:
        raise ConfigError(f"empty method in '{term}'; write e.g. kd+at or 0.5*kd+1*at.")
    _lookup(registry, name)
    if not star:
        return name, 1.0
    try:
        weight = float(weight_text)
    except ValueError:
        raise ConfigError(
            f"the weight '{weight_text.strip()}' of method '{name}' is not a number; write e.g. 0.5*{name}."
        ) from None
    return name, weight


def _assign(names: Sequence[str], registry: Mapping[str, Method], pairs: Iterable[str]) -> dict[str, dict]:
    """'key=value' / 'name.key=value' strings -> {method: {key: text}}."""
    out: dict[str, dict] = {n: {} for n in names}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ConfigError(f"method parameter '{pair}' is not key=value (e.g. beta=8 or dkd.beta=8).")
        name, dot, bare = key.rpartition(".")
        if dot:
            if name not in out:
                raise ConfigError(
                    f"method parameter '{pair}' is for '{name}', which is not in the mix ({'+'.join(names)})."
                )
        else:
            owners = [n for n in names if bare in {p.name for p in param_info(registry[n])}]
            if len(owners) != 1:
                where = (
                    f"several methods have '{bare}' ({', '.join(owners)}); "
                    f"write e.g. {owners[0]}.{bare}={value.strip()}"
                    if owners
                    else f"no method in {'+'.join(names)} has a parameter '{bare}'"
                )
                raise ConfigError(f"method parameter '{pair}': {where}.")
            name = owners[0]
        out[name][bare] = value.strip()
    return out


def parse_methods(
    text: str, params: Sequence[str] = (), registry: Mapping[str, Method] = METHODS
) -> tuple[MethodSpec, ...]:
    """'0.5*kd+1*at' and ['at.beta=500'] -> validated MethodSpecs with typed parameter values."""
    terms = [t for t in text.replace(" ", "").split("+")]
    if not text.strip() or any(not t for t in terms):
        raise ConfigError(f"'{text}' is not a method mix; write e.g. kd, kd+at or 0.5*kd+1*at.")
    named = [_parse_term(t, registry) for t in terms]
    by_method = _assign([n for n, _ in named], registry, params)
    specs = []
    for name, weight in named:
        typed = make_params(registry[name], by_method[name])
        specs.append(MethodSpec(name, weight, tuple(sorted((k, getattr(typed, k)) for k in by_method[name]))))
    validate_methods(tuple(specs), registry)
    return tuple(specs)


def validate_methods(specs: Sequence[MethodSpec], registry: Mapping[str, Method] = METHODS) -> list[Any]:
    """ConfigError unless the mix is usable; returns each method's Params in order."""
    if not specs:
        raise ConfigError("a distillation run needs at least one method (e.g. kd).")
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"method {', '.join(dupes)} appears twice in the mix; give it once with its weight.")
    out = []
    for s in specs:
        method = _lookup(registry, s.name)
        if (
            isinstance(s.weight, bool)
            or not isinstance(s.weight, (int, float))
            or not math.isfinite(s.weight)
            or s.weight < 0
        ):
            raise ConfigError(f"the weight of method '{s.name}' must be a finite number >= 0, got {s.weight!r}.")
        out.append(make_params(method, dict(s.params)))
    if not any(s.weight > 0 for s in specs):
        raise ConfigError("every method in the mix has weight 0; give at least one a positive weight.")
    return out
