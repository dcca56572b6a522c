"""The GPU check behind benchmarks/gpu_check.sh: the CLI's teacher and distill commands on
`--device` (cuda on a GPU machine; cpu for a dry run), in fp32 and bf16, on digits and
Fashion-MNIST, against an fp32 CPU run of the same configs (same seed, same initial weights,
same batch order). Prints one table and exits 1 if any check failed:

  accuracy  |test acc − the CPU run's| ≤ TOL_FP32 / TOL_BF16 points (a dry run on the CPU:
            the fp32 row is its own reference, so only bf16 is compared);
  cache     the teacher-target cache, built from training tensors on the device as the engine
            builds it, lives on the device and is float32;
  time      each run's training seconds per epoch (`seconds` / epochs, as `fit` reports them).

The runs go through `kd_core.cli.main` (the same code as `kd-studio`), into a temporary store.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from dataclasses import dataclass
from functools import partial

import torch

from kd_core.cli import main as cli
from kd_core.config import DataConfig, DistillConfig, ModelSpec
from kd_core.train.data import load_dataset
from kd_core.train.models import build_model, student_preset, teacher_preset
from kd_core.train.plan import TeacherTargets, plan_methods
from kd_core.train.precision import PrecisionChoice, autocast, bf16_support

DATASETS = ("digits", "fashion-mnist")
# Float arithmetic differs between devices and kernels; bf16 rounds every matmul. On digits one
# test image is 0.28 points, so a couple of flipped predictions must pass.
TOL_FP32, TOL_BF16 = 1.5, 3.0
DRY_TOL_BF16 = 5.0  # one-epoch runs of small models move more with rounding


@dataclass
class Plan:
    """Per dataset: the teacher and student flags and epochs."""

    teacher: list[str]
    student: list[str]
    teacher_epochs: int
    student_epochs: int


def plan_for(dataset: str, dry: bool) -> Plan:
    if dry:  # small models, 1 thread, 2 epochs, 6,000 Fashion-MNIST images: about a minute on 2 cores
        subset = [] if dataset == "digits" else ["--labels", "6000", "--transfer", "none"]
        one = ["--threads", "1", *subset]
        return Plan(["--size", "128", "--depth", "1", *one], one, 2, 2)
    t, s = teacher_preset(dataset), student_preset(dataset)
    epochs = 10 if dataset == "digits" else 2
    return Plan(
        ["--family", t.family, "--size", str(t.size), "--depth", str(t.depth)],
        ["--family", s.family, "--size", str(s.size), "--depth", str(s.depth)],
        epochs,
        epochs,
    )


def run_cli(args: list[str]) -> dict:
    """One CLI command with --json; its summary's first run."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli([*args, "--json", "--quiet"])
    if code != 0:
        raise SystemExit(f"error: `kd-studio {' '.join(args)}` exited {code}")
    return json.loads(out.getvalue())["runs"][0]


def train_pair(dataset: str, device: str, precision: str, plan: Plan, store: str, root: str) -> tuple[dict, dict]:
    common = ["--dataset", dataset, "--data-root", root, "--store", store, "--device", device]
    common += ["--precision", precision, "--seed", "0"]
    teacher = run_cli(["teacher", *common, *plan.teacher, "--epochs", str(plan.teacher_epochs)])
    student = run_cli(
        ["distill", "--teacher", teacher["run_id"], *common, *plan.student, "--epochs", str(plan.student_epochs)]
    )
    return teacher, student


def cache_check(dataset: str, device: torch.device, precision: str, root: str) -> str:
    """Where the engine's teacher-target cache lives when the training rows are on `device`."""
    data = load_dataset(DataConfig(dataset=dataset, root=root))
    x = data.train_x[:2048].to(device)
    teacher = build_model(ModelSpec("mlp", 64, 1), data.input_shape, data.num_classes).to(device).eval()
    student = build_model(ModelSpec("mlp", 16, 1), data.input_shape, data.num_classes).to(device)
    plans = plan_methods(DistillConfig(), student, teacher, data.input_shape)
    choice = PrecisionChoice(precision, "gpu check")
    targets = TeacherTargets(teacher, plans, x, True, False, autocast=partial(autocast, device, choice))
    cache = targets.cache[0]
    targets.close()
    if cache is None:
        return "not cached"
    return f"{cache.logits.device.type}/{str(cache.logits.dtype).removeprefix('torch.')}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (the check) or cpu (a dry run of the script)")
    p.add_argument("--dry-run", action="store_true", help="small models, 1-2 epochs: checks the script, not a GPU")
    p.add_argument("--data-root", default="data")
    p.add_argument("--datasets", default=",".join(DATASETS))
    a = p.parse_args(argv)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "error: --device cuda but torch sees no CUDA GPU; use --device cpu --dry-run to check the script.",
            file=sys.stderr,
        )
        return 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {a.device} ({name}); bf16: {bf16_support(device)[1]}; torch {torch.__version__}")
    tol_bf16 = DRY_TOL_BF16 if a.dry_run else TOL_BF16
    rows, ok = [], True
    with tempfile.TemporaryDirectory(prefix="kd_gpu_check_") as store:
        for dataset in a.datasets.split(","):
            plan = plan_for(dataset, a.dry_run)
            reference = train_pair(dataset, "cpu", "fp32", plan, store, a.data_root)
            for precision in ("fp32", "bf16"):
                same = device.type == "cpu" and precision == "fp32"
                runs = reference if same else train_pair(dataset, a.device, precision, plan, store, a.data_root)
                cache = cache_check(dataset, device, precision, a.data_root)
                cache_ok = cache == f"{device.type}/float32"
                tol = TOL_FP32 if precision == "fp32" else tol_bf16
                for role, run, ref, epochs in zip(
                    ("teacher", "student"), runs, reference, (plan.teacher_epochs, plan.student_epochs)
                ):
                    delta = 100 * (run["test_acc"] - ref["test_acc"])
                    good = abs(delta) <= tol and cache_ok and run["status"] == "finished"
                    ok &= good
                    rows.append(
                        (
                            dataset,
                            role,
                            a.device,
                            precision,
                            run["seconds"] / epochs,
                            run["test_acc"],
                            delta,
                            cache,
                            good,
                        )
                    )
    print_table(rows, tol_bf16)
    print("all checks passed" if ok else "FAILED: see the rows marked no")
    return 0 if ok else 1


def print_table(rows: list[tuple], tol_bf16: float) -> None:
    head = ("dataset", "run", "device", "precision", "s/epoch", "test acc", "Δ vs CPU fp32 (pt)", "cache", "ok")
    print(f"\naccuracy tolerance: fp32 ±{TOL_FP32} points, bf16 ±{tol_bf16}")
    print(" | ".join(head))
    for d, role, dev, prec, sec, acc, delta, cache, good in rows:
        print(
            f"{d} | {role} | {dev} | {prec} | {sec:.2f} | {100 * acc:.2f} % | {delta:+.2f} | {cache} | {'yes' if good else 'no'}"
        )


if __name__ == "__main__":
    sys.exit(main())
