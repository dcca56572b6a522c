"""The training loop: teacher-logit caching, determinism, stopping, divergence,
model selection and the progress records, on digits with tiny MLPs."""

from __future__ import annotations

import math
import threading
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from helpers import STUDENT_SPEC, TEACHER_SPEC, StepRecorder, make_config
from kd_core.config import ModelSpec
from kd_core.errors import ConfigError
from kd_core.train.engine import FitResult, fit
from kd_core.train.metrics import accuracy, predict_logits


def run(cfg, data, teacher=None, stop=None):
    rec = StepRecorder()
    result = fit(cfg, data, teacher, emit=rec, stop=stop)
    return result, rec


def state_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class CallCounter:
    """A forward hook that counts the teacher's calls and the rows it saw."""

    def __init__(self, module: nn.Module):
        self.calls, self.rows = 0, 0
        self.handle = module.register_forward_hook(self)

    def __call__(self, module, inputs, output) -> None:
        self.calls += 1
        self.rows += len(inputs[0])


# ---------------------------------------------------------------- teacher logits


def test_cached_and_uncached_teacher_logits_give_the_same_losses(digits, teacher):
    cached, rec_cached = run(make_config("student", cache=True), digits, teacher)
    fresh, rec_fresh = run(make_config("student", cache=False), digits, teacher)
    assert cached.status == fresh.status == "finished"
    a, b = rec_cached.losses(), rec_fresh.losses()
    assert a.shape == b.shape and len(a) == 2 * math.ceil(len(digits.train_y) / 64)
    assert (a[:, 2] > 0).all()  # the teacher really took part
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    for pa, pb in zip(cached.model.parameters(), fresh.model.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("augment, cache, cached", [(False, True, True), (False, False, False), (True, True, False)])
def test_teacher_runs_once_when_cached_and_every_step_otherwise(digits, teacher, augment, cache, cached):
    """Augmentation shows the teacher a new view of each image, so it turns the cache off
    even when the config asks for it."""
    counter = CallCounter(teacher)
    try:
        result, rec = run(make_config("student", epochs=2, augment=augment, cache=cache), digits, teacher)
    finally:
        counter.handle.remove()
    steps = len(rec.of("step"))
    assert result.status == "finished" and steps == 2 * math.ceil(len(digits.train_y) / 64)
    if cached:
        assert counter.rows == len(digits.train_y) and counter.calls < steps
    else:
        assert counter.calls == steps and counter.rows == 2 * len(digits.train_y)


def test_augmentation_changes_what_the_teacher_sees(digits, teacher):
    """Uncached teacher logits with augmentation differ from those without it."""
    plain, rec_plain = run(make_config("student", epochs=1, cache=False), digits, teacher)
    aug, rec_aug = run(make_config("student", epochs=1, cache=False, augment=True), digits, teacher)
    assert plain.status == aug.status == "finished"
    assert not np.allclose(rec_plain.losses()[:, 2], rec_aug.losses()[:, 2])


def test_step_loss_mixes_ce_and_kd_by_lambda(digits, teacher):
    lam = 0.7
    _, rec = run(make_config("student", epochs=1, alpha=lam), digits, teacher)
    loss, ce, kd = rec.losses().T
    np.testing.assert_allclose(loss, (1 - lam) * ce + lam * kd, rtol=1e-5, atol=1e-6)
    _, rec_teacher = run(make_config("teacher", epochs=1), digits)
    loss, ce, kd = rec_teacher.losses().T
    assert (kd == 0).all()
    np.testing.assert_array_equal(loss, ce)


def test_student_without_teacher_trains_on_labels_only(digits):
    _, rec = run(make_config("student", epochs=1), digits, teacher=None)
    loss, ce, kd = rec.losses().T
    assert (kd == 0).all()
    np.testing.assert_array_equal(loss, ce)


# ---------------------------------------------------------------- determinism


@pytest.mark.parametrize("augment", [False, True])
def test_same_seed_same_numbers_different_seed_different(digits, teacher, augment):
    first, rec1 = run(make_config("student", seed=3, augment=augment), digits, teacher)
    torch.manual_seed(12345)  # the global RNG must not leak into a run
    torch.rand(100)
    second, rec2 = run(make_config("student", seed=3, augment=augment), digits, teacher)
    other, rec3 = run(make_config("student", seed=4, augment=augment), digits, teacher)
    np.testing.assert_array_equal(rec1.losses(), rec2.losses())
    assert [h["val_acc"] for h in first.history] == [h["val_acc"] for h in second.history]
    assert state_equal(first.model, second.model)
    assert not np.array_equal(rec1.losses(), rec3.losses())
    assert not state_equal(first.model, other.model)


def test_seed_sets_the_batch_order(digits, teacher):
    """The uncached teacher sees each batch as drawn: same seed, same batches; new seed, new order."""

    def first_batches(seed: int) -> list[torch.Tensor]:
        seen = []
        handle = teacher.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0].clone()))
        try:
            run(make_config("student", epochs=1, seed=seed, cache=False), digits, teacher)
        finally:
            handle.remove()
        return seen[:3]

    a, b, c = first_batches(5), first_batches(5), first_batches(6)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not any(torch.equal(x, z) for x, z in zip(a, c))


def test_initial_weights_depend_only_on_the_seed(digits):
    a, _ = run(make_config("teacher", epochs=1, lr=1e-12, seed=7), digits)
    b, _ = run(make_config("teacher", epochs=1, lr=1e-12, seed=7, batch_size=128), digits)
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=1e-8)


# ---------------------------------------------------------------- stopping


@pytest.mark.parametrize("stop_after", [5, 27])
def test_stop_between_steps(digits, teacher, stop_after):
    """An Event set from the emit callback after N steps ends the run right there."""
    stop = threading.Event()
    records = []

    def emit(rec):
        records.append(rec)
        if rec.event == "step" and rec.step == stop_after:
            stop.set()

    cfg = make_config("student", epochs=5)
    result = fit(cfg, digits, teacher, emit=emit, stop=stop)
    steps = [r.step for r in records if r.event == "step"]
    assert result.status == "stopped"
    assert steps == list(range(1, stop_after + 1))
    assert records[-1].event == "end" and records[-1].status == "stopped" and records[-1].step == stop_after
    assert isinstance(result.model, nn.Module) and not result.model.training
    steps_per_epoch = math.ceil(len(digits.train_y) / 64)
    assert len(result.history) == stop_after // steps_per_epoch
    # The returned model works: it predicts every validation sample.
    assert predict_logits(result.model, digits.val_x).shape == (len(digits.val_y), digits.num_classes)


def test_stop_before_start_trains_nothing(digits):
    stop = threading.Event()
    stop.set()
    result, rec = run(make_config("teacher", epochs=3), digits, stop=stop)
    assert result.status == "stopped" and not rec.of("step") and result.history == []


# ---------------------------------------------------------------- divergence


@pytest.mark.parametrize(
    "optimizer, lr, loss_text",
    [
        ("adam", 1e6, "e+"),  # finite but exploded
        ("sgd", 1e30, "nan"),
    ],
)  # not finite at all
def test_diverging_loss_fails_with_a_learning_rate_message(digits, optimizer, lr, loss_text):
    result, rec = run(make_config("teacher", TEACHER_SPEC, epochs=3, lr=lr, optimizer=optimizer), digits)
    assert isinstance(result, FitResult)
    assert result.status == "failed"
    assert "learning rate" in result.message and f"{lr:g}" in result.message
    assert loss_text in result.message.split(" at step")[0]  # "the loss became <value>"
    steps = len(rec.of("step"))
    assert steps < math.ceil(len(digits.train_y) / 64)  # it gave up within the first epoch
    end = rec.records[-1]
    assert end.event == "end" and end.status == "failed" and "learning rate" in end.message
    assert result.history == []


@pytest.mark.parametrize(
    "field, value, word",
    [
        ("epochs", 0, "epochs"),
        ("batch_size", 0, "batch size"),
        ("lr", -1.0, "learning rate"),
        ("lr", float("nan"), "learning rate"),
        ("optimizer", "lbfgs", "optimizer"),
        ("threads", -1, "threads"),
        ("spare_cores", -1, "spare cores"),
        ("precision", "fp16", "precision"),
    ],
)
def test_invalid_training_config_is_a_config_error(digits, field, value, word):
    cfg = make_config("teacher", epochs=1)
    cfg = replace(cfg, train=replace(cfg.train, **{field: value}))
    with pytest.raises(ConfigError, match=word):
        fit(cfg, digits)


# ---------------------------------------------------------------- results


def test_larger_student_is_allowed_with_a_warning(digits, teacher):
    big, _ = run(make_config("student", ModelSpec("mlp", 256, 1), epochs=1), digits, teacher)
    small, _ = run(make_config("student", STUDENT_SPEC, epochs=1), digits, teacher)
    assert big.status == "finished"
    assert len(big.warnings) == 1 and "larger than its teacher" in big.warnings[0]
    assert small.warnings == []


def test_returned_model_is_the_best_on_validation(digits):
    """Validation labels shifted by one class: the better the model fits the training data,
    the worse its validation accuracy, so the best epoch is an early one, not the last."""
    data = replace(digits, val_x=digits.train_x, val_y=(digits.train_y + 1) % digits.num_classes)
    result, _ = run(make_config("teacher", epochs=4, lr=3e-3), data)
    val = [h["val_acc"] for h in result.history]
    assert result.best_val_acc == max(val) and result.final_val_acc == val[-1]
    assert val[result.best_epoch - 1] == max(val) and max(val) > val[-1]
    returned = accuracy(predict_logits(result.model, data.val_x), data.val_y)
    assert returned == pytest.approx(max(val), abs=1e-9)


def test_progress_records(digits, teacher):
    epochs, bs = 2, 100
    result, rec = run(make_config("student", epochs=epochs, batch_size=bs), digits, teacher)
    per_epoch = math.ceil(len(digits.train_y) / bs)
    steps = rec.of("step")
    assert [r.step for r in steps] == list(range(1, epochs * per_epoch + 1))
    assert all(r.total_steps == epochs * per_epoch for r in rec.records)
    assert [r.epoch for r in rec.of("epoch")] == [1, 2]
    assert [r.val_acc for r in rec.of("epoch")] == [h["val_acc"] for h in result.history]
    # Epoch loss is the sample-weighted mean of that epoch's step losses (the last batch is smaller).
    sizes = [bs] * (per_epoch - 1) + [len(digits.train_y) - bs * (per_epoch - 1)]
    for e, h in enumerate(result.history):
        losses = [r.loss for r in steps[e * per_epoch : (e + 1) * per_epoch]]
        assert h["loss"] == pytest.approx(sum(loss * n for loss, n in zip(losses, sizes)) / sum(sizes), rel=1e-9)
        assert 0.0 <= h["train_acc"] <= 1.0
    end = rec.records[-1]
    assert end.event == "end" and end.status == "finished" and result.status == "finished"


def test_random_shift_pads_with_fill_and_moves_pixels_like_a_loop():
    from kd_core.train.engine import random_shift

    x = torch.randn(5, 2, 6, 7)
    gen = torch.Generator().manual_seed(3)
    out = random_shift(x, 2, gen, fill=-0.42)
    gen = torch.Generator().manual_seed(3)  # replay the same draws
    dy = torch.randint(0, 5, (5,), generator=gen)
    dx = torch.randint(0, 5, (5,), generator=gen)
    for b in range(5):
        for i in range(6):
            for j in range(7):
                si, sj = i + int(dy[b]) - 2, j + int(dx[b]) - 2
                inside = 0 <= si < 6 and 0 <= sj < 7
                want = x[b, :, si, sj] if inside else torch.full((2,), -0.42)
                assert torch.equal(out[b, :, i, j], want), (b, i, j)


def test_augmented_border_is_normalised_black(digits):
    """A shifted digit's new border is what a black pixel normalises to, not 0."""
    from kd_core.train.engine import random_shift

    fill = -digits.mean / digits.std
    out = random_shift(digits.train_x[:64], 2, torch.Generator().manual_seed(0), fill=fill)
    assert out.min().item() >= digits.train_x.min().item() - 1e-6
    assert (out == torch.tensor(fill, dtype=out.dtype)).any()


@pytest.mark.parametrize(
    "flops, cores, spare, want",
    [
        (1e6, 8, 0, 1),
        (19.9e6, 2, 0, 1),
        (20e6, 2, 0, 2),
        (5e9, 16, 0, 16),
        (5e9, 16, 1, 15),
        (5e9, 2, 1, 1),
        (5e9, 1, 1, 1),
        (1e6, 16, 1, 1),
    ],
)
def test_auto_threads_one_for_small_steps_all_but_spare_cores_for_large(flops, cores, spare, want):
    from kd_core.train.engine import auto_threads

    assert auto_threads(flops, cores, spare) == want


def test_dashboard_configs_leave_a_core_spare():
    from kd_core.views import studio

    cfg = studio.make_config("student", "digits", "data", 32, "mlp", 32, 1, epochs=1, lr=1e-3, batch_size=32)
    assert cfg.train.threads == 0 and cfg.train.spare_cores == studio.DASHBOARD_SPARE_CORES == 1


@pytest.mark.slow
def test_fit_reports_threads_auto_and_explicit(digits):
    auto = fit(make_config(epochs=1), digits)
    assert auto.threads == 1  # a tiny digits MLP is far below the threshold
    explicit = fit(make_config(epochs=1, threads=2), digits)
    assert explicit.threads == 2 and torch.get_num_threads() == 2
    torch.set_num_threads(1)
