"""The distillation flags every command that distils shares, and the `methods` command."""

from __future__ import annotations

import argparse
import json

from kd_core.config import DistillConfig
from kd_core.methods import catalogue, parse_methods

METHOD_HELP = (
    "distillation method, or a mix joined by '+' with optional weights 'w*name': kd, dkd, kd+at, "
    "'0.5*kd+1*at' (quote it: * is a shell wildcard). Loss = (1 − λ)·CE + λ·Σ w·(the method's terms). "
    "The methods, their papers and parameters: `kd-studio methods`"
)


def add_method_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("distillation")
    d = DistillConfig()
    g.add_argument("--temperature", "-T", type=float, default=d.temperature, help="T of every logit-based method")
    g.add_argument(
        "--alpha",
        "--lambda",
        type=float,
        default=d.alpha,
        help="λ in [0, 1]: weight of the methods' terms against the labels' CE",
    )
    g.add_argument("--method", default="kd", help=METHOD_HELP)
    g.add_argument(
        "--method-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a method's paper default, e.g. beta=8; 'dkd.beta=8' names the method in a mix (repeatable)",
    )
    g.add_argument("--no-cache", action="store_true", help="run the teacher on every batch")


def distill_config(a) -> DistillConfig:
    """The distillation flags as a DistillConfig; a bad method or parameter is a ConfigError
    here, before any data is loaded or anything is stored."""
    return DistillConfig(
        temperature=a.temperature,
        alpha=a.alpha,
        cache_teacher_logits=not a.no_cache,
        methods=parse_methods(a.method, a.method_param),
    )


def cmd_methods(a) -> int:
    entries = catalogue()
    if a.json:
        print(json.dumps(entries, indent=2))
        return 0
    for m in entries:
        print(f"{m['name']:10s} {m['family']:9s} {m['title']} — {m['paper']}")
        for p in m["params"]:
            print(f"{'':21s}{p['name']}={p['default']}  {p['help']}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("methods", help="list the distillation methods, their papers and parameters")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_methods)
