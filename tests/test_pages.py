"""AppTest: each of the lead's pages renders, and the whole flow works on digits.

Pages run against a real run store in a temporary folder (KD_RUNS) and the
real `digits` data; training happens in kd_core's real worker thread.
"""

from __future__ import annotations

from itertools import pairwise

import pytest
from streamlit.testing.v1 import AppTest

from app_helpers import APP, open_app, stored_teacher, wait_for_job
from kd_core.store import Store
from kd_core.train.models import teacher_preset
from kd_core.views import studio


def mlp_params(sizes: list[int]) -> int:
    return sum(a * b + b for a, b in pairwise(sizes))


def test_overview_renders(runs_dir):
    at = open_app()
    assert at.title[0].value == "KD Studio"
    assert at.latex, "the loss formula is shown"
    assert at.button(key="quick_start").label.startswith("Quick start")
    assert [m.value for m in at.metric if m.label == "Teacher"] == ["none yet"]


def test_teacher_page_renders(runs_dir):
    at = open_app("app_pages/teacher.py")
    preset = teacher_preset("digits")
    assert [at.slider(key=k).value for k in ("t_depth", "t_epochs")] == [preset.depth, 15]
    width = at.select_slider(key="t_size")  # a log-like scale: 4, 6, 8, 12 … 1536, 2048
    assert width.options[:4] == ["4", "6", "8", "12"] and width.options[-2:] == ["1536", "2048"]
    assert width.value == preset.size
    assert at.button(key="train_teacher").label == "Train teacher"
    assert at.select_slider(key="t_lr").value == pytest.approx(1e-3)


def test_distill_without_teacher_points_to_teacher_page(runs_dir):
    at = open_app("app_pages/distill.py")
    assert any("needs a teacher" in i.value for i in at.info)
    assert not at.slider


@pytest.mark.slow
def test_distill_preview_shows_compression_before_training(runs_dir):
    teacher = stored_teacher(runs_dir, width=64)
    at = open_app("app_pages/distill.py")
    at.select_slider(key="s_size").set_value(16).run()
    student_params = mlp_params([64, 16, 10])
    teacher_params = mlp_params([64, 64, 10])
    assert teacher.metrics["params"] == teacher_params
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Student parameters"] == f"{student_params:,}"
    assert metrics["Compression"] == f"{teacher_params / student_params:.1f}×"
    assert at.slider(key="T").value == 4.0 and at.slider(key="lam").value == studio.DEFAULT_LAMBDA == 0.5


@pytest.mark.slow
def test_whole_flow_teacher_distill_cards_compare(runs_dir):
    at = open_app("app_pages/teacher.py")
    at.select_slider(key="t_size").set_value(128)
    at.slider(key="t_epochs").set_value(5)
    at.button(key="train_teacher").click().run()
    assert not at.exception
    snap = wait_for_job()
    assert snap.status == "finished" and snap.outcomes[0]["kind"] == "teacher"
    at.run()
    at.run()  # the page adopts the new teacher in the sidebar on this rerun
    teacher_id = snap.outcomes[0]["run_id"]
    assert at.session_state["teacher_pick"] == teacher_id

    at.switch_page("app_pages/distill.py").run()
    at.slider(key="s_epochs").set_value(4)
    at.slider(key="T").set_value(3.0)
    at.button(key="distill").click().run()
    snap = wait_for_job()
    assert snap.status == "finished"
    assert [o["kind"] for o in snap.outcomes] == ["student", "baseline"]
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    cards = {m.label: m.value for m in at.metric}
    student, baseline = snap.outcomes
    assert cards["Student test accuracy"] == f"{student['test_acc']:.4f}"
    gain = student["test_acc"] - baseline["test_acc"]
    assert cards["Gain over no-KD baseline"] == f"{gain:+.4f}"
    noise = " ".join(c.value for c in at.caption)  # the headline states images, seeds and the verdict
    assert f"Against its no-KD baseline: {gain:+.4f} ({round(gain * 360):+d} of 360 test images) · 1 seed ·" in noise
    assert "Against the teacher:" in noise and ("within noise" in noise or "beyond noise" in noise)
    stored = Store(runs_dir).get_run(student["run_id"])
    assert stored.config.distill.temperature == 3.0 and stored.teacher_id == teacher_id
    at.slider(key="T").set_value(5.0).run()  # the sliders move on; the results shown are still the run's
    assert any("started with T=3 (now 5)" in i.value for i in at.info), [i.value for i in at.info]

    at.switch_page("app_pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]


def test_link_values_a_widget_cannot_take_get_a_visible_notice(runs_dir):
    stored_teacher(runs_dir, width=64)
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update({"T": "50", "lam": "0.5", "s_size": "100", "s_lr": "0.003"})
    at.run()
    at.switch_page("app_pages/distill.py").run()
    assert not at.exception, [e.value for e in at.exception]
    notes = [w.value for w in at.warning]
    assert any("Temperature T “50” is not within 1–20" in n for n in notes), notes
    assert any("Hidden width “100” is not one of 4, 6 … 2048" in n for n in notes), notes
    assert not any("λ" in n or "Learning rate" in n for n in notes)  # the valid ones apply silently
    assert at.slider(key="T").value == 4.0 and at.slider(key="lam").value == 0.5
    assert at.select_slider(key="s_lr").value == pytest.approx(3e-3)
