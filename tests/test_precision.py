"""Precision (fp32 | bf16 | auto) and channels-last: what a run trains in, that its losses
stay float32 and its cached teacher targets too, that auto decides by the device and the
step's size, and that a bad value is refused before anything runs. Real engine, digits."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import STUDENT_SPEC, StepRecorder, make_config
from kd_core.cli import main
from kd_core.config import DistillConfig, ModelSpec, RunConfig
from kd_core.deploy import export
from kd_core.deploy import runtimes as rt
from kd_core.errors import ConfigError
from kd_core.store import Store
from kd_core.train.engine import fit
from kd_core.train.metrics import predict_logits
from kd_core.train.models import MLP, build_model
from kd_core.train.plan import TeacherTargets, plan_methods
from kd_core.train.precision import (
    AUTO_BF16_MIN_STEP_FLOPS,
    PrecisionChoice,
    autocast,
    bf16_support,
    resolve_precision,
)

CPU = torch.device("cpu")
BF16 = PrecisionChoice("bf16", "asked for")


def cpuinfo_has_bf16() -> bool:
    """Read independently of kd_core: any 'flags' line naming a native bf16 feature."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return False
    return any(
        ln.startswith("flags") and ({"avx512_bf16", "amx_bf16"} & set(ln.split(":", 1)[1].split())) for ln in lines
    )


# ---------------------------------------------------------------- choosing


def test_auto_picks_fp32_for_a_tiny_model_and_says_why(digits):
    result = fit(make_config("teacher", epochs=1, precision="auto"), digits)
    assert result.status == "finished"
    assert result.precision.startswith("fp32 (auto:"), result.precision
    assert resolve_precision("auto", CPU, 1e6).dtype == "fp32"


def test_auto_takes_bf16_for_a_large_step_only_where_the_cpu_has_it():
    native, why = bf16_support(CPU)
    assert native == cpuinfo_has_bf16(), why
    large = resolve_precision("auto", CPU, 10 * AUTO_BF16_MIN_STEP_FLOPS)
    assert large.dtype == ("bf16" if native else "fp32"), large.describe()
    # just under the threshold is fp32 on any machine
    assert resolve_precision("auto", CPU, 0.99 * AUTO_BF16_MIN_STEP_FLOPS).dtype == "fp32"


@pytest.mark.parametrize("asked", ["fp32", "bf16"])
def test_an_explicit_precision_is_taken_as_asked(asked):
    assert resolve_precision(asked, CPU, 1.0).dtype == resolve_precision(asked, CPU, 1e15).dtype == asked


def test_a_bad_precision_is_refused_before_training(digits):
    cfg = make_config("teacher", epochs=1, precision="fp16")
    with pytest.raises(ConfigError, match="unknown precision 'fp16'; use fp32, bf16, auto"):
        fit(cfg, digits)


def test_cli_refuses_a_bad_precision_with_one_line_and_stores_nothing(tmp_path, capsys):
    store = tmp_path / "store"
    code = main(["teacher", "--precision", "half", "--epochs", "1", "--quiet", "--store", str(store)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: unknown precision 'half'"), err
    assert not store.exists() or Store(store).list_runs() == []


def test_precision_is_stored_with_the_run_and_its_choice(tmp_path, capsys):
    store = tmp_path / "store"
    args = ["teacher", "--size", "16", "--depth", "1", "--precision", "bf16", "--epochs", "1", "--quiet"]
    assert main([*args, "--store", str(store)]) == 0
    (row,) = Store(store).list_runs()
    assert row.config.train.precision == "bf16"
    assert row.metrics["train_precision"] == "bf16 (asked for)"
    assert row.metrics["channels_last"] is False  # an MLP has no convolutions


def test_configs_stored_before_precision_load_as_fp32():
    old = RunConfig().to_dict()
    del old["train"]["precision"]
    assert RunConfig.from_dict(old).train.precision == "fp32"


# ---------------------------------------------------------------- training in bf16


def test_bf16_runs_the_layers_in_bfloat16_and_learns_as_fp32_does(digits):
    spec = ModelSpec("mlp", 128, 1)
    seen: list[torch.dtype] = []
    results = {}
    for precision in ("fp32", "bf16"):
        seen.clear()
        handle = torch.nn.modules.module.register_module_forward_hook(
            lambda m, i, o: seen.append(o.dtype) if isinstance(m, torch.nn.Linear) and m.training else None
        )
        try:
            results[precision] = fit(make_config("teacher", spec, epochs=4, precision=precision), digits)
        finally:
            handle.remove()
        want = torch.bfloat16 if precision == "bf16" else torch.float32
        assert seen and set(seen) == {want}, (precision, set(seen))
    fp32, bf16 = results["fp32"], results["bf16"]
    assert fp32.status == bf16.status == "finished"
    assert fp32.best_val_acc > 0.85 and abs(fp32.best_val_acc - bf16.best_val_acc) < 0.05
    # the returned model is plain float32 and predicts in float32
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())
    assert predict_logits(bf16.model, digits.val_x).dtype == torch.float32


def test_the_loss_is_computed_in_float32_from_the_bf16_logits(digits):
    """The first step's loss equals a float64 cross-entropy of the very logits the model gave
    (bf16), to float32 accuracy; a bf16 loss would be off by ~1e-3 relative."""
    cfg = make_config("teacher", STUDENT_SPEC, epochs=1, precision="bf16", batch_size=64)
    first: list[torch.Tensor] = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda m, i, o: first.append(o.detach().clone()) if isinstance(m, MLP) and m.training and not first else None
    )
    rec = StepRecorder()
    try:
        fit(cfg, digits, emit=rec)
    finally:
        handle.remove()
    (logits,) = first
    assert logits.dtype == torch.bfloat16
    perm = torch.randperm(len(digits.train_y), generator=torch.Generator().manual_seed(cfg.train.seed))
    labels = digits.train_y[perm[:64]]
    want = F.cross_entropy(logits.double(), labels).item()
    got = rec.of("step")[0].loss
    assert math.isclose(got, want, rel_tol=2e-6), (got, want)
    in_bf16 = F.cross_entropy(logits, labels).item()  # what the loss would be, kept in bf16
    assert not math.isclose(in_bf16, want, rel_tol=2e-6), "the check cannot tell fp32 from bf16 here"


def test_cached_teacher_targets_are_float32_under_bf16(digits, teacher):
    student = build_model(STUDENT_SPEC, digits.input_shape, digits.num_classes)
    plans = plan_methods(DistillConfig(), student, teacher, digits.input_shape)
    x = digits.train_x[:300]
    targets = TeacherTargets(teacher, plans, x, True, False, autocast=partial(autocast, CPU, BF16))
    cache = targets.cache[0]
    assert cache is not None and cache.logits.dtype == torch.float32
    exact = predict_logits(teacher, x).double()
    err = (cache.logits.double() - exact).abs().max().item()
    # bf16 has an 8-bit mantissa: the teacher really ran in it (not exact), yet close
    assert 0 < err < 0.1 * exact.abs().max().item(), err
    live = TeacherTargets(teacher, plans, x, False, False, autocast=partial(autocast, CPU, BF16))
    (served,) = live(torch.arange(5), x[:5])
    assert served.logits.dtype == torch.float32


def test_a_bf16_student_distils_as_the_fp32_one_does(digits, teacher):
    """Same seed, same batches: the bf16 run's per-step losses and terms follow the fp32 run's
    to bf16's rounding, and the distillation term takes part."""
    recs = {}
    for precision in ("fp32", "bf16"):
        recs[precision] = StepRecorder()
        result = fit(make_config("student", epochs=2, precision=precision), digits, teacher, emit=recs[precision])
        assert result.status == "finished" and result.precision == f"{precision} (asked for)"
        assert result.cache.startswith("cached")
    a, b = recs["fp32"].losses(), recs["bf16"].losses()
    assert a.shape == b.shape and (b[:, 2] > 0).all()
    np.testing.assert_allclose(b, a, rtol=0.05, atol=0.01)
    assert not np.array_equal(a, b)  # bf16 really ran


# ---------------------------------------------------------------- channels-last


def test_a_cnn_trains_in_channels_last_and_comes_back_in_the_default_layout(digits):
    layouts: list[bool] = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda m, i, o: (
            layouts.append(i[0].is_contiguous(memory_format=torch.channels_last))
            if isinstance(m, torch.nn.Conv2d) and m.training
            else None
        )
    )
    try:
        result = fit(make_config("teacher", ModelSpec("cnn", 8), epochs=1), digits)
    finally:
        handle.remove()
    assert result.status == "finished" and result.channels_last
    assert layouts and all(layouts)
    conv = next(m for m in result.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous()  # saved, exported and timed as a plain model
    mlp = fit(make_config("teacher", epochs=1), digits)
    assert not mlp.channels_last


# ---------------------------------------------------------------- inference


@pytest.mark.slow
def test_bf16_eager_joins_the_latency_table_where_the_cpu_does_bf16(tmp_path, digits):
    store = tmp_path / "store"
    assert main(["teacher", "--size", "64", "--depth", "1", "--epochs", "2", "--quiet", "--store", str(store)]) == 0
    (row,) = Store(store).list_runs()
    asked = ["eager", "eager-bf16"]
    if not bf16_support(CPU)[0]:
        with pytest.raises(ConfigError, match="not available on this machine"):
            rt.bench_run(store, row.id, runtimes=asked)
        return
    result = rt.bench_run(store, row.id, runtimes=asked, batch_sizes=(1, 16), warmup=1, repeats=3)
    got = {(r["model"], r["runtime"], r["precision"], r["batch_size"]) for r in result["rows"]}
    want = {("teacher", "eager", "float32"), ("teacher", "eager-bf16", "bfloat16"), ("teacher-int8", "eager", "int8")}
    assert got == {(*w, b) for w in want for b in (1, 16)}  # an int8 model has no bf16 row
    # what the bf16 row times: float32 logits from bfloat16 arithmetic, close to the float model's
    run = export.load_run(Store(store), row.id)
    fn, _ = rt.runner(rt.Variant("teacher", run), "eager-bf16", tmp_path, 1)
    with torch.inference_mode():
        exact, rounded = run.model(digits.test_x), fn(digits.test_x)
    assert rounded.dtype == torch.float32 and not torch.equal(rounded, exact)
    assert (rounded - exact).abs().max() < 0.05 * exact.abs().max()
    assert (rounded.argmax(-1) == exact.argmax(-1)).float().mean() > 0.97
