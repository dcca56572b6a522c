"""What the CLI's command groups share: flags → configs, the progress bar, reporting, exit codes."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
import sys
import threading
import time
from pathlib import Path

from tqdm import tqdm

from kd_core.cli.parser import EXIT_USER_ERROR as EXIT_USER_ERROR
from kd_core.cli.parser import Parser as Parser
from kd_core.cli.parser import UsageError as UsageError
from kd_core.cli.parser import one_line as one_line
from kd_core.config import DataConfig, LabelConfig, ModelSpec, TrainConfig
from kd_core.errors import ConfigError
from kd_core.store import Store
from kd_core.train.augment import FUNCTION_MATCHING_MIXUP, flips_allowed
from kd_core.train.data import STORAGES, Dataset, load_dataset
from kd_core.train.models import FAMILIES
from kd_core.train.pretrained import TORCHVISION

# ---------------------------------------------------------------- signals


class StopOnSignal:
    """SIGINT and SIGTERM end the run in progress as `stopped` instead of killing it: the handler
    only sets the engine's stop event, which it checks between steps, so the run keeps its best
    weights and curves. A second signal acts as usual (quits at once). `code(default)` is 128 + the
    signal's number once one came: 130 for Ctrl-C, 143 for SIGTERM."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.event = threading.Event()
        self.signum: int | None = None
        self._old: dict = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():  # Python allows handlers only there
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, _frame) -> None:
        # No printing here: the handler may interrupt a write to stderr (the progress bar).
        self.signum = signum
        self.event.set()
        self._restore()

    def _restore(self) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}

    def __exit__(self, *exc) -> None:
        self._restore()
        if self.signum is not None:
            name = signal.Signals(self.signum).name
            print(f"{name}: stopped; what was trained so far is kept as a 'stopped' run", file=sys.stderr)

    def code(self, default: int) -> int:
        return 128 + self.signum if self.signum is not None else default


# ---------------------------------------------------------------- up-front checks


def batch_sizes(text: str) -> tuple[int, ...]:
    """argparse type of --batch-sizes: "1,64,256" → (1, 64, 256); anything else is refused."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers such as 1,256, got '{text}'") from err
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be whole numbers of at least 1, got '{text}'")
    return values


def check_out_path(out: str | None) -> None:
    """Refuse an --out that cannot take a file before any training, and leave nothing behind:
    a folder, a path under a file, a read-only or missing place."""
    if not out:
        return
    path = Path(out).expanduser()
    if path.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file path such as {path / 'teacher.pt'}.")
    probe = path.with_name(f".{path.name}.probe")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
    except OSError as err:
        raise ConfigError(f"--out {out} cannot be written: {err.strerror or err}.") from err
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)


# ---------------------------------------------------------------- flags → configs


def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="digits", help="digits | mnist | fashion-mnist | cifar10 | folder:PATH")
    g.add_argument("--data-root", default="data", help="where torchvision datasets are kept or downloaded")
    g.add_argument("--image-size", type=int, default=32, help="side length for folder: datasets")
    g.add_argument("--val-fraction", type=float, default=0.1, help="share of training data held out")
    g.add_argument("--split-seed", type=int, default=0, help="seed of the train/val/test split")
    g.add_argument("--no-download", action="store_true", help="never ask torchvision to download")
    g.add_argument(
        "--storage", choices=STORAGES, default="auto",
        help="images in RAM, or memory-mapped from a uint8 disk cache (auto: by size)",
    )  # fmt: skip
    g.add_argument("--cache-dir", default="", help="where decoded images are cached (default DATA_ROOT/cache)")
    g.add_argument("--store", default="kd_runs", help="run store folder (SQLite + weights)")


def add_model_args(p: argparse.ArgumentParser, size_default: int | None, weights: bool = False) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--family", choices=FAMILIES, default=None, help="model family (default: the preset's)")
    g.add_argument("--size", type=int, default=size_default, help="MLP hidden width or CNN channel width")
    g.add_argument("--depth", type=int, default=None, help="MLP hidden layers")
    g.add_argument("--width", type=float, default=None, help="width multiplier of a torchvision family (default 1)")
    if weights:
        w = g.add_mutually_exclusive_group()
        w.add_argument("--weights", metavar="PATH", help="start from this state_dict file (loaded weights_only)")
        w.add_argument("--pretrained", action="store_true", help="start from torchvision's ImageNet weights")


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
    g.add_argument("--flip", action="store_true", help="random horizontal flips (not for digits or MNIST)")
    g.add_argument("--mixup", type=float, default=d.mixup, metavar="ALPHA", help="mixup with Beta(α, α); 0: off")
    g.add_argument(
        "--function-matching",
        action="store_true",
        help="consistent augmentation (Beyer et al. 2022): shifts, flips where the dataset allows, mixup α=1; "
        "the teacher sees the student's view",
    )
    g.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads (0: auto, 1 for small models and all cores for large ones)",
    )
    g.add_argument(
        "--precision",
        default=d.precision,
        help="fp32 | bf16 (autocast; losses stay fp32) | auto (bf16 where the device does it natively "
        "and the model is large enough to gain)",
    )
    g.add_argument("--patience", type=int, default=0, help="early-stopping patience in epochs (0: off)")
    g.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def add_label_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("labels")
    d = LabelConfig()
    g.add_argument("--labels", type=int, default=0, metavar="N", help="labelled training images in total (0: all)")
    g.add_argument("--labels-per-class", type=int, default=0, metavar="K", help="or K labelled images per class")
    g.add_argument("--label-seed", type=int, default=d.label_seed, help="seed of the labelled subset")
    g.add_argument(
        "--transfer",
        default=d.transfer,
        metavar="SOURCE",
        help="what the student imitates the teacher on without labels: rest (the training split outside the "
        "labelled subset, labels hidden), none, folder:PATH (images without class folders) or rest+folder:PATH",
    )
    g.add_argument(
        "--transfer-ratio", type=float, default=d.transfer_ratio, help="transfer rows per labelled row in a batch"
    )


def label_config(a) -> LabelConfig:
    return LabelConfig(
        labels=a.labels,
        per_class=a.labels_per_class,
        label_seed=a.label_seed,
        transfer=a.transfer,
        transfer_ratio=a.transfer_ratio,
    )


def data_config(a) -> DataConfig:
    return DataConfig(
        dataset=a.dataset,
        root=a.data_root,
        image_size=a.image_size,
        val_fraction=a.val_fraction,
        split_seed=a.split_seed,
        download=not a.no_download,
        storage=a.storage,
        cache_dir=a.cache_dir,
    )


def model_spec(a, preset: ModelSpec) -> ModelSpec:
    family = a.family or preset.family
    width = a.width if a.width is not None else (preset.width if family == preset.family else 1.0)
    return ModelSpec(
        family=family,
        size=preset.size if a.size is None else a.size,  # `--size 0` is refused, not replaced
        depth=preset.depth if a.depth is None else a.depth,
        width=width,
    )


def init_weights(a) -> str:
    """TrainConfig.init_weights from --pretrained / --weights (a file as an absolute path,
    so the stored config reproduces from any folder)."""
    if getattr(a, "pretrained", False):
        return TORCHVISION
    path = getattr(a, "weights", None)
    return str(Path(path).expanduser().resolve()) if path else ""


def train_config(a) -> TrainConfig:
    return TrainConfig(
        epochs=a.epochs,
        batch_size=a.batch_size,
        lr=a.lr,
        optimizer=a.optimizer,
        momentum=a.momentum,
        weight_decay=a.weight_decay,
        cosine=a.cosine,
        seed=a.seed,
        device=a.device,
        augment=a.augment or a.function_matching,
        flip=a.flip or (a.function_matching and flips_allowed(a.dataset)),
        mixup=a.mixup if a.mixup or not a.function_matching else FUNCTION_MATCHING_MIXUP,
        threads=a.threads,
        precision=a.precision,
        patience=a.patience,
        init_weights=init_weights(a),
    )


# ---------------------------------------------------------------- values


def numbers(cast):
    def parse(text: str) -> tuple:
        try:
            return tuple(cast(v) for v in text.split(",") if v.strip())
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from err

    return parse


def add_backend_args(g) -> None:
    """--backend, --ray-address and --ray-cpus of a command that runs many runs (sweep, leaderboard)."""
    g.add_argument("--backend", choices=["inprocess", "ray"], default="inprocess")
    g.add_argument("--ray-address", default=None, help="Ray cluster to use (default: start a local one)")
    g.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the local Ray instance")


def method_list(text: str) -> tuple[str, ...]:
    """ "kd,dkd,0.5*kd+1*at" -> ("kd", "dkd", "0.5*kd+1*at"); each mix is checked by the sweep's validation."""
    return tuple(m.strip() for m in text.split(",") if m.strip())


def plain(value):
    """JSON has no NaN: missing numbers become null; numpy scalars become Python ones."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------- progress


class ProgressBar:
    """A tqdm bar over the engine's progress records (one bar per run)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar: tqdm | None = None
        self.run_id: str | None = None

    def __call__(self, rec) -> None:
        if not self.enabled:
            return
        if rec.event == "cache":  # images decoded into the on-disk cache, before any run
            return self._cache(rec)
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

    def _cache(self, rec) -> None:
        if self.run_id != "cache":
            self.close()
            self.run_id = "cache"
            self.bar = tqdm(total=rec.total_steps, desc=rec.message, unit="image", file=sys.stderr, leave=True)
        if self.bar is not None:
            self.bar.update(rec.step - self.bar.n)
        if rec.step >= rec.total_steps:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def load(a) -> tuple[Dataset, Store]:
    bar = ProgressBar(not getattr(a, "quiet", False))  # a first memory-mapped load decodes the images
    data = load_dataset(data_config(a), emit=bar)
    bar.close()
    return data, Store(a.store)


def report(a, payload: dict, started: float) -> None:
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
            line += (
                f"  test acc {o['test_acc']:.4f}  best val {o['best_val_acc']:.4f}  "
                f"params {o['params']:,}  {o['bytes'] / 1e6:.3f} MB"
            )
        line += _labels_note(o.get("labels"), payload.get("dataset", {}).get("train"))
        if o.get("message"):
            line += f"  ({o['message']})"
        print(line)


def _labels_note(labels: dict | None, n_train: int | None) -> str:
    """What a run on a budget or with a transfer set trained on ("labels 40 + 1,253 transfer ...");
    nothing for a run on every label (the usual case, and runs stored before budgets)."""
    if not labels or (labels["labelled"] == n_train and not labels.get("transfer_used")):
        return ""
    used = labels.get("transfer_used") or 0
    return f"  labels {labels['labelled']:,}" + (f" + {used:,} transfer (labels hidden)" if used else "")


def exit_code(runs: list[dict], stop: StopOnSignal | None = None) -> int:
    """2 when a run failed (with an `error:` line on stderr), 128 + signal after SIGINT/SIGTERM, else 0."""
    failed = [r for r in runs if r["status"] == "failed"]
    for r in failed[:1]:
        print(f"error: {r['kind']} run {r['run_id']} failed: {r.get('message') or 'see the run'}", file=sys.stderr)
    code = EXIT_USER_ERROR if failed else 0
    return stop.code(code) if stop is not None else code
