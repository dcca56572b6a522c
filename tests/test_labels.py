"""Label budgets and transfer sets (kd_core.train.labels) on real digits and real image files."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from kd_core.config import LabelConfig, RunConfig
from kd_core.errors import ConfigError, DataError
from kd_core.train import labels as L


def rows(x: torch.Tensor) -> Counter:
    return Counter(r.tobytes() for r in x.reshape(len(x), -1).numpy())


# ---------------------------------------------------------------- the labelled subset


def test_per_class_budget_takes_exactly_k_of_every_class_and_is_reproducible(digits):
    y = digits.train_y.numpy()
    a = L.draw_labelled(y, LabelConfig(per_class=7, label_seed=3))
    assert Counter(y[a].tolist()) == {k: 7 for k in range(10)}
    assert np.array_equal(a, L.draw_labelled(y, LabelConfig(per_class=7, label_seed=3)))
    assert not np.array_equal(a, L.draw_labelled(y, LabelConfig(per_class=7, label_seed=4)))
    assert np.all(np.diff(a) > 0)  # sorted, no repeats


def test_total_budget_is_proportional_to_the_class_sizes(digits):
    y = digits.train_y.numpy()
    for total in (10, 57, 333, len(y)):
        idx = L.draw_labelled(y, LabelConfig(labels=total, label_seed=1))
        assert len(idx) == total and len(set(idx.tolist())) == total
        got = Counter(y[idx].tolist())
        for k, n_k in Counter(y.tolist()).items():
            exact = total * n_k / len(y)  # float64, computed here independently
            assert abs(got[k] - exact) < 1.0, (total, k, got[k], exact)


def test_class_quotas_largest_remainder_against_a_hand_count():
    # 3 classes of 50, 30, 20 samples, budget 7: shares 3.5, 2.1, 1.4 -> floors 3, 2, 1, remainders
    # .5, .1, .4 -> the spare label goes to class 0.
    assert L.class_quotas(np.array([50, 30, 20]), 7).tolist() == [4, 2, 1]
    # shares 1.999, 1.999, 0.002 -> [2, 2, 0]; the tiny class still gets one label, taken from
    # the first of the largest quotas
    assert L.class_quotas(np.array([1000, 1000, 1]), 4).tolist() == [1, 2, 1]


def test_larger_per_class_budgets_contain_smaller_ones(digits):
    y = digits.train_y.numpy()
    small = L.draw_labelled(y, LabelConfig(per_class=3, label_seed=5))
    large = L.draw_labelled(y, LabelConfig(per_class=20, label_seed=5))
    assert set(small.tolist()) <= set(large.tolist())


def test_no_budget_labels_everything(digits):
    assert np.array_equal(L.draw_labelled(digits.train_y.numpy(), LabelConfig()), np.arange(len(digits.train_y)))


@pytest.mark.parametrize(
    "cfg, phrase",
    [
        (LabelConfig(labels=5), "cannot cover 10 classes"),
        (LabelConfig(labels=10**6), "exceeds the"),
        (LabelConfig(per_class=10**4), "more than class"),
        (LabelConfig(labels=50, per_class=5), "not both"),
        (LabelConfig(labels=-1), r"0 \(all labels\) or positive"),
        (LabelConfig(transfer_ratio=0.0), "transfer ratio"),
        (LabelConfig(transfer_ratio=float("nan")), "transfer ratio"),
        (LabelConfig(transfer="folder:"), "unknown transfer set"),
        (LabelConfig(transfer="everything"), "unknown transfer set"),
    ],
)
def test_bad_budgets_are_refused_with_a_clear_message(digits, cfg, phrase):
    with pytest.raises(ConfigError, match=phrase):
        L.training_set(digits, cfg)


def test_parse_transfer_forms():
    assert L.parse_transfer("rest") == L.TransferSource(True, None)
    assert L.parse_transfer("none") == L.TransferSource(False, None)
    assert L.parse_transfer("folder:/a b/c+d") == L.TransferSource(False, "/a b/c+d")
    assert L.parse_transfer("rest+folder:x") == L.TransferSource(True, "x")


# ---------------------------------------------------------------- the training set


def test_training_set_partitions_the_split_and_carries_no_hidden_labels(digits):
    ts = L.training_set(digits, LabelConfig(per_class=4, label_seed=2))
    assert ts.x.shape == (40, 1, 8, 8) and ts.y.shape == (40,)
    assert torch.equal(ts.x, digits.train_x[torch.as_tensor(ts.labelled_idx)])
    assert torch.equal(ts.y, digits.train_y[torch.as_tensor(ts.labelled_idx)])
    assert len(ts.transfer_x) == len(digits.train_y) - 40
    assert rows(ts.x) + rows(ts.transfer_x) == rows(digits.train_x)
    assert not hasattr(ts, "transfer_y")
    report = ts.report()
    assert report["labelled"] == 40 and report["per_class"] == [4] * 10
    assert report["transfer"] == len(digits.train_y) - 40


def poison_hidden(data, labelled_idx: np.ndarray):
    """`data` with every label outside `labelled_idx` changed to a wrong class."""
    y = data.train_y.clone()
    hidden = torch.as_tensor(np.setdiff1d(np.arange(len(y)), labelled_idx))
    y[hidden] = (y[hidden] + 1 + torch.arange(len(hidden)) % 9) % 10
    assert (y[hidden] != data.train_y[hidden]).all()
    return replace(data, train_y=y)


def test_hidden_labels_do_not_reach_the_training_set(digits):
    """Given the subset, the labelled rows and the transfer inputs are bit-identical
    whatever the hidden labels say."""
    cfg = LabelConfig(per_class=5, label_seed=9)
    clean = L.training_set(digits, cfg)
    dirty = L.training_set(poison_hidden(digits, clean.labelled_idx), cfg, labelled_idx=clean.labelled_idx)
    for a, b in ((clean.x, dirty.x), (clean.y, dirty.y), (clean.transfer_x, dirty.transfer_x)):
        assert torch.equal(a, b)


def test_transfer_none_and_without_teacher_give_no_transfer_rows(digits):
    assert len(L.training_set(digits, LabelConfig(per_class=3, transfer="none")).transfer_x) == 0
    assert len(L.training_set(digits, LabelConfig(per_class=3), with_transfer=False).transfer_x) == 0


def test_label_counts_for_the_dashboard(digits, tmp_path):
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for i in range(6):
        Image.new("L", (9, 9), 20 * i).save(folder / f"{i}.png")
    n = len(digits.train_y)
    assert L.label_counts(digits, LabelConfig()) == {"labelled": n, "transfer": 0, "train": n}
    assert L.label_counts(digits, LabelConfig(labels=100)) == {"labelled": 100, "transfer": n - 100, "train": n}
    both = LabelConfig(labels=100, transfer=f"rest+folder:{folder}")
    assert L.label_counts(digits, both)["transfer"] == n - 100 + 6
    assert L.label_counts(digits, replace(both, transfer=f"folder:{folder}"))["transfer"] == 6


# ---------------------------------------------------------------- unlabelled folders


def expected_pixels(path, side: int, mean: float, std: float, mode: str) -> np.ndarray:
    """Independent reference: PIL bilinear resize, /255 in float64, then the dataset's normalisation."""
    with Image.open(path) as img:
        a = np.asarray(img.convert(mode).resize((side, side), Image.BILINEAR), dtype=np.float64) / 255.0
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return (a - mean) / std


def test_unlabelled_folder_is_resized_and_normalised_like_the_dataset(digits, tmp_path):
    folder = tmp_path / "imgs"
    (folder / "nested").mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(20, 14), (8, 8), (31, 40)]):
        p = (folder / "nested" if i == 2 else folder) / f"im{i}.{'png' if i else 'jpg'}"
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(p)
        paths.append(p)
    (folder / "notes.txt").write_text("not an image, and not named like one: ignored")
    x = L.load_unlabelled_folder(folder, digits)
    assert x.shape == (3, 1, 8, 8) and x.dtype == torch.float32
    for got, path in zip(x, sorted(paths)):
        want = expected_pixels(path, 8, digits.mean, digits.std, "L")
        np.testing.assert_allclose(got.double().numpy(), want, atol=1e-5)


def test_unlabelled_folder_with_bad_images_names_every_one(digits, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(folder / "good.png")
    (folder / "text.png").write_text("hello")
    good = (folder / "good.png").read_bytes()
    (folder / "cut.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError) as err:
        L.load_unlabelled_folder(folder, digits)
    message = str(err.value)
    assert "2 of 3 files" in message and "text.png" in message and "cut.png" in message
    assert "good.png" not in message


def test_unlabelled_folder_missing_or_empty(digits, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        L.load_unlabelled_folder(tmp_path / "nope", digits)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("x")
    with pytest.raises(DataError, match="holds no images"):
        L.load_unlabelled_folder(tmp_path / "empty", digits)


def test_folder_transfer_joins_the_rest(digits, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        Image.new("L", (8, 8), 60 * i).save(folder / f"{i}.png")
    ts = L.training_set(digits, LabelConfig(per_class=2, transfer=f"rest+folder:{folder}"))
    assert len(ts.transfer_x) == len(digits.train_y) - 20 + 4
    only = L.training_set(digits, LabelConfig(per_class=2, transfer=f"folder:{folder}"))
    assert torch.equal(only.transfer_x, ts.transfer_x[-4:])


# ---------------------------------------------------------------- steps and config


def test_step_plan():
    assert L.step_plan(1000, 0, 64, 1.0) == L.StepPlan(64, 0, 16)
    assert L.step_plan(500, 53500, 128, 1.0) == L.StepPlan(64, 64, 836)  # 53500 / 64 = 835.9
    assert L.step_plan(500, 53500, 128, 3.0) == L.StepPlan(32, 96, 558)  # 53500 / 96 = 557.3
    assert L.step_plan(5000, 100, 128, 1.0) == L.StepPlan(64, 64, 79)  # the labelled stream is longer
    assert L.step_plan(10, 10, 2, 100.0) == L.StepPlan(1, 1, 10)  # each side keeps at least a row


def test_label_config_round_trips_and_old_configs_load_as_all_labels():
    cfg = RunConfig(kind="student", labels=LabelConfig(labels=500, label_seed=4, transfer="rest", transfer_ratio=2))
    assert RunConfig.from_json(cfg.to_json()) == cfg
    old = cfg.to_dict()
    del old["labels"]
    assert RunConfig.from_dict(old).labels == LabelConfig()
    assert LabelConfig(per_class=5).describe() == "5 labels per class"
    assert LabelConfig(labels=2000).describe() == "2,000 labels" and LabelConfig().describe() == "all labels"
