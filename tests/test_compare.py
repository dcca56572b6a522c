"""kd_core.views.compare against numbers computed here, independently, from the stored models.

Runs are real (see stores.compare_store): the test loads each run's weights, predicts
the test split itself and counts parameters itself; Pareto fronts are checked
against a brute-force dominance test.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from kd_core.train import recorder as experiment
from kd_core.views import compare


def predictions(store, run_id, data) -> np.ndarray:
    model = experiment.load_teacher(store, run_id, data).eval()
    with torch.no_grad():
        return model(data.test_x).argmax(1).numpy()


def param_count(store, run_id, data) -> int:
    return sum(p.numel() for p in experiment.load_teacher(store, run_id, data).parameters())


def brute_force_front(df: pd.DataFrame, x: str, y: str) -> set:
    """Index labels of the rows no other row dominates (min x, max y); NaN rows never count."""
    pts = df.dropna(subset=[x, y])
    front = set()
    for i, p in pts.iterrows():
        dominated = any(
            q[x] <= p[x] and q[y] >= p[y] and (q[x] < p[x] or q[y] > p[y]) for j, q in pts.iterrows() if j != i
        )
        if not dominated:
            front.add(i)
    return front


# ---------------------------------------------------------------- which runs


def test_default_students_are_the_teachers_own_student_and_baseline(runs):
    got = compare.default_students(runs["store"], "digits", runs["teacher"])
    assert sorted(got) == sorted([runs["student"], runs["baseline"]])
    assert compare.default_students(runs["store"], "digits", runs["other_teacher"]) == [runs["other_student"]]


def test_student_options_leave_out_teachers_failed_runs_and_other_datasets(runs):
    options = compare.student_options(runs["store"], "digits")
    assert set(options["id"]) == {runs["student"], runs["baseline"], runs["other_student"]}
    assert set(options["kind"]) == {"student", "baseline"}
    assert compare.student_options(runs["store"], "mnist").empty


# ---------------------------------------------------------------- compare_table


def test_compare_table_matches_an_independent_measurement(runs, digits):
    store, teacher = runs["store"], runs["teacher"]
    ids = [runs["student"], runs["baseline"], runs["other_student"]]
    table = compare.compare_table(store, teacher, ids)
    assert list(table.columns) == compare.TABLE_COLUMNS
    assert table["id"].tolist() == [teacher, *ids]
    assert table["kind"].tolist() == ["teacher", "student", "baseline", "student"]

    y = digits.test_y.numpy()
    teacher_pred = predictions(store, teacher, digits)
    teacher_params = param_count(store, teacher, digits)
    teacher_acc = float((teacher_pred == y).mean())
    for row in table.itertuples():
        pred = predictions(store, row.id, digits)
        params = param_count(store, row.id, digits)
        acc = float((pred == y).mean())
        assert row.params == params
        assert row.x_smaller == pytest.approx(teacher_params / params)
        assert row.test_acc == pytest.approx(acc, abs=1e-6)
        assert row.acc_vs_teacher == pytest.approx(acc - teacher_acc, abs=1e-6)
        if row.id == runs["other_student"]:  # distilled from teacher B: no agreement with A
            assert math.isnan(row.agreement)
        else:
            assert row.agreement == pytest.approx(float((pred == teacher_pred).mean()), abs=1e-6)
        m = store.get_run(row.id).metrics
        b1, b256 = m["latency"]["batches"]["1"], m["latency"]["batches"]["256"]
        assert row.size_mb == pytest.approx(m["bytes"] / 1_000_000)
        assert (row.b1_median_ms, row.b1_p90_ms) == (b1["median_ms"], b1["p90_ms"])
        assert (row.b256_median_ms, row.b256_p90_ms) == (b256["median_ms"], b256["p90_ms"])
        assert row.samples_per_s == pytest.approx(256 / (b256["median_ms"] / 1000))
        assert row.b1_p90_ms >= row.b1_median_ms > 0


def test_compare_table_skips_unknown_failed_and_repeated_runs(runs):
    store, teacher = runs["store"], runs["teacher"]
    table = compare.compare_table(
        store, teacher, [runs["failed"], "no-such-run", runs["student"], runs["student"], teacher]
    )
    assert table["id"].tolist() == [teacher, runs["student"]]
    assert compare.compare_table(store, "no-such-run", [runs["student"]]).empty
    assert compare.compare_table(store, runs["failed"], [runs["student"]]).empty


# ---------------------------------------------------------------- scatter and Pareto front


def test_scatter_frame_holds_every_usable_run_of_the_dataset(runs):
    frame = compare.scatter_frame(runs["store"], "digits", runs["teacher"])
    expected = {runs[k] for k in ("teacher", "student", "baseline", "other_teacher", "other_student")}
    assert set(frame["id"]) == expected and len(frame) == len(expected)
    assert frame.loc[frame["is_teacher_in_use"], "id"].tolist() == [runs["teacher"]]
    assert frame[["test_acc", "size_mb", "b1_median_ms"]].notna().all().all()


@pytest.mark.parametrize("x", ["size_mb", "b1_median_ms"])
def test_pareto_front_of_stored_runs_matches_brute_force(runs, x):
    frame = compare.scatter_frame(runs["store"], "digits")
    front = compare.pareto_front(frame, x, "test_acc")
    assert set(front.index) == brute_force_front(frame, x, "test_acc")
    assert front[x].is_monotonic_increasing and front["test_acc"].is_monotonic_increasing
    smallest = frame.loc[frame[x].idxmin(), "id"]  # the cheapest run is always on the front
    assert smallest in set(front["id"])


def test_pareto_front_on_a_known_case():
    df = pd.DataFrame(
        {"size": [1.0, 2.0, 2.0, 3.0, 4.0, 1.0, np.nan], "acc": [0.5, 0.7, 0.6, 0.7, 0.9, 0.4, 1.0]},
        index=list("abcdefg"),
    )
    front = compare.pareto_front(df, "size", "acc")
    # c: same size as b, less accurate; d: as accurate as b, larger; f: same size as a, worse; g: NaN
    assert list(front.index) == ["a", "b", "e"]


@pytest.mark.parametrize("seed", range(25))
def test_pareto_front_matches_brute_force_with_ties_and_nans(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 30))
    df = pd.DataFrame(
        {"x": rng.integers(0, 6, n).astype(float), "y": rng.integers(0, 6, n).astype(float)},
        index=rng.permutation(100)[:n],
    )
    df.loc[rng.random(n) < 0.1, "y"] = np.nan
    front = compare.pareto_front(df, "x", "y")
    assert set(front.index) == brute_force_front(df, "x", "y")
    assert list(front.columns) == ["x", "y"]
    assert front["x"].is_monotonic_increasing


def test_pareto_front_of_empty_frame_is_empty():
    assert compare.pareto_front(pd.DataFrame({"x": [], "y": []}), "x", "y").empty


# ---------------------------------------------------------------- class by class


def confusion(pred: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    cm = np.zeros((k, k), dtype=np.int64)
    for t, p in zip(y, pred):
        cm[t, p] += 1
    return cm


def test_confusion_pair_and_per_class_difference_match_the_models(runs, digits):
    store, teacher, student = runs["store"], runs["teacher"], runs["student"]
    y, k = digits.test_y.numpy(), digits.num_classes
    cm_t = confusion(predictions(store, teacher, digits), y, k)
    cm_s = confusion(predictions(store, student, digits), y, k)

    pair = compare.confusion_pair(store, teacher, student, digits.classes)
    assert pair["classes"] == [str(c) for c in digits.classes]
    np.testing.assert_array_equal(pair["teacher"], cm_t)
    np.testing.assert_array_equal(pair["student"], cm_s)

    diff = compare.per_class_difference(store, teacher, student, digits.classes)
    recall_t, recall_s = cm_t.diagonal() / cm_t.sum(1), cm_s.diagonal() / cm_s.sum(1)
    assert diff["class"].tolist() == pair["classes"]
    np.testing.assert_allclose(diff["teacher"], recall_t, atol=1e-9)
    np.testing.assert_allclose(diff["difference"], recall_s - recall_t, atol=1e-9)


def test_class_views_without_names_or_metrics(runs):
    store = runs["store"]
    pair = compare.confusion_pair(store, runs["teacher"], runs["student"])
    assert pair["classes"] == [str(i) for i in range(10)]
    assert compare.confusion_pair(store, runs["teacher"], runs["failed"]) is None
    assert compare.per_class_difference(store, runs["teacher"], "no-such-run").empty
