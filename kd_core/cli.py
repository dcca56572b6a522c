"""Command line: `python -m kd_core {teacher,distill,sweep,bench,export,datasets,runs} ...`.

Every engine option is a flag. Progress goes to stderr as a bar; `--json`
prints one machine-readable summary on stdout. Errors print one line and exit 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional

from .config import DataConfig, DistillConfig, ModelSpec, RunConfig, TrainConfig
from .errors import KDError

EXIT_USER_ERROR = 2


# ---------------------------------------------------------------- flags → configs


def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="digits", help="digits | mnist | fashion-mnist | cifar10 | folder:PATH")
    g.add_argument("--data-root", default="data", help="where torchvision datasets are kept or downloaded")
    g.add_argument("--image-size", type=int, default=32, help="side length for folder: datasets")
    g.add_argument("--val-fraction", type=float, default=0.1, help="share of training data held out")
    g.add_argument("--split-seed", type=int, default=0, help="seed of the train/val/test split")
    g.add_argument("--no-download", action="store_true", help="never ask torchvision to download")
    g.add_argument("--store", default="kd_runs", help="run store folder (SQLite + weights)")


def add_model_args(p: argparse.ArgumentParser, size_default: Optional[int]) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--family", choices=["mlp", "cnn"], default=None, help="model family (default: the preset's)")
    g.add_argument("--size", type=int, default=size_default, help="MLP hidden width or CNN channel width")
    g.add_argument("--depth", type=int, default=None, help="MLP hidden layers")


def add_train_args(p: argparse.ArgumentParser, epochs: int) -> None:
    g = p.add_argument_group("training")
    d = TrainConfig()
    g.add_argument("--epochs", type=int, default=epochs)
    g.add_argument("--batch-size", type=int, default=d.batch_size)
    g.add_argument("--lr", type=float, default=d.lr, help="learning rate")
    g.add_argument("--optimizer", choices=["adam", "sgd"], default=d.optimizer)
    g.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--cosine", action="store_true", help="cosine learning-rate schedule")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--device", default=d.device, help="auto | cpu | cuda")
    g.add_argument("--augment", action="store_true", help="random ±2 px shifts (turns the logit cache off)")
    g.add_argument("--threads", type=int, default=0,
                   help="torch threads (0: auto, 1 for small models and all cores for large ones)")
    g.add_argument("--patience", type=int, default=0, help="early-stopping patience in epochs (0: off)")
    g.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def data_config(a) -> DataConfig:
    return DataConfig(dataset=a.dataset, root=a.data_root, image_size=a.image_size,
                      val_fraction=a.val_fraction, split_seed=a.split_seed, download=not a.no_download)


def model_spec(a, preset: ModelSpec) -> ModelSpec:
    return ModelSpec(family=a.family or preset.family, size=a.size or preset.size,
                     depth=preset.depth if a.depth is None else a.depth)


def train_config(a) -> TrainConfig:
    return TrainConfig(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, optimizer=a.optimizer,
                       momentum=a.momentum, weight_decay=a.weight_decay, cosine=a.cosine, seed=a.seed,
                       device=a.device, augment=a.augment, threads=a.threads, patience=a.patience)


# ---------------------------------------------------------------- progress


class ProgressBar:
    """A tqdm bar over the engine's progress records (one bar per run)."""

    def __init__(self, enabled: bool):
        self.enabled, self.bar, self.run_id = enabled, None, None

    def __call__(self, rec) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm
        if rec.run_id != self.run_id and rec.total_steps:
            self.close()
            self.run_id = rec.run_id
            self.bar = tqdm(total=rec.total_steps, desc=rec.run_id, unit="step", file=sys.stderr, leave=True)
        if self.bar is None:
            return
        self.bar.n = rec.step
        post = {"loss": f"{rec.loss:.4f}"}
        if rec.val_acc is not None:
            post["val_acc"] = f"{rec.val_acc:.4f}"
        if rec.event != "step" or rec.step % 20 == 0 or rec.step == rec.total_steps:
            self.bar.set_postfix(post, refresh=True)
        if rec.event == "end":
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ---------------------------------------------------------------- commands


def _load(a):
    from .data import load_dataset
    from .store import Store
    return load_dataset(data_config(a)), Store(a.store)


def _report(a, payload: dict, started: float) -> None:
    payload["seconds"] = time.perf_counter() - started
    for o in payload.get("runs", []):
        for w in o.get("warnings", []):
            print(f"warning: {w}", file=sys.stderr)
    if a.json:
        print(json.dumps(payload, indent=2, default=str))
        return
    for o in payload.get("runs", []):
        line = f"{o['kind']:8s} {o['run_id']}  {o['status']}"
        if "test_acc" in o:
            line += (f"  test acc {o['test_acc']:.4f}  best val {o['best_val_acc']:.4f}  "
                     f"params {o['params']:,}  {o['bytes'] / 1e6:.3f} MB")
        if o.get("message"):
            line += f"  ({o['message']})"
        print(line)


def _exit_code(runs: list[dict]) -> int:
    return EXIT_USER_ERROR if any(r["status"] == "failed" for r in runs) else 0


def cmd_teacher(a) -> int:
    from .experiment import train_teacher
    from .models import teacher_preset
    started = time.perf_counter()
    data, store = _load(a)
    cfg = RunConfig(kind="teacher", data=data_config(a), model=model_spec(a, teacher_preset(a.dataset)),
                    train=train_config(a))
    bar = ProgressBar(not a.quiet)
    outcome = train_teacher(store, cfg, data, emit=bar)
    bar.close()
    if a.out and outcome.model is not None:
        from .checkpoint import save_checkpoint
        save_checkpoint(a.out, outcome.model, cfg.model, data.input_shape, data.classes, data.name)
    runs = [outcome.summary()]
    _report(a, {"command": "teacher", "config": cfg.to_dict(), "runs": runs, "dataset": data.info()}, started)
    return _exit_code(runs)


def _teacher_ref(ref: str) -> str:
    """A run id as given; a checkpoint file as an absolute path, so the run's
    reproduce command works from any folder."""
    path = Path(ref).expanduser()
    return str(path.resolve()) if path.is_file() else ref


def cmd_distill(a) -> int:
    from .experiment import distill, load_teacher
    from .models import student_preset
    started = time.perf_counter()
    data, store = _load(a)
    teacher = load_teacher(store, a.teacher, data)
    cfg = RunConfig(kind="student", data=data_config(a), model=model_spec(a, student_preset(a.dataset)),
                    train=train_config(a), teacher_id=_teacher_ref(a.teacher),
                    distill=DistillConfig(temperature=a.temperature, alpha=a.alpha,
                                          cache_teacher_logits=not a.no_cache))
    bar = ProgressBar(not a.quiet)
    outcomes = distill(store, cfg, data, teacher, with_baseline=a.baseline, emit=bar)
    bar.close()
    runs = [o.summary() for o in outcomes]
    _report(a, {"command": "distill", "config": cfg.to_dict(), "runs": runs, "dataset": data.info()}, started)
    return _exit_code(runs)


def cmd_bench(a) -> int:
    from .bench import measure_latency, size_report
    from .checkpoint import load_checkpoint
    from .models import build_model, describe
    from .store import Store
    if a.runtimes:
        from .cli_deploy import cmd_bench_runtimes
        return cmd_bench_runtimes(a)
    started = time.perf_counter()
    if a.threads:
        import torch
        torch.set_num_threads(a.threads)
    if a.model:
        ref = a.model
        run = Store(a.store).get_run(ref)
        model, meta = load_checkpoint(run["weights"] if run and run.get("weights") else ref)
        spec, shape, classes = meta["spec"], meta["input_shape"], len(meta["classes"])
    else:
        spec = ModelSpec(a.family or "mlp", a.size or 64, 1 if a.depth is None else a.depth)
        shape, classes = tuple(a.input_shape), a.classes
        model = build_model(spec, shape, classes)
    batches = tuple(int(b) for b in a.batch_sizes.split(","))
    result = {"model": spec.label(), "input_shape": list(shape), **size_report(model),
              "flops": describe(spec, shape, classes)["flops"],
              "latency": measure_latency(model, shape, batches, warmup=a.warmup, repeats=a.repeats)}
    result["seconds"] = time.perf_counter() - started
    if a.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['model']}: {result['params']:,} params, {result['bytes'] / 1e6:.3f} MB, "
              f"{result['flops']:,} FLOPs/sample, {result['latency']['threads']} threads")
        for bs, r in result["latency"]["batches"].items():
            print(f"  batch {bs:>4}: median {r['median_ms']:.3f} ms  p90 {r['p90_ms']:.3f} ms  "
                  f"{r['ms_per_sample']:.4f} ms/sample  {r['samples_per_s']:,.0f} samples/s")
    return 0


def cmd_datasets(a) -> int:
    from .data import dataset_names
    for name in dataset_names() + ["folder:PATH"]:
        print(name)
    return 0


def cmd_runs(a) -> int:
    from .store import Store
    runs = Store(a.store).list_runs()
    if a.json:
        print(json.dumps(runs, indent=2, default=str))
        return 0
    for r in runs:
        acc = r["metrics"].get("test_acc")
        print(f"{r['id']}  {r['kind']:8s} {r['dataset']:14s} {r['label']:18s} {r['status']:9s} "
              f"{'' if acc is None else f'test acc {acc:.4f}'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kd_core", description="KD Studio: knowledge distillation.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("teacher", help="train a teacher")
    add_data_args(p), add_model_args(p, None), add_train_args(p, epochs=10)
    p.add_argument("--out", help="also write the checkpoint to this path")
    p.set_defaults(fn=cmd_teacher)

    p = sub.add_parser("distill", help="distil a student from a teacher")
    add_data_args(p), add_model_args(p, None), add_train_args(p, epochs=10)
    p.add_argument("--teacher", required=True, help="teacher run id or checkpoint path")
    p.add_argument("--temperature", "-T", type=float, default=DistillConfig().temperature)
    p.add_argument("--alpha", "--lambda", type=float, default=DistillConfig().alpha, help="λ, in [0, 1]")
    p.add_argument("--no-cache", action="store_true", help="run the teacher on every batch")
    p.add_argument("--baseline", action="store_true", help="also train the same student without KD")
    p.set_defaults(fn=cmd_distill)

    p = sub.add_parser("bench", help="size and latency of a model")
    p.add_argument("model", nargs="?", help="run id or checkpoint path (else --family/--size)")
    add_model_args(p, None)
    p.add_argument("--input-shape", type=int, nargs=3, default=[1, 28, 28], metavar=("C", "H", "W"))
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch-sizes", default="1,256")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--store", default="kd_runs")
    p.add_argument("--json", action="store_true")
    p.add_argument("--runtimes", help="eager,torchscript,onnxruntime: latency of a run's models across runtimes")
    p.set_defaults(fn=cmd_bench)

    from .cli_deploy import register as register_deploy
    register_deploy(sub)

    p = sub.add_parser("datasets", help="list the datasets")
    p.set_defaults(fn=cmd_datasets)

    p = sub.add_parser("runs", help="list stored runs")
    p.add_argument("--store", default="kd_runs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_runs)
    from .cli_sweep import register as register_sweep
    register_sweep(sub)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except KDError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
