"""AppTest: the 'labels available' control on the Teacher and Distill pages, its live count,
and a distillation launched on a budget, stored with the subset its baseline shares."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from app_helpers import open_app, stored_teacher, wait_for_job
from kd_core.store import Store
from kd_core.views import studio


def caption_text(at) -> str:
    return " ".join(c.value for c in at.caption)


def test_distill_counts_labelled_and_transfer_images_live_and_stores_the_budget(runs_dir):
    teacher = stored_teacher(runs_dir)
    n_train = studio.load_data("digits").info()["train"]
    at = open_app("app_pages/distill.py")
    assert at.select_slider(key="s_labels").value == 0  # all labels by default
    assert f"All {n_train:,} training images are labelled" in caption_text(at)
    at.select_slider(key="s_labels").set_value(50).run()
    text = caption_text(at)
    assert f"**50** labelled images · **{n_train - 50:,}** transfer images" in text
    assert "trained on every label (a teacher from elsewhere)" in text
    at.slider(key="s_epochs").set_value(2)
    at.select_slider(key="s_ratio").set_value(3.0)
    at.checkbox(key="s_fm").check()
    at.number_input(key="s_patience").set_value(1)
    at.button(key="distill").click().run()
    snap = wait_for_job()
    assert snap.status == "finished", snap.message
    store = Store(runs_dir)
    student, baseline = (store.get_run(o["run_id"]) for o in snap.outcomes)
    assert student.config.labels.labels == 50 and student.config.labels.transfer_ratio == 3.0
    assert student.metrics["labels"]["labelled"] == baseline.metrics["labels"]["labelled"] == 50
    assert student.metrics["labels"]["subset"] == baseline.metrics["labels"]["subset"]
    assert student.metrics["labels"]["transfer_used"] == n_train - 50
    assert student.teacher_id == teacher.id
    at.run()
    assert f"Trained on 50 labelled images and {n_train - 50:,} transfer images" in caption_text(at)
    train = student.config.train
    # function matching on digits: shifts and mixup, no flips (a mirrored digit is another digit)
    assert (train.augment, train.flip, train.mixup, train.patience) == (True, False, 1.0, 1)
    assert baseline.config.train.mixup == 1.0  # the baseline is augmented alike


def test_teacher_page_trains_on_a_budget(runs_dir):
    at = open_app("app_pages/teacher.py")
    at.select_slider(key="t_size").set_value(32)
    at.slider(key="t_epochs").set_value(1)
    at.select_slider(key="t_labels").set_value(100).run()
    assert "**100** labelled images" in caption_text(at)
    at.button(key="train_teacher").click().run()
    snap = wait_for_job()
    assert snap.status == "finished", snap.message
    run = Store(runs_dir).get_run(snap.outcomes[0]["run_id"])
    assert run.config.labels.labels == 100 and run.metrics["labels"]["labelled"] == 100
    assert run.metrics["labels"]["transfer_used"] == 0  # a teacher has nobody to imitate


def write_unlabelled(folder: Path, n: int) -> None:
    """`n` greyscale PNGs, 16×16 (the loader resizes them to digits' 8×8), no class folders."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), mode="L").save(folder / f"img{i:02d}.png")


def test_distill_takes_an_unlabelled_folder_counts_it_and_refuses_a_bad_image(runs_dir, tmp_path):
    stored_teacher(runs_dir)
    n_train = studio.load_data("digits").info()["train"]
    folder = tmp_path / "mine"
    write_unlabelled(folder, 12)
    at = open_app("app_pages/distill.py")
    at.select_slider(key="s_labels").set_value(50)
    at.slider(key="s_epochs").set_value(1)
    at.text_input(key="s_transfer_folder").set_value(str(folder)).run()
    assert f"**50** labelled images · **{n_train - 50 + 12:,}** transfer images" in caption_text(at)
    assert "plus the folder's images" in caption_text(at)
    at.button(key="distill").click().run()
    snap = wait_for_job()
    assert snap.status == "finished", snap.message
    store = Store(runs_dir)
    student, baseline = (store.get_run(o["run_id"]) for o in snap.outcomes)
    assert student.config.labels.transfer == f"rest+folder:{folder.resolve()}"
    assert student.metrics["labels"]["transfer_used"] == n_train - 50 + 12
    assert baseline.metrics["labels"]["transfer_used"] == 0
    n_runs = len(store.list_runs())
    (folder / "broken.png").write_bytes(b"not a png")
    at.run()
    assert any("broken.png" in e.value for e in at.error), [e.value for e in at.error]
    assert at.button(key="distill").disabled  # refused before anything is stored
    assert len(store.list_runs()) == n_runs
