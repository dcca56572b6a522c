"""Distillation methods as plug-ins (issue 10). One module per method; see base.py for the
interface and spec.py for mixes ("0.5*kd+1*at"). This package never imports the engine."""

from kd_core.methods.base import (
    EMBEDDING,
    Method,
    Needs,
    NoParams,
    Outputs,
    ParamInfo,
    Shapes,
    make_params,
    param_info,
    resolve_stages,
)
from kd_core.methods.registry import FAMILIES, METHODS, catalogue, get_method
from kd_core.methods.spec import format_methods, format_params, parse_methods, validate_methods

__all__ = [
    "EMBEDDING",
    "FAMILIES",
    "METHODS",
    "Method",
    "Needs",
    "NoParams",
    "Outputs",
    "ParamInfo",
    "Shapes",
    "catalogue",
    "format_methods",
    "format_params",
    "get_method",
    "make_params",
    "param_info",
    "parse_methods",
    "resolve_stages",
    "validate_methods",
]
