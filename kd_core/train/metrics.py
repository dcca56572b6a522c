"""Classification metrics over logits and labels. Inputs are tensors; outputs are numbers."""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

# Evaluation batches hold at most this many input values (32 MB of float32): 1024 images up to
# 32×32×8, fewer above, so a 224 px ResNet's activations do not take gigabytes per batch.
EVAL_BATCH_VALUES = 1 << 23


@torch.inference_mode()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Logits (N, K) of `model` on `x` (N, ...) in eval mode, on x's device."""
    per_sample = max(1, math.prod(x.shape[1:]))
    batch_size = batch_size or max(1, min(1024, EVAL_BATCH_VALUES // per_sample))
    was_training = model.training
    model.eval()
    out = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return out.float()


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in [0, 1]."""
    if len(labels) == 0:
        return float("nan")
    return (logits.argmax(-1) == labels).float().mean().item()


def confusion_matrix(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) int64 counts; row = true class, column = predicted class."""
    pred = logits.argmax(-1)
    idx = labels.long() * num_classes + pred.long()
    return torch.bincount(idx.cpu(), minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float]:
    """Recall of each class; NaN for a class with no samples."""
    cm = confusion_matrix(logits, labels, num_classes).double()
    support = cm.sum(1)
    return [(cm[k, k] / support[k]).item() if support[k] > 0 else float("nan") for k in range(num_classes)]


def agreement(logits_a: torch.Tensor, logits_b: torch.Tensor) -> float:
    """Share of samples where two models' top-1 predictions match."""
    return (logits_a.argmax(-1) == logits_b.argmax(-1)).float().mean().item()


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE (Guo et al. 2017): Σ_b |B_b|/N · |acc(B_b) − conf(B_b)| over equal-width
    confidence bins (lo, hi]; confidence is the top softmax probability."""
    probs = torch.softmax(logits.double(), -1)
    conf, pred = probs.max(-1)
    correct = (pred == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    ece = torch.zeros((), dtype=torch.float64)
    for lo, hi in itertools.pairwise(edges):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.double().mean() * (correct[in_bin].mean() - conf[in_bin].mean()).abs()
    return ece.item()


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats over the last axis: (..., K) -> (...)."""
    p = probs.double().clamp_min(1e-300)
    return -(probs.double() * p.log()).sum(-1)


def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, teacher_logits: torch.Tensor | None = None
) -> dict:
    """Test-set report: accuracy, per-class accuracy, confusion matrix, ECE, agreement."""
    logits = predict_logits(model, x)
    y = y.to(logits.device)
    report = {
        "accuracy": accuracy(logits, y),
        "per_class_accuracy": per_class_accuracy(logits, y, num_classes),
        "confusion_matrix": confusion_matrix(logits, y, num_classes).tolist(),
        "ece": expected_calibration_error(logits.cpu(), y.cpu()),
    }
    if teacher_logits is not None:
        report["agreement"] = agreement(logits.cpu(), teacher_logits.cpu())
    return report
