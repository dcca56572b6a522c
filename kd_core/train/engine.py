"""The training loop: trains a teacher, or distils a student from one.

`fit` never prints. It reports through one `Progress` record type to an
`emit` callback, checks a `threading.Event` between steps, and returns a
`FitResult` whose status is finished, stopped or failed.
"""

from __future__ import annotations

import contextvars
import copy
import math
import os
import threading
import time
from dataclasses import dataclass, field, replace
from functools import partial

import torch
from torch import nn

from kd_core.config import RUN_KINDS, DistillConfig, LabelConfig, RunConfig
from kd_core.errors import ConfigError
from kd_core.events import Progress, ProgressSink, ignore
from kd_core.methods import get_method, validate_methods
from kd_core.train.augment import Augmenter, augmented, mixed_cross_entropy, validate_augment
from kd_core.train.augment import random_shift as random_shift
from kd_core.train.batches import AUGMENT_STREAM, Batches, stream
from kd_core.train.data import Dataset
from kd_core.train.features import FeatureForward
from kd_core.train.labels import (
    TrainingSet,
    check_labels,
    has_transfer,
    step_plan,
    training_set,
    transfer_count,
    validate_labels,
)
from kd_core.train.metrics import accuracy, predict_logits
from kd_core.train.models import build_model, describe, param_count, validate_spec
from kd_core.train.plan import (
    Plan,
    TeacherTargets,
    cache_preview,
    extra_param_count,
    plan_methods,
    student_stages,
    weighted_terms,
)
from kd_core.train.precision import (
    PRECISIONS,
    PrecisionChoice,
    as_float,
    autocast,
    resolve_precision,
    to_channels_last,
    wants_channels_last,
)
from kd_core.train.pretrained import load_init_weights

# A finite loss this far above the first step's has diverged as surely as a NaN:
# the weights have blown up and accuracy falls to chance.
DIVERGENCE_FACTOR, DIVERGENCE_FLOOR = 1000.0, 1e4
# Below this many training FLOPs per step (3 × forward × batch) a second thread
# buys nothing even on an idle machine, and on a busy one its OpenMP barrier
# waits make small models several times slower (benchmarks/RESULTS_engine.md).
AUTO_THREADS_MIN_STEP_FLOPS = 20e6
MAX_THREADS = 1024  # more is a typo, and torch would start that many OpenMP threads
MAX_SEED = 2**32 - 1  # numpy's and sklearn's range, which the split seed goes through


@dataclass
class FitResult:
    model: nn.Module
    status: str  # finished | stopped | failed
    message: str = ""
    history: list[dict] = field(default_factory=list)  # one dict per finished epoch
    best_val_acc: float = float("nan")
    final_val_acc: float = float("nan")
    best_epoch: int = 0
    seconds: float = 0.0
    samples_per_s: float = 0.0
    warnings: list[str] = field(default_factory=list)
    threads: int = 0  # torch intra-op threads the run used
    extra: nn.Module | None = None  # the methods' extra trainables (FitNets' regressor), not saved
    cache: str = ""  # how the teacher's targets were served
    labels: dict = field(default_factory=dict)  # the labelled subset and transfer set (TrainingSet.report)
    precision: str = ""  # what it trained in and why: "bf16 (auto: CPU has avx512_bf16, …)"
    channels_last: bool = False  # the model and its inputs in channels-last memory format


def auto_threads(step_flops: float, cores: int, spare: int = 0) -> int:
    """Threads for a model whose training step costs `step_flops`: 1 when small;
    otherwise every core but `spare`. With one core busy elsewhere, a second
    thread made every size 2–3× slower here (benchmarks/RESULTS_engine.md)."""
    return 1 if step_flops < AUTO_THREADS_MIN_STEP_FLOPS else max(1, cores - spare)


def step_flops(cfg: RunConfig, data: Dataset) -> float:
    """Training FLOPs of one step of the model being trained: 3 × forward × batch."""
    return 3 * describe(cfg.model, data.input_shape, data.num_classes)["flops"] * cfg.train.batch_size


def resolve_threads(cfg: RunConfig, data: Dataset) -> int:
    """cfg.train.threads, or (0 = auto) a count chosen from the student's size."""
    if cfg.train.threads > 0:
        return cfg.train.threads
    return auto_threads(step_flops(cfg, data), os.cpu_count() or 1, cfg.train.spare_cores)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ConfigError(f"unknown device '{name}'; use auto, cpu or cuda.")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' was asked for but no CUDA GPU is available; use 'cpu' or 'auto'.")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"device '{name}': this machine has {torch.cuda.device_count()} CUDA GPU(s).")
    return device


def validate_config(cfg: RunConfig) -> None:
    """Refuse every value that would fail, or silently mean something else, before anything is
    stored: one ConfigError naming the value and the range it must be in."""
    t, d = cfg.train, cfg.data
    checks = [
        (cfg.kind in RUN_KINDS, f"unknown run kind '{cfg.kind}'; use {', '.join(RUN_KINDS)}"),
        (t.epochs >= 1, f"epochs must be at least 1, got {t.epochs}"),
        (t.batch_size >= 1, f"batch size must be at least 1, got {t.batch_size}"),
        (t.lr > 0 and math.isfinite(t.lr), f"learning rate must be a positive number, got {t.lr}"),
        (t.optimizer in ("adam", "sgd"), f"unknown optimizer '{t.optimizer}'; use adam or sgd"),
        (0 <= t.momentum < 1, f"SGD momentum must be in [0, 1), got {t.momentum}"),
        (0 <= t.weight_decay < math.inf, f"weight decay must be >= 0, got {t.weight_decay}"),
        (0 <= t.threads <= MAX_THREADS, f"threads must be 0 (auto) or a count up to {MAX_THREADS}, got {t.threads}"),
        (t.spare_cores >= 0, f"spare cores must be >= 0, got {t.spare_cores}"),
        (t.patience >= 0, f"patience must be 0 (off) or a number of epochs, got {t.patience}"),
        (t.precision in PRECISIONS, f"unknown precision '{t.precision}'; use {', '.join(PRECISIONS)}"),
        (0 <= t.seed <= MAX_SEED, f"seed must be in [0, {MAX_SEED}], got {t.seed}"),
        (0 <= d.split_seed <= MAX_SEED, f"split seed must be in [0, {MAX_SEED}], got {d.split_seed}"),
        (0 < d.val_fraction < 1, f"validation fraction must be between 0 and 1 (exclusive), got {d.val_fraction}"),
        (4 <= d.image_size <= 512, f"image size must be 4 to 512 pixels, got {d.image_size}"),
    ]
    if cfg.distill is not None:
        dc = cfg.distill
        checks += [
            (0.0 <= dc.alpha <= 1.0, f"λ (alpha) must be in [0, 1], got {dc.alpha}"),
            (0 < dc.temperature < math.inf, f"temperature must be a positive number, got {dc.temperature}"),
        ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    validate_spec(cfg.model)
    try:
        resolve_device(t.device)
    except RuntimeError as err:  # torch's own refusal of a malformed name such as "cuda:x"
        raise ConfigError(f"unknown device '{t.device}'; use auto, cpu, cuda or cuda:N.") from err
    validate_labels(cfg.labels)
    validate_augment(t, cfg.data.dataset)
    if cfg.distill is not None:
        validate_methods(cfg.distill.methods)
        readers = label_readers(cfg.distill)
        if readers and has_transfer(cfg.labels):
            raise ConfigError(
                f"{', '.join(readers)} reads each image's label, and the transfer images show none; "
                "distil on the labelled images only (transfer none) or use a method that needs no labels."
            )


def label_readers(distill: DistillConfig) -> list[str]:
    """The methods of the mix whose loss reads the labels (DKD splits target from non-target)."""
    params = validate_methods(distill.methods)
    return [s.name for s, p in zip(distill.methods, params) if get_method(s.name).needs(p).uses_labels]


def check_run(cfg: RunConfig, data: Dataset, teacher: nn.Module | None) -> list[Plan]:
    """Everything that can refuse a run, before it is stored: the config, and whether the
    two models can serve every method of the mix (AT needs spatial maps on both sides…), and
    whether the data can give the label budget and the transfer folder has images."""
    validate_config(cfg)
    check_labels(data, cfg.labels)
    if cfg.distill is None or teacher is None:
        return []
    student = build_model(cfg.model, data.input_shape, data.num_classes)
    return plan_methods(cfg.distill, student, teacher.cpu(), data.input_shape, cfg.train.seed)


def method_preview(cfg: RunConfig, data: Dataset, teacher: nn.Module) -> dict:
    """Before training: the extra trainable parameters the methods add and how the teacher's
    targets will be served. ConfigError where the models cannot serve a method."""
    if cfg.distill is None:
        raise ConfigError("a method preview is for a student: its config has no distillation settings.")
    plans = check_run(cfg, data, teacher)
    choice = cache_preview(teacher.cpu(), plans, data.train_x, cfg.distill.cache_teacher_logits, augmented(cfg.train))
    return {
        "extra_params": extra_param_count(plans),
        "cache": choice.describe(),
        "cached": list(choice.cached),
        "per_batch": list(choice.per_batch),
        "stages": {
            p.method.name: {"student": list(p.student_stages), "teacher": list(p.teacher_stages)} for p in plans
        },
    }


# Divergence advice: one notch down from a rate that blew up often blows up too (lr 10 → 1 with
# Adam does), so the advice is tried before it is given: short runs from the same initialisation
# at a decade below the rate, two decades, ..., and the one whose loss ends lowest is suggested.
# On digits the short runs' final loss ranked the rates as 5-epoch runs' accuracy did.
PROBE_STEPS, PROBE_DECADES, PROBE_BUDGET_S, PROBE_MIN_LR = 30, 5, 20.0, 1e-6
_PROBING: contextvars.ContextVar[bool] = contextvars.ContextVar("kd_lr_probe", default=False)


def stable_rate(
    cfg: RunConfig, data: Dataset, teacher: nn.Module | None, stop: threading.Event | None = None
) -> tuple[float | None, list[float]]:
    """(the rate, a decade or more below cfg's, whose 2 short epochs of PROBE_STEPS batches end with
    the lowest mean loss, or None if none learned (ended below 0.9 × the first step's loss);
    the rates tried, largest first). Stops once a smaller rate does worse than the best so far."""
    n = min(len(data.train_y), PROBE_STEPS * cfg.train.batch_size)
    subset = replace(
        data, train_x=data.train_x[:n], train_y=data.train_y[:n], val_x=data.val_x[:256], val_y=data.val_y[:256]
    )
    tried: list[float] = []
    best: tuple[float, float] | None = None  # (final loss, rate)
    started = time.perf_counter()
    token = _PROBING.set(True)
    try:
        for k in range(1, PROBE_DECADES + 1):
            rate = cfg.train.lr / 10**k
            if rate < PROBE_MIN_LR or time.perf_counter() - started > PROBE_BUDGET_S or (stop and stop.is_set()):
                break
            tried.append(rate)
            final = _probe_loss(
                # every row of the probe's small subset labelled: a budget may not fit inside it
                replace(
                    cfg,
                    train=replace(cfg.train, lr=rate, epochs=2, patience=0, cosine=False),
                    labels=LabelConfig(transfer="none"),
                ),
                subset,
                teacher,
                stop,
            )
            if final is None:
                continue
            if best is not None and final >= best[0]:
                break
            best = (final, rate)
    finally:
        _PROBING.reset(token)
    return (best[1] if best else None), tried


def _probe_loss(cfg: RunConfig, data: Dataset, teacher: nn.Module | None, stop) -> float | None:
    """The last epoch's mean loss of a short run, or None if it diverged or did not learn."""
    losses: list[float] = []
    result = fit(cfg, data, teacher, lambda r: losses.append(r.loss), stop)
    if result.status != "finished" or not result.history:
        return None
    final = result.history[-1]["loss"]
    return final if final < 0.9 * losses[0] else None


def make_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    """For `model`'s parameters: the student's, plus the methods' extra modules when the
    engine passes both in one container."""
    t = cfg.train
    # The fused kernels update each tensor in one pass instead of a handful of
    # elementwise ops per parameter: Adam's step was ~a quarter of a small MLP's
    # step time on CPU. Same update rule; deterministic.
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in model.parameters())
    if t.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, fused=fused
        )
    return torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay, fused=fused)


def size_warnings(student: nn.Module, teacher: nn.Module | None) -> list[str]:
    if teacher is None or param_count(student) <= param_count(teacher):
        return []
    return [
        f"the student ({param_count(student):,} params) is larger than its teacher "
        f"({param_count(teacher):,}): this is born-again distillation, not compression."
    ]


def baseline_config(student_cfg: RunConfig) -> RunConfig:
    """The same student, seed and budget, trained on labels only (no teacher)."""
    return replace(student_cfg, kind="baseline", distill=None)


def fit(
    cfg: RunConfig,
    data: Dataset,
    teacher: nn.Module | None = None,
    emit: ProgressSink = ignore,
    stop: threading.Event | None = None,
    train_set: TrainingSet | None = None,
) -> FitResult:
    """Train `cfg.model` on `data`; with a teacher and `cfg.distill`, distil from it.

    `train_set`: the labelled rows and transfer inputs, when the caller built them once
    for a student and its baseline (else drawn here from `cfg.labels`)."""
    validate_config(cfg)
    threads = resolve_threads(cfg, data)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    device = resolve_device(cfg.train.device)
    distill = cfg.distill if teacher is not None else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        model = build_model(cfg.model, data.input_shape, data.num_classes)
    notes = load_init_weights(model, cfg.model, cfg.train.init_weights)
    model = model.to(device)
    channels_last = wants_channels_last(cfg.model.family, len(data.input_shape))
    if channels_last:
        model = to_channels_last(model)
    precision = resolve_precision(cfg.train.precision, device, step_flops(cfg, data))
    plans: list[Plan] = []
    if teacher is not None:
        teacher = teacher.to(device).eval()
        if distill is not None:
            plans = plan_methods(distill, model, teacher, data.input_shape, cfg.train.seed)
    if train_set is None:
        train_set = training_set(data, cfg.labels, with_transfer=distill is not None)
    loop = _Loop(
        cfg, data, train_set, model, teacher, distill, plans, device, emit, stop or threading.Event(), precision
    )
    loop.result.threads, loop.result.precision = threads, precision.describe()
    loop.result.channels_last = channels_last
    loop.result.warnings += notes
    return loop.run()


class _Loop:
    """The state of one training run; `run` is the loop itself."""

    def __init__(
        self,
        cfg,
        data,
        train_set: TrainingSet,
        model,
        teacher,
        distill: DistillConfig | None,
        plans: list[Plan],
        device,
        emit,
        stop,
        precision: PrecisionChoice,
    ):
        self.cfg, self.data, self.model, self.emit, self.stop = cfg, data, model, emit, stop
        t = cfg.train
        # Rows [0, N_l) are labelled, the rest transfer inputs; without a teacher only the labelled are used.
        n_rows = len(train_set.inputs) if distill is not None else train_set.n_labelled
        self.x, self.y = train_set.head(n_rows).to(device), train_set.y.to(device)
        self.val_x, self.val_y = data.val_x.to(device), data.val_y.to(device)
        # A batch gathered from channels-last images is plain NCHW again when C > 1; it is
        # converted once per step (a copy of one batch), not the whole set per epoch.
        self.memory_format = (
            torch.channels_last if wants_channels_last(cfg.model.family, self.x.dim() - 1) else torch.contiguous_format
        )
        self.autocast = partial(autocast, device, precision)
        self.gen = torch.Generator().manual_seed(t.seed)
        # A baseline or a teacher on a budget plans the student's steps without its transfer rows.
        self.n_transfer = transfer_count(data, cfg.labels)
        plan = step_plan(len(self.y), self.n_transfer, t.batch_size, cfg.labels.transfer_ratio)
        self.batches = Batches(plan, len(self.y), n_rows - len(self.y), t.seed, self.gen)
        aug_gen = stream(t.seed, AUGMENT_STREAM) if self.batches.mixed else self.gen
        self.augment = Augmenter(t, -data.mean / data.std, aug_gen)
        self.steps_per_epoch = plan.steps_per_epoch
        self.total_steps = self.steps_per_epoch * t.epochs
        self.plans = plans
        self.extra = nn.ModuleList([p.extra for p in plans]).to(device)
        self.opt = make_optimizer(nn.ModuleList([model, self.extra]), cfg)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=self.total_steps) if t.cosine else None
        self.temperature = distill.temperature if distill else 1.0
        self.alpha = distill.alpha if distill else 0.0
        self.student = FeatureForward(model, student_stages(plans))
        self.targets: TeacherTargets | None = None
        self.result = FitResult(model=model, status="running", warnings=size_warnings(model, teacher), extra=self.extra)
        self.result.labels = train_set.report(self.n_transfer, used=n_rows - len(self.y))
        # plans come only from a distillation config; cached by row of self.x, labelled and transfer
        # rows alike (never under augmentation)
        if plans and distill is not None:
            self.targets = TeacherTargets(
                teacher, plans, self.x, distill.cache_teacher_logits, augmented(t), autocast=self.autocast
            )
            self.result.cache = self.targets.choice.describe()
        self.best_state: dict | None = None
        self.step = 0
        self.samples = 0  # real samples trained on: the last batch of an epoch may be short
        self.first_loss: float | None = None
        self.start = time.perf_counter()

    def record(self, event: str, epoch: int, **kw) -> Progress:
        elapsed = time.perf_counter() - self.start
        rate = self.samples / elapsed if elapsed > 0 else 0.0
        eta = (self.total_steps - self.step) * (elapsed / self.step) if self.step else 0.0
        rec = Progress(
            event=event,
            epoch=epoch,
            step=self.step,
            total_steps=self.total_steps,
            samples_per_s=rate,
            elapsed_s=elapsed,
            eta_s=eta,
            lr=self.opt.param_groups[0]["lr"],
            **kw,
        )
        self.emit(rec)
        return rec

    def train_step(self, idx: torch.Tensor, n_lab: int) -> tuple[float, dict[str, float], torch.Tensor]:
        """One update on rows `idx`, the first `n_lab` labelled: (1 − λ)·CE over the labelled rows
        + λ·Σ_m w_m·Σ terms_m over every row, the teacher seeing the same (augmented) view.
        Returns the total, every named term ("ce" and each method's) and the labelled rows' hits."""
        # index_select is a plain row gather, ~4x cheaper than advanced indexing x[idx]
        xb, yb = self.x.index_select(0, idx), self.y.index_select(0, idx[:n_lab])
        xb, mix = self.augment(xb, (n_lab, len(idx) - n_lab))
        xb = xb.contiguous(memory_format=self.memory_format)
        with self.autocast():
            out = self.student(xb)
        # Under bf16 autocast the matmuls ran in bfloat16; every loss, softmax and KL runs in
        # float32 on float32 copies of the outputs (their gradients flow back through the casts).
        out = as_float(out)
        ce = mixed_cross_entropy(out.logits, yb, mix)
        terms = {"ce": ce}
        total = ce
        if self.targets is not None:
            distilled, method_terms = weighted_terms(self.plans, out, self.targets(idx, xb), self.temperature, yb)
            total = (1.0 - self.alpha) * ce + self.alpha * distilled
            terms.update(method_terms)
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        self.opt.step()
        if self.sched is not None:
            self.sched.step()
        correct = (out.logits[:n_lab].detach().argmax(-1) == yb).sum()
        values = torch.stack([total.detach(), *(v.detach() for v in terms.values())]).tolist()  # one sync
        return values[0], dict(zip(terms, values[1:])), correct

    def run_epoch(self, epoch: int) -> dict | None:
        """One pass over the training set; None when stopped or failed mid-epoch."""
        self.model.train()
        total = 0.0  # Python floats are float64: no tensor allocated per step
        sums: dict[str, float] = {}
        correct = torch.zeros((), dtype=torch.int64, device=self.x.device)
        n = seen = 0
        for idx, n_lab in self.batches.epoch(self.x.device):
            if self.stop.is_set():
                self.finish("stopped", epoch, "stopped by request")
                return None
            loss, terms, ok = self.train_step(idx, n_lab)
            self.step += 1
            self.samples += len(idx)
            if self.diverged(loss):
                self.finish("failed", epoch, self.divergence_message(loss, epoch))
                return None
            correct += ok
            total += loss * len(idx)
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value * len(idx)
            n, seen = n + len(idx), seen + n_lab
            self.record("step", epoch, loss=loss, terms=terms)
        return {
            "epoch": epoch,
            "loss": total / n,
            "terms": {k: v / n for k, v in sums.items()},
            "train_acc": correct.item() / seen,  # on the labelled rows: the others have none
        }

    def diverged(self, loss: float) -> bool:
        if not math.isfinite(loss):
            return True
        if self.first_loss is None:
            self.first_loss = loss
        return loss > max(DIVERGENCE_FLOOR, DIVERGENCE_FACTOR * self.first_loss)

    def divergence_message(self, loss: float, epoch: int) -> str:
        lr = self.opt.param_groups[0]["lr"]  # the rate in force when it blew up (a schedule moves it)
        head = f"the loss became {loss:.4g} at step {self.step} (epoch {epoch}) at learning rate {lr:g}: training diverged."
        if _PROBING.get():  # this is a probe's own run: the caller weighs the result
            return head
        teacher = self.targets.teacher if self.targets is not None else None
        self.student.close()  # this run is over: its hooks off before the probes hook the same teacher
        if self.targets is not None:
            self.targets.close()
        rate, tried = stable_rate(self.cfg, self.data, teacher, self.stop)
        listed = ", ".join(f"{r:g}" for r in tried)
        if rate is None:
            return (
                f"{head} Short runs from the same start at {listed} did not learn either: check the data and the model."
            )
        return (
            f"{head} Of short runs from the same start at learning rates {listed}, the one at {rate:g} "
            f"learned best: try a learning rate of {rate:g}."
        )

    def end_epoch(self, stats: dict) -> None:
        val_acc = accuracy(predict_logits(self.model, self.val_x), self.val_y)
        stats["val_acc"] = val_acc
        stats["seconds"] = time.perf_counter() - self.start
        self.result.history.append(stats)
        if self.best_state is None or val_acc > self.result.best_val_acc:
            self.result.best_val_acc, self.result.best_epoch = val_acc, stats["epoch"]
            self.best_state = copy.deepcopy(self.model.state_dict())
        self.result.final_val_acc = val_acc
        self.record(
            "epoch",
            stats["epoch"],
            loss=stats["loss"],
            terms=dict(stats["terms"]),
            train_acc=stats["train_acc"],
            val_acc=val_acc,
        )

    def patience_exhausted(self, epoch: int) -> bool:
        p = self.cfg.train.patience
        return p > 0 and epoch - self.result.best_epoch >= p

    def finish(self, status: str, epoch: int, message: str = "") -> None:
        r = self.result
        r.status, r.message = status, message
        r.seconds = time.perf_counter() - self.start
        r.samples_per_s = self.samples / r.seconds if r.seconds > 0 else 0.0
        if self.best_state is not None:  # model selection on the validation split
            self.model.load_state_dict(self.best_state)
        # Back to the default layout: what is saved, exported and timed is the plain model.
        self.model.to(memory_format=torch.contiguous_format).eval()
        self.student.close()
        if self.targets is not None:
            self.targets.close()
        self.record("end", epoch, status=status, message=message, val_acc=r.best_val_acc)
        return None

    def run(self) -> FitResult:
        for epoch in range(1, self.cfg.train.epochs + 1):
            stats = self.run_epoch(epoch)
            if stats is None:
                return self.result
            self.end_epoch(stats)
            if self.patience_exhausted(epoch):
                self.finish(
                    "finished", epoch, f"early stop: no better validation accuracy for {self.cfg.train.patience} epochs"
                )
                return self.result
        self.finish("finished", self.cfg.train.epochs)
        return self.result
