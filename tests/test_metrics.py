"""Metrics against plain Python loops over the same logits and labels."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from kd_core.train.metrics import (
    accuracy,
    agreement,
    confusion_matrix,
    entropy,
    evaluate,
    expected_calibration_error,
    per_class_accuracy,
    predict_logits,
)

N, K = 300, 5


@pytest.fixture
def case():
    """Random logits (N, K) and labels, with the labels agreeing with the argmax
    about half of the time so every metric is away from its extremes."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(N, K, generator=g) * 2.5
    labels = torch.randint(0, K, (N,), generator=g)
    keep = torch.rand(N, generator=g) < 0.5
    labels[keep] = logits.argmax(-1)[keep]
    return logits, labels


def argmax_row(row) -> int:
    best = 0
    for k in range(1, len(row)):
        if row[k] > row[best]:
            best = k
    return best


def loop_predictions(logits) -> list[int]:
    return [argmax_row(row) for row in logits.tolist()]


def loop_confusion(logits, labels, k: int) -> list[list[int]]:
    cm = [[0] * k for _ in range(k)]
    for true, pred in zip(labels.tolist(), loop_predictions(logits)):
        cm[true][pred] += 1
    return cm


def loop_ece(logits, labels, bins: int = 15) -> float:
    """Equal-width bins (b/bins, (b+1)/bins]; confidence = largest softmax probability."""
    members = [[] for _ in range(bins)]
    for row, true in zip(logits.tolist(), labels.tolist()):
        m = max(row)
        exps = [math.exp(v - m) for v in row]
        probs = [e / sum(exps) for e in exps]
        conf = max(probs)
        pred = probs.index(conf)
        b = min(bins - 1, max(0, math.ceil(conf * bins) - 1))  # conf in (b/bins, (b+1)/bins]
        members[b].append((conf, 1.0 if pred == true else 0.0))
    n = len(labels)
    ece = 0.0
    for items in members:
        if items:
            acc = sum(c for _, c in items) / len(items)
            conf = sum(p for p, _ in items) / len(items)
            ece += len(items) / n * abs(acc - conf)
    return ece


def test_accuracy_matches_loop(case):
    logits, labels = case
    correct = sum(p == t for p, t in zip(loop_predictions(logits), labels.tolist()))
    assert accuracy(logits, labels) == pytest.approx(correct / N, abs=1e-7)
    assert 0.3 < correct / N < 0.9


def test_confusion_matrix_matches_loop(case):
    logits, labels = case
    cm = confusion_matrix(logits, labels, K)
    assert cm.dtype == torch.int64 and cm.shape == (K, K)
    assert cm.tolist() == loop_confusion(logits, labels, K)
    assert cm.sum().item() == N


def test_per_class_accuracy_matches_loop(case):
    logits, labels = case
    preds = loop_predictions(logits)
    expected = []
    for k in range(K):
        idx = [i for i, t in enumerate(labels.tolist()) if t == k]
        expected.append(sum(preds[i] == k for i in idx) / len(idx))
    assert per_class_accuracy(logits, labels, K) == pytest.approx(expected, abs=1e-12)


def test_per_class_accuracy_is_nan_for_an_absent_class(case):
    logits, labels = case
    present = labels != 2
    result = per_class_accuracy(logits[present], labels[present], K)
    assert math.isnan(result[2])
    assert all(not math.isnan(v) for k, v in enumerate(result) if k != 2)


def test_agreement_matches_loop(case):
    logits, _ = case
    g = torch.Generator().manual_seed(1)
    other = logits + torch.randn(N, K, generator=g) * 2.0
    same = sum(a == b for a, b in zip(loop_predictions(logits), loop_predictions(other)))
    assert agreement(logits, other) == pytest.approx(same / N, abs=1e-7)
    assert 0 < same < N
    assert agreement(logits, logits * 3.0) == 1.0  # scaling keeps every argmax


@pytest.mark.parametrize("bins", [15, 10, 4])
def test_ece_matches_loop(case, bins):
    logits, labels = case
    ece = expected_calibration_error(logits, labels, bins=bins)
    assert ece == pytest.approx(loop_ece(logits, labels, bins), abs=1e-9)
    assert ece > 0.01


def test_ece_of_overconfident_model_is_its_confidence_gap():
    """Every sample at confidence ~0.99 but only half right: ECE ≈ 0.99 − 0.5."""
    logits = torch.zeros(100, 3)
    logits[:, 0] = math.log(0.99 / 0.005)  # softmax → (0.99, 0.005, 0.005)
    labels = torch.tensor([0, 1] * 50)
    assert expected_calibration_error(logits, labels) == pytest.approx(0.49, abs=1e-6)


def test_entropy_matches_loop():
    probs = torch.softmax(torch.randn(6, 4, generator=torch.Generator().manual_seed(2)), -1)
    expected = [-sum(p * math.log(p) for p in row) for row in probs.double().tolist()]
    assert entropy(probs).tolist() == pytest.approx(expected, rel=1e-12)
    assert entropy(torch.tensor([[1.0, 0.0]])).item() == 0.0  # 0·log 0 counts as 0


def test_predict_logits_batches_and_restores_train_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.BatchNorm1d(4))
    model.train()
    x = torch.randn(50, 1, 3, 4)
    out = predict_logits(model, x, batch_size=7)
    model.eval()
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(out, expected)
    model.train()
    predict_logits(model, x)
    assert model.training


def test_evaluate_reports_every_metric(case):
    logits, labels = case
    # A linear "model" whose output is the fixed logits, addressed by a one-hot sample index.
    model = nn.Linear(N, K, bias=False)
    with torch.no_grad():
        model.weight.copy_(logits.T)
    x = torch.eye(N)
    teacher_logits = torch.flip(logits, dims=[1])
    report = evaluate(model, x, labels, K, teacher_logits=teacher_logits)
    assert report["accuracy"] == pytest.approx(accuracy(logits, labels), abs=1e-6)
    assert report["confusion_matrix"] == loop_confusion(logits, labels, K)
    assert report["ece"] == pytest.approx(loop_ece(logits, labels), abs=1e-6)
    assert report["per_class_accuracy"] == pytest.approx(per_class_accuracy(logits, labels, K), abs=1e-9)
    same = sum(a == b for a, b in zip(loop_predictions(logits), loop_predictions(teacher_logits)))
    assert report["agreement"] == pytest.approx(same / N, abs=1e-7)
    assert "agreement" not in evaluate(model, x, labels, K)


def test_latency_is_timed_in_eval_under_inference_mode_at_the_threads_asked_for():
    """Every timed call runs in eval mode under torch.inference_mode (no autograd bookkeeping),
    the thread count reported is the one in force, and torch_threads puts the old one back."""
    from kd_core.deploy.runtimes import torch_threads
    from kd_core.train.bench import measure_latency

    seen = []
    model = torch.nn.Linear(4, 3)
    model.register_forward_hook(lambda m, i, o: seen.append((torch.is_inference_mode_enabled(), m.training)))
    before = torch.get_num_threads()
    with torch_threads(2):
        result = measure_latency(model, (4,), batch_sizes=(1, 8), warmup=2, repeats=3)
        assert result["threads"] == 2 == torch.get_num_threads()
    assert torch.get_num_threads() == before
    assert seen and all(mode and not training for mode, training in seen)
    assert model.training  # put back as it was
    assert set(result["batches"]) == {"1", "8"}
