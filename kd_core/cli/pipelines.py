"""`takd`, `ban` and `dml`: the multi-model methods (kd_core.pipelines), each stage a stored run.

Models are written FAMILY[:SIZE[xDEPTH]] for mlp and cnn (mlp:128, mlp:256x2, cnn:16) and
FAMILY[:WIDTH] for the torchvision families (resnet18:0.5). Every stage is checked before the
dataset loads and again against the data before the first run is stored.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace

from kd_core.cli.common import (
    EXIT_USER_ERROR,
    ProgressBar,
    StopOnSignal,
    add_data_args,
    add_model_args,
    add_train_args,
    data_config,
    exit_code,
    load,
    model_spec,
    report,
    train_config,
)
from kd_core.cli.methods import add_method_args, distill_config
from kd_core.cli.train import _teacher_ref
from kd_core.config import DistillConfig, ModelSpec, RunConfig
from kd_core.events import Progress
from kd_core.pipelines import PipelineResult, ban, dml, takd
from kd_core.pipelines.ban import ban_configs
from kd_core.pipelines.common import SPEC_HELP, parse_spec
from kd_core.pipelines.dml import dml_configs
from kd_core.pipelines.takd import takd_configs
from kd_core.train.models import student_preset, teacher_preset
from kd_core.train.pretrained import check_model
from kd_core.train.recorder import load_teacher


def _base(a, model: ModelSpec, distill: DistillConfig | None) -> RunConfig:
    return RunConfig(kind="student", data=data_config(a), model=model, train=train_config(a), distill=distill)


class _FirstRunBar:
    """A progress bar over the first run of each stage group (DML's peers step together:
    peer 0's bar stands for all of them)."""

    def __init__(self, enabled: bool):
        self.bar, self.seen = ProgressBar(enabled), ""

    def __call__(self, rec: Progress) -> None:
        self.seen = self.seen or rec.run_id
        if rec.run_id == self.seen:
            self.bar(rec)


def _finish(a, command: str, cfg: RunConfig, result: PipelineResult, stop: StopOnSignal, started: float, data) -> int:
    payload = {"command": command, "config": cfg.to_dict(), **result.summary(), "dataset": data.info()}
    report(a, payload, started)
    code = exit_code(payload["runs"], stop)
    if code == 0 and result.status == "failed":  # refused at a stage that stored no run
        print(f"error: {command} stopped: {result.message}", file=sys.stderr)
        return stop.code(EXIT_USER_ERROR)
    return code


def cmd_takd(a) -> int:
    started = time.perf_counter()
    base = _base(a, student_preset(a.dataset), distill_config(a))
    chain = [parse_spec(s) for s in [*a.assistant, a.student]]
    takd_configs(base, "teacher", chain, "check")  # refused here, before the data loads
    data, store = load(a)
    for spec in chain:
        check_model(replace(base, model=spec), data)
    teacher_id = _teacher_ref(a.teacher)
    teacher = load_teacher(store, a.teacher, data)
    with StopOnSignal() as stop:
        bar = ProgressBar(not a.quiet)
        result = takd(store, base, data, teacher, teacher_id, chain, emit=bar, stop=stop.event)
        bar.close()
    return _finish(a, "takd", base, result, stop, started, data)


def cmd_ban(a) -> int:
    started = time.perf_counter()
    base = _base(a, model_spec(a, teacher_preset(a.dataset)), distill_config(a))
    ban_configs(base, a.generations, "check", a.teacher and "teacher", a.ensemble)  # refused before the data loads
    data, store = load(a)
    check_model(base, data)
    teacher = load_teacher(store, a.teacher, data) if a.teacher else None
    teacher_id = _teacher_ref(a.teacher) if a.teacher else None
    with StopOnSignal() as stop:
        bar = ProgressBar(not a.quiet)
        result = ban(store, base, data, a.generations, teacher, teacher_id, a.ensemble, emit=bar, stop=stop.event)
        bar.close()
    return _finish(a, "ban", base, result, stop, started, data)


def cmd_dml(a) -> int:
    started = time.perf_counter()
    base = _base(a, student_preset(a.dataset), DistillConfig(temperature=a.temperature, alpha=a.alpha))
    peers = [parse_spec(s) for s in a.peer]
    dml_configs(base, peers, "check")  # refused before the data loads
    data, store = load(a)
    for spec in peers:
        check_model(replace(base, model=spec), data)
    with StopOnSignal() as stop:
        sink = _FirstRunBar(not a.quiet)
        result = dml(store, base, data, peers, emit=sink, stop=stop.event)
        sink.bar.close()
    return _finish(a, "dml", base, result, stop, started, data)


def _common(p, epochs: int = 10) -> None:
    add_data_args(p)
    add_train_args(p, epochs=epochs)


def register(sub) -> None:
    """Add takd, ban and dml to the CLI's sub-parsers."""
    p = sub.add_parser("takd", help="teacher → assistant(s) → student, each stage a stored run (Mirzadeh et al. 2020)")
    _common(p)
    p.add_argument("--teacher", required=True, help="teacher run id or checkpoint")
    p.add_argument(
        "--assistant", action="append", required=True, metavar="MODEL", help=f"repeatable, in order; {SPEC_HELP}"
    )
    p.add_argument("--student", required=True, metavar="MODEL", help=SPEC_HELP)
    add_method_args(p)
    p.set_defaults(fn=cmd_takd)

    p = sub.add_parser("ban", help="born-again generations of one architecture (Furlanello et al. 2018)")
    _common(p)
    add_model_args(p, None)
    p.add_argument("--generations", type=int, default=2, help="distilled generations after gen 0")
    p.add_argument("--teacher", help="gen 0: this run id or checkpoint (default: trained here on labels)")
    p.add_argument(
        "--ensemble", action="store_true", help="teach gen k with the mean logits of every earlier generation"
    )
    add_method_args(p)
    p.set_defaults(fn=cmd_ban)

    p = sub.add_parser("dml", help="deep mutual learning: peers trained together (Zhang et al. 2018)")
    _common(p)
    p.add_argument(
        "--peer", action="append", required=True, metavar="MODEL", help=f"repeatable, 2 or more; {SPEC_HELP}"
    )
    p.add_argument("--temperature", "-T", type=float, default=1.0, help="T of the mutual KL (the paper: 1)")
    p.add_argument("--alpha", "--lambda", type=float, default=0.5, help="λ: weight of the mutual KL against CE")
    p.set_defaults(fn=cmd_dml)
