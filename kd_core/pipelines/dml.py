"""DML: Zhang, Xiang, Hospedales & Lu, "Deep Mutual Learning", CVPR 2018.

K ≥ 2 peers learn together, with no pre-trained teacher. Peer k minimises

    L_k = (1 − λ)·CE(y, z_k) + λ·(1/(K−1))·Σ_{l≠k} T²·KL( softmax(z_l/T) ‖ softmax(z_k/T) )

where the other peers' logits z_l are detached: each peer treats the others' predictions as
fixed targets for its own step (the paper's L_Θk = L_Ck + 1/(K−1)·Σ_{l≠k} D_KL(p_l ‖ p_k) is
λ = 0.5 up to a factor of 2, at T = 1). The KL term is KD's (`get_method("kd").loss`).

The paper updates the peers one after another on each batch; here every peer takes its step
on the same batch against the others' outputs from before the step (one forward of each peer
per batch instead of K). Since each L_k depends on peer k's weights only, one backward of
Σ_k L_k gives every peer exactly ∇L_k, and one Adam over all of them is K independent Adams.

`dml` stores each peer as a run (kind "student", no teacher) linked by PipelineLink("dml", …)
and emits the engine's Progress records for each peer; it never prints.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from kd_core.config import ModelSpec, PipelineLink, RunConfig
from kd_core.errors import ConfigError, KDError
from kd_core.events import Progress, ProgressSink, ignore
from kd_core.methods import NoParams, Outputs, get_method
from kd_core.pipelines.common import PipelineResult, new_pipeline_id, stage_config
from kd_core.store import Store
from kd_core.train.data import Dataset
from kd_core.train.engine import FitResult, make_optimizer, resolve_device, resolve_threads, validate_config
from kd_core.train.metrics import accuracy, predict_logits
from kd_core.train.models import build_model
from kd_core.train.recorder import Trained, record

MAX_PEERS = 8


def dml_losses(logits: Sequence[torch.Tensor], labels: torch.Tensor, temperature: float, alpha: float) -> list[dict]:
    """Each peer's {"loss", "ce", "dml"}: logits K × (B, C), labels (B,). The peers' own
    logits keep their graphs; the others enter detached."""
    kd = get_method("kd")
    out = []
    for k, z in enumerate(logits):
        s = Outputs(z)
        kls = [
            kd.loss(s, Outputs(other.detach()), NoParams(), nn.ModuleDict(), temperature)["kd"]
            for j, other in enumerate(logits)
            if j != k
        ]
        ce = F.cross_entropy(z, labels)
        mutual = torch.stack(kls).mean()
        out.append({"loss": (1.0 - alpha) * ce + alpha * mutual, "ce": ce, "dml": mutual})
    return out


def dml_configs(base: RunConfig, peers: Sequence[ModelSpec], pipeline_id: str) -> list[RunConfig]:
    """One config per peer (peer k seeded seed + k), each checked before anything is stored."""
    if base.distill is None:
        raise ConfigError("DML needs its distillation settings (temperature, λ).")
    if not 2 <= len(peers) <= MAX_PEERS:
        raise ConfigError(f"DML trains 2 to {MAX_PEERS} peers together, got {len(peers)}.")
    if base.train.augment or base.labels.budgeted:
        raise ConfigError("DML here trains on every labelled image without augmentation; drop --augment / the budget.")
    if base.train.precision == "bf16":
        raise ConfigError("DML trains in fp32; use --precision fp32.")
    train = replace(base.train, precision="fp32")
    cfgs = [
        stage_config(replace(base, kind="student", train=train, teacher_id=None), spec,
                     PipelineLink("dml", pipeline_id, k, f"peer {k}"), base.train.seed + k)
        for k, spec in enumerate(peers)
    ]  # fmt: skip
    for cfg in cfgs:
        validate_config(cfg)
    return cfgs


def dml(
    store: Store,
    base: RunConfig,
    data: Dataset,
    peers: Sequence[ModelSpec],
    emit: ProgressSink = ignore,
    stop: threading.Event | None = None,
) -> PipelineResult:
    """Train `peers` together by mutual learning; each is measured and stored as a run."""
    pid = new_pipeline_id("dml")
    cfgs = dml_configs(base, peers, pid)
    models = []
    for cfg in cfgs:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed)
            models.append(build_model(cfg.model, data.input_shape, data.num_classes))
    run_ids = [store.create_run(cfg) for cfg in cfgs]
    loop = _Mutual(cfgs, run_ids, data, models, store, emit, stop or threading.Event())
    try:
        results = loop.run()
    except KDError as err:
        results = [FitResult(m, "failed", str(err)) for m in models]
    except Exception as err:  # a bug, not bad input: every peer is stored as failed, the caller gets the error
        for rid in run_ids:
            store.finish_run(rid, "failed", {}, error=f"{type(err).__name__}: {err}")
        raise
    out = PipelineResult("dml", pid)
    for rid, cfg, fitted in zip(run_ids, cfgs, results):
        out.add(record(store, rid, cfg, data, Trained.of(fitted)))
    return out


class _Mutual:
    """The state of one DML run: the peers, one optimizer over all of them, the batches."""

    def __init__(self, cfgs, run_ids, data: Dataset, models, store: Store, emit: ProgressSink, stop):
        self.cfgs, self.run_ids, self.store, self.emit, self.stop = cfgs, run_ids, store, emit, stop
        t, d = cfgs[0].train, cfgs[0].distill
        self.temperature, self.alpha = d.temperature, d.alpha
        self.threads = max(resolve_threads(c, data) for c in cfgs)
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        device = resolve_device(t.device)
        self.models = [m.to(device) for m in models]
        self.x, self.y = data.train_x.to(device), data.train_y.to(device)
        self.val_x, self.val_y = data.val_x.to(device), data.val_y.to(device)
        self.bs, self.epochs = t.batch_size, t.epochs
        self.gen = torch.Generator().manual_seed(t.seed)
        self.steps_per_epoch = math.ceil(len(self.y) / t.batch_size)
        self.total_steps = self.steps_per_epoch * t.epochs
        self.opt = make_optimizer(nn.ModuleList(self.models), cfgs[0])
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, self.total_steps) if t.cosine else None
        self.results = [FitResult(m, "running", threads=self.threads, precision="fp32") for m in self.models]
        self.best: list[dict | None] = [None] * len(models)
        self.step, self.start = 0, time.perf_counter()

    def send(self, k: int, event: str, epoch: int, **kw) -> None:
        rec = Progress(event, epoch, self.step, self.total_steps, run_id=self.run_ids[k], kind="student", **kw)
        self.store.add_epoch(rec)
        self.emit(rec)

    def train_step(self, idx: torch.Tensor) -> list[dict[str, float]]:
        xb, yb = self.x[idx], self.y[idx]
        losses = dml_losses([m(xb) for m in self.models], yb, self.temperature, self.alpha)
        self.opt.zero_grad(set_to_none=True)
        torch.stack([p["loss"] for p in losses]).sum().backward()
        self.opt.step()
        if self.sched is not None:
            self.sched.step()
        return [{k: v.item() for k, v in p.items()} for p in losses]

    def run_epoch(self, epoch: int) -> list[dict] | None:
        """One pass; each peer's mean loss and terms, or None when stopped or diverged."""
        for m in self.models:
            m.train()
        perm = torch.randperm(len(self.y), generator=self.gen).to(self.x.device)
        sums = [{"loss": 0.0, "ce": 0.0, "dml": 0.0} for _ in self.models]
        for i in range(self.steps_per_epoch):
            if self.stop.is_set():
                self.finish("stopped", epoch, "stopped by request")
                return None
            idx = perm[i * self.bs : (i + 1) * self.bs]
            values = self.train_step(idx)
            self.step += 1
            for k, v in enumerate(values):
                if not math.isfinite(v["loss"]):
                    self.finish("failed", epoch, f"peer {k}'s loss became {v['loss']} at step {self.step}.")
                    return None
                for name in sums[k]:
                    sums[k][name] += v[name] * len(idx)
                self.send(k, "step", epoch, loss=v["loss"], terms={"ce": v["ce"], "dml": v["dml"]})
        n = len(self.y)
        return [{name: total / n for name, total in s.items()} for s in sums]

    def end_epoch(self, epoch: int, means: list[dict]) -> None:
        elapsed = time.perf_counter() - self.start
        for k, (model, r, m) in enumerate(zip(self.models, self.results, means)):
            model.eval()
            val_acc = accuracy(predict_logits(model, self.val_x), self.val_y)
            terms = {"ce": m["ce"], "dml": m["dml"]}
            r.history.append(
                {"epoch": epoch, "loss": m["loss"], "terms": terms, "val_acc": val_acc, "seconds": elapsed}
            )
            if self.best[k] is None or val_acc > r.best_val_acc:
                r.best_val_acc, r.best_epoch, self.best[k] = val_acc, epoch, copy.deepcopy(model.state_dict())
            r.final_val_acc = val_acc
            self.send(k, "epoch", epoch, loss=m["loss"], terms=terms, val_acc=val_acc, elapsed_s=elapsed)

    def finish(self, status: str, epoch: int, message: str = "") -> None:
        seconds = time.perf_counter() - self.start
        for k, (model, r) in enumerate(zip(self.models, self.results)):
            r.status, r.message, r.seconds = status, message, seconds
            r.samples_per_s = self.step * self.bs / seconds if seconds > 0 else 0.0  # per peer
            if self.best[k] is not None:  # model selection on the validation split, as the engine does
                model.load_state_dict(self.best[k])
            model.eval()
            self.send(k, "end", epoch, status=status, message=message, val_acc=r.best_val_acc)

    def run(self) -> list[FitResult]:
        for epoch in range(1, self.epochs + 1):
            means = self.run_epoch(epoch)
            if means is None:
                return self.results
            self.end_epoch(epoch, means)
        self.finish("finished", self.epochs)
        return self.results
