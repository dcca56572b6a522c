"""Frozen configuration dataclasses, saved as JSON with every run.

Every experiment is fully described by one `RunConfig`; the store keeps it,
the CLI builds it from flags and the dashboard builds it from sliders.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

RUN_KINDS = ("teacher", "student", "baseline")  # RunConfig.kind; anything else is refused up front


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"  # digits | mnist | fashion-mnist | cifar10 | folder:PATH
    root: str = "data"  # where torchvision datasets live / are downloaded
    image_size: int = 32  # side length for folder: datasets
    val_fraction: float = 0.1  # share of the training split held out for validation
    split_seed: int = 0  # the split is fixed by this, not by the training seed
    download: bool = True  # let torchvision download missing files
    storage: str = "auto"  # auto | memory | memmap: images in RAM, or memory-mapped from a uint8 disk cache
    cache_dir: str = ""  # where decoded images are cached; "" = ROOT/cache


@dataclass(frozen=True)
class ModelSpec:
    """A model family and its size.

    mlp: `size` is the hidden width, `depth` the number of hidden layers
         (Hinton et al. 2015's teacher is mlp 1200 x 2).
    cnn: `size` is the channel width of the first block; blocks double it.
    torchvision families (resnet18, mobilenet_v3_small, ...; train/zoo.py): `width`
         multiplies every stage's channels; `size` and `depth` are unused (a ResNet's
         depth is in its name). Configs stored before `width` existed load with 1.0.
    """

    family: str = "mlp"
    size: int = 64
    depth: int = 1
    width: float = 1.0

    def label(self) -> str:
        if self.family == "mlp":
            return f"mlp {'-'.join([str(self.size)] * self.depth)}"
        if self.family == "cnn":
            return f"cnn w{self.size}"
        return f"{self.family} ×{self.width:g}"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    cosine: bool = False  # cosine learning-rate decay to zero over the run
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    augment: bool = False  # random shifts; turns the teacher-logit cache off
    flip: bool = False  # random horizontal flips (refused where they change the class); cache off
    mixup: float = 0.0  # mixup's Beta(α, α) parameter; 0 = off; cache off
    threads: int = 0  # torch intra-op threads; 0 = auto by model size (engine.auto_threads)
    spare_cores: int = 0  # cores auto leaves free: the dashboard keeps 1 for its server and the browser
    patience: int = 0  # early stopping: epochs without a better val accuracy; 0 = off
    precision: str = "fp32"  # fp32 | bf16 (autocast; losses stay fp32) | auto (bf16 where native and large)
    init_weights: str = ""  # starting weights: "" random | "torchvision" (pretrained) | a file (train/pretrained.py)


@dataclass(frozen=True)
class MethodSpec:
    """One distillation method of a run: its registry name (kd_core.methods.METHODS), its
    weight w in the mix, and overrides of its paper defaults as sorted (key, value) pairs."""

    name: str = "kd"
    weight: float = 1.0
    params: tuple[tuple[str, Any], ...] = ()

    @staticmethod
    def from_dict(d: dict[str, Any]) -> MethodSpec:
        return MethodSpec(
            name=d.get("name", "kd"),
            weight=d.get("weight", 1.0),
            params=tuple((str(k), v) for k, v in d.get("params", ())),
        )


def format_methods(specs: tuple[MethodSpec, ...]) -> str:
    """A mix as `--method` reads it (kd_core.methods.parse_methods): 'kd', 'kd+at', '0.5*kd+1*at'."""
    if all(s.weight == 1 for s in specs):
        return "+".join(s.name for s in specs)
    return "+".join(f"{s.weight:g}*{s.name}" for s in specs)


def format_params(specs: tuple[MethodSpec, ...]) -> list[str]:
    """The mix's parameter overrides as `--method-param` values: 'name.key=value'."""
    return [f"{s.name}.{k}={v}" for s in specs for k, v in s.params]


@dataclass(frozen=True)
class DistillConfig:
    """loss = (1 − λ)·CE(labels) + λ·Σ_m w_m·Σ terms_m, λ = `alpha`, w_m = methods[m].weight.

    Each method's terms carry its paper's coefficients, and papers write CE + Σ terms. At
    λ = 0.5 with w = 1 the loss is half of that: the paper's objective up to a constant
    factor, which Adam does not see (it is scale-invariant up to its ε; SGD sees half the lr)."""

    temperature: float = 4.0  # T of every logit-based method
    alpha: float = 0.9  # λ: weight of the distillation terms
    cache_teacher_logits: bool = True  # cache the teacher's targets by sample index where allowed
    methods: tuple[MethodSpec, ...] = (MethodSpec("kd"),)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> DistillConfig:
        """Stored configs from before methods existed have no `methods`: they were KD."""
        rest = {k: v for k, v in d.items() if k != "methods"}
        if "methods" not in d:
            return DistillConfig(**rest)
        return DistillConfig(**rest, methods=tuple(MethodSpec.from_dict(m) for m in d["methods"]))


@dataclass(frozen=True)
class LabelConfig:
    """Which training labels a run may use, and what it distils on besides them.

    A budget (`labels` in total, or `per_class`) draws a stratified labelled subset
    of the training split with `label_seed`, which is independent of the training
    seed, so a student and its baseline see exactly the same labels. The transfer
    set is what the student imitates the teacher on without labels: `rest` (the
    training split outside the subset, its labels hidden), `none`, `folder:PATH`
    (images without class folders) or `rest+folder:PATH`.
    """

    labels: int = 0  # labelled training images in total; 0 = every one
    per_class: int = 0  # or this many per class (instead of `labels`); 0 = off
    label_seed: int = 0
    transfer: str = "rest"
    transfer_ratio: float = 1.0  # transfer rows per labelled row in each step

    @property
    def budgeted(self) -> bool:
        return self.labels > 0 or self.per_class > 0

    def describe(self) -> str:
        if self.per_class > 0:
            return f"{self.per_class} labels per class"
        return f"{self.labels:,} labels" if self.labels > 0 else "all labels"


PIPELINE_METHODS = ("takd", "ban", "dml")  # PipelineLink.method


@dataclass(frozen=True)
class PipelineLink:
    """Where a run sits in a multi-model pipeline (kd_core.pipelines): TAKD's chain, BAN's
    generations, DML's peers. Every run of one pipeline shares `id`; `parents` are the stored
    runs this one learned from (the previous stage; for a BAN ensemble every earlier
    generation; none for DML peers, which learn from each other at once)."""

    method: str  # takd | ban | dml
    id: str  # shared by every run of the pipeline
    stage: int  # TAKD: 1 = first assistant … n = student; BAN: the generation; DML: the peer index
    role: str = ""  # "assistant 1", "student", "generation 2", "peer 0": for people
    parents: tuple[str, ...] = ()

    @staticmethod
    def from_dict(d: dict[str, Any]) -> PipelineLink:
        return PipelineLink(**{**d, "parents": tuple(d.get("parents", ()))})


@dataclass(frozen=True)
class RunConfig:
    kind: str = "teacher"  # teacher | student | baseline
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig | None = None  # set for kind == "student"
    labels: LabelConfig = field(default_factory=LabelConfig)  # runs stored before it load as "all labels"
    teacher_id: str | None = None  # run id (or checkpoint path) of the teacher
    sweep_id: str | None = None
    study_id: str | None = None  # the compress study (kd_core.compress) whose trial this run is
    pipeline: PipelineLink | None = None  # the TAKD / BAN / DML pipeline this run is a stage of

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> RunConfig:
        distill = d.get("distill")
        return RunConfig(
            kind=d.get("kind", "teacher"),
            data=DataConfig(**d.get("data", {})),
            model=ModelSpec(**d.get("model", {})),
            train=TrainConfig(**d.get("train", {})),
            distill=DistillConfig.from_dict(distill) if distill else None,
            labels=LabelConfig(**d.get("labels") or {}),
            teacher_id=d.get("teacher_id"),
            sweep_id=d.get("sweep_id"),
            study_id=d.get("study_id"),
            pipeline=PipelineLink.from_dict(d["pipeline"]) if d.get("pipeline") else None,
        )

    @staticmethod
    def from_json(text: str) -> RunConfig:
        return RunConfig.from_dict(json.loads(text))


def timing_threads(train_threads: int) -> int:
    """Latency is timed at a fixed, reported thread count, whatever "auto" trained
    with, so that a teacher and its student are timed alike: the chosen count, or 1."""
    return train_threads if train_threads > 0 else 1


# Where and how fast a run trains, not what it learns: runs that differ only in these are the
# same experiment (a rerun on another device or thread count, a store moved elsewhere, the
# same configuration run by hand or by a sweep).
_NOT_LEARNED = ("sweep_id",)
_MACHINE_FIELDS = {"data": ("root", "download"), "train": ("device", "threads", "spare_cores")}


def experiment_key(config: dict[str, Any], drop: tuple[str, ...] = ()) -> str:
    """A stored config (RunConfig.to_dict) as a comparable string, without the machine settings
    and without the fields named in `drop`: top-level ones ("kind", "distill", "sweep_id") or
    training ones ("seed"). Normalised first, so a config stored before a field existed (a
    student without `methods` was KD) matches one stored with the field's default."""
    config = RunConfig.from_dict(config).to_dict()
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items() if k not in (*drop, *_NOT_LEARNED)}
    for part, fields in _MACHINE_FIELDS.items():
        for f in fields:
            (out.get(part) or {}).pop(f, None)
    for f in drop:
        (out.get("train") or {}).pop(f, None)
    return json.dumps(out, sort_keys=True, default=str)
