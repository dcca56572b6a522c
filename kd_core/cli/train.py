"""`teacher`, `distill`, `bench`, `datasets` and `runs`: training and inspecting single runs."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from kd_core.cli.common import (
    ProgressBar,
    StopOnSignal,
    add_data_args,
    add_label_args,
    add_model_args,
    add_train_args,
    batch_sizes,
    check_out_path,
    data_config,
    exit_code,
    label_config,
    load,
    model_spec,
    report,
    train_config,
)
from kd_core.cli.deploy import cmd_bench_runtimes
from kd_core.cli.methods import add_method_args, distill_config
from kd_core.config import ModelSpec, RunConfig
from kd_core.errors import CheckpointError, KDError
from kd_core.store import Store
from kd_core.train.bench import check_bench, measure_latency, size_report
from kd_core.train.blackbox import kind_of, resolve_contract
from kd_core.train.checkpoint import load_checkpoint, save_checkpoint
from kd_core.train.data import dataset_names
from kd_core.train.engine import check_run, validate_config
from kd_core.train.imported import TeacherFile, check_teacher_file, import_teacher_file, read_mapping
from kd_core.train.models import build_model, describe, student_preset, teacher_preset, validate_spec
from kd_core.train.pretrained import check_model
from kd_core.train.recorder import distill, load_teacher, train_teacher


def cmd_teacher(a) -> int:
    started = time.perf_counter()
    cfg = RunConfig(
        kind="teacher",
        data=data_config(a),
        model=model_spec(a, teacher_preset(a.dataset)),
        train=train_config(a),
        labels=label_config(a),
    )
    validate_config(cfg)  # a bad value is refused here, before the dataset loads or a run is stored
    check_out_path(a.out)
    data, store = load(a)
    check_model(cfg, data)
    with StopOnSignal() as stop:
        bar = ProgressBar(not a.quiet)
        outcome = train_teacher(store, cfg, data, emit=bar, stop=stop.event)
        bar.close()
    runs = [outcome.summary()]
    report(a, {"command": "teacher", "config": cfg.to_dict(), "runs": runs, "dataset": data.info()}, started)
    if a.out and outcome.model is not None:
        try:
            save_checkpoint(a.out, outcome.model, cfg.model, data.input_shape, data.classes, data.name)
        except KDError as err:
            raise CheckpointError(f"run {outcome.run_id} is stored, but --out could not be written: {err}") from err
    return exit_code(runs, stop)


def _teacher_ref(ref: str) -> str:
    """A run id as given; a checkpoint file as an absolute path, so the run's
    reproduce command works from any folder."""
    path = Path(ref).expanduser()
    return str(path.resolve()) if path.is_file() else ref


def _teacher_file(a, store: Store, data, cfg: RunConfig) -> str | None:
    """A TorchScript / .pt2 / ONNX --teacher, checked against the dataset and the run (a feature
    method is refused here, before anything is stored), then kept as a teacher run whose id is
    returned; None when --teacher is a run id or a checkpoint."""
    path = Path(a.teacher).expanduser()
    if not path.is_file() or kind_of(path) == "checkpoint":
        return None
    contract = resolve_contract(
        path, a.teacher_contract, channels=a.teacher_channels, size=a.teacher_size, mean=a.teacher_mean,
        std=a.teacher_std, classes=a.teacher_classes,
    )  # fmt: skip
    tf = TeacherFile(path.resolve(), contract, read_mapping(a.class_map), a.cross_dataset)
    check_run(cfg, data, check_teacher_file(tf, data))
    run_id, notes = import_teacher_file(store, tf, data)
    for note in notes:
        print(f"note: teacher {path.name}: {note}", file=sys.stderr)
    return run_id


def cmd_distill(a) -> int:
    started = time.perf_counter()
    distill_cfg = distill_config(a)
    cfg = RunConfig(
        kind="student",
        data=data_config(a),
        model=model_spec(a, student_preset(a.dataset)),
        train=train_config(a),
        labels=label_config(a),
        teacher_id=_teacher_ref(a.teacher),
        distill=distill_cfg,
    )
    validate_config(cfg)  # a bad value is refused here, before the dataset loads or anything is stored
    data, store = load(a)
    check_model(cfg, data)  # before a teacher file is stored as a run
    imported = _teacher_file(a, store, data, cfg)
    if imported:
        cfg = replace(cfg, teacher_id=imported)
    teacher = load_teacher(store, imported or a.teacher, data)
    check_run(cfg, data, teacher)  # AT on an MLP and the like: refused before the student is stored
    with StopOnSignal() as stop:
        bar = ProgressBar(not a.quiet)
        outcomes = distill(store, cfg, data, teacher, with_baseline=a.baseline, emit=bar, stop=stop.event)
        bar.close()
    runs = [o.summary() for o in outcomes]
    report(a, {"command": "distill", "config": cfg.to_dict(), "runs": runs, "dataset": data.info()}, started)
    return exit_code(runs, stop)


def cmd_bench(a) -> int:
    if a.runtimes:
        return cmd_bench_runtimes(a)
    started = time.perf_counter()
    check_bench(tuple(a.input_shape), a.batch_sizes, a.warmup, a.repeats, a.threads, a.classes)
    if a.model:
        ref = a.model
        path = Path(ref).expanduser()
        run = None if path.is_file() else Store(a.store).get_run(ref)
        model, meta = load_checkpoint(run.weights if run and run.weights else ref)
        spec, shape, classes = meta["spec"], meta["input_shape"], len(meta["classes"])
        check_bench(shape, a.batch_sizes, a.warmup, a.repeats, a.threads, classes)
    else:
        size = 64 if a.size is None else a.size  # `--size 0` is refused, not replaced
        spec = ModelSpec(a.family or "mlp", size, 1 if a.depth is None else a.depth, a.width or 1.0)
        validate_spec(spec)
        shape, classes = tuple(a.input_shape), a.classes
        model = build_model(spec, shape, classes)
    if a.threads:
        torch.set_num_threads(a.threads)
    batches = a.batch_sizes
    result = {
        "model": spec.label(),
        "input_shape": list(shape),
        **size_report(model),
        "flops": describe(spec, shape, classes)["flops"],
        "latency": measure_latency(model, shape, batches, warmup=a.warmup, repeats=a.repeats),
    }
    result["seconds"] = time.perf_counter() - started
    if a.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{result['model']}: {result['params']:,} params, {result['bytes'] / 1e6:.3f} MB, "
            f"{result['flops']:,} FLOPs/sample, {result['latency']['threads']} threads"
        )
        for bs, r in result["latency"]["batches"].items():
            print(
                f"  batch {bs:>4}: median {r['median_ms']:.3f} ms  p90 {r['p90_ms']:.3f} ms  "
                f"{r['ms_per_sample']:.4f} ms/sample  {r['samples_per_s']:,.0f} samples/s"
            )
    return 0


def cmd_datasets(a) -> int:
    for name in [*dataset_names(), "folder:PATH"]:
        print(name)
    return 0


def cmd_runs(a) -> int:
    runs = Store(a.store).list_runs()  # a damaged store is a StoreError: one line, never a traceback
    if a.json:
        print(json.dumps([r.to_dict() for r in runs], indent=2, default=str))
        return 0
    for r in runs:
        acc = r.metrics.get("test_acc")
        print(
            f"{r.id}  {r.kind:8s} {r.dataset:14s} {r.label:18s} {r.status:9s} "
            f"{'' if acc is None else f'test acc {acc:.4f}'}"
        )
    return 0


def register(sub) -> None:
    """Add teacher, distill, bench, datasets and runs to the CLI's sub-parsers."""
    p = sub.add_parser("teacher", help="train a teacher")
    add_data_args(p)
    add_model_args(p, None, weights=True)
    add_train_args(p, epochs=10)
    add_label_args(p)
    p.add_argument("--out", help="also write the checkpoint to this path")
    p.set_defaults(fn=cmd_teacher)

    p = sub.add_parser("distill", help="distil a student from a teacher")
    add_data_args(p)
    add_model_args(p, None, weights=True)
    add_train_args(p, epochs=10)
    add_label_args(p)
    p.add_argument(
        "--teacher", required=True, help="teacher run id, checkpoint, or a TorchScript / .pt2 / ONNX file (logits only)"
    )
    g = p.add_argument_group("black-box teacher (TorchScript, .pt2, ONNX): its input contract")
    g.add_argument("--teacher-contract", metavar="JSON", help="channels, size, mean, std, classes (default: FILE.json)")
    g.add_argument("--teacher-channels", type=int, help="1 or 3")
    g.add_argument("--teacher-size", type=int, nargs="+", metavar="PX", help="input side, or height width")
    g.add_argument("--teacher-mean", help="per-channel mean of pixels in [0, 1], comma-separated")
    g.add_argument("--teacher-std", help="per-channel std, comma-separated")
    g.add_argument("--teacher-classes", help="class names in the order of the teacher's outputs, comma-separated")
    g.add_argument("--class-map", metavar="JSON", help='align names: {"teacher class": "dataset class"}')
    g.add_argument("--cross-dataset", action="store_true", help="distil across datasets: output i is class i")
    add_method_args(p)
    p.add_argument("--baseline", action="store_true", help="also train the same student without KD")
    p.set_defaults(fn=cmd_distill)

    p = sub.add_parser("bench", help="size and latency of a model")
    p.add_argument("model", nargs="?", help="run id or checkpoint path (else --family/--size)")
    add_model_args(p, None)
    p.add_argument("--input-shape", type=int, nargs=3, default=[1, 28, 28], metavar=("C", "H", "W"))
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch-sizes", type=batch_sizes, default="1,256", help="comma-separated, e.g. 1,64,256")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--store", default="kd_runs")
    p.add_argument("--json", action="store_true")
    p.add_argument("--runtimes", help="eager,torchscript,onnxruntime[,eager-bf16]: a run's models across runtimes")
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser("datasets", help="list the datasets")
    p.set_defaults(fn=cmd_datasets)

    p = sub.add_parser("runs", help="list stored runs")
    p.add_argument("--store", default="kd_runs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_runs)
