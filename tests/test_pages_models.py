"""AppTest: the Distill page's student controls follow the family (torchvision widths); the Teacher
page takes a black-box teacher file with its input contract and refuses one whose classes differ."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app_helpers import open_app, stored_teacher
from blackbox_files import BehindContract, contract, write
from helpers import TEACHER_SPEC, make_config
from kd_core.config import ModelSpec
from kd_core.store import Store
from kd_core.train.engine import fit
from kd_core.train.models import build_model, param_count
from kd_core.views import studio

pytestmark = pytest.mark.slow  # a torchvision student and a teacher upload on the pages: seconds each


def test_student_slider_becomes_a_width_multiplier_for_a_torchvision_family(runs_dir):
    stored_teacher(runs_dir, width=64)
    at: AppTest = open_app("app_pages/distill.py")
    assert at.select_slider(key="s_size").label == "Hidden width"
    at.selectbox(key="s_family").set_value("mobilenet_v3_small").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not [s for s in at.select_slider if s.key == "s_size"]  # no channel/hidden width for this family
    width = at.select_slider(key="s_width")
    assert width.value == 0.5  # a student starts at half width
    expected = param_count(build_model(ModelSpec("mobilenet_v3_small", width=0.5), (1, 8, 8), 10))
    assert {m.label: m.value for m in at.metric}["Student parameters"] == f"{expected:,}"
    width.set_value(0.25).run()
    smaller = param_count(build_model(ModelSpec("mobilenet_v3_small", width=0.25), (1, 8, 8), 10))
    assert {m.label: m.value for m in at.metric}["Student parameters"] == f"{smaller:,}"
    assert smaller < expected


def test_teacher_page_takes_a_torchscript_upload_with_its_contract_and_distill_shows_it(runs_dir, tmp_path):
    data = studio.load_data("digits")
    inner = fit(make_config("teacher", TEACHER_SPEC, epochs=2), data).model
    path = write("torchscript", BehindContract(inner, data.mean, data.std), tmp_path)
    at: AppTest = open_app("app_pages/teacher.py")
    at.file_uploader(key="ckpt_upload").set_value(("exported.pt", Path(path).read_bytes(), "application/octet-stream"))
    at.run()
    wrong = {**contract().to_dict(), "classes": list("abcdefghij")}
    at.file_uploader(key="contract_upload").set_value(("c.json", json.dumps(wrong).encode(), "application/json"))
    at.run()
    at.button(key="ckpt_load").click().run()
    assert any("Only the teacher has: a, b, c" in e.value for e in at.error)  # refused, with the difference
    assert Store(runs_dir).list_runs() == []
    at.file_uploader(key="contract_upload").set_value(
        ("c.json", json.dumps(contract().to_dict()).encode(), "application/json")
    )
    at.run()
    at.button(key="ckpt_load").click().run()
    assert not at.exception, [e.value for e in at.exception]
    (run,) = Store(runs_dir).list_runs(kind="teacher")
    assert run.label == "torchscript exported.pt (black box)"
    assert at.session_state["teacher_pick"] == run.id
    assert any("grey images repeated to 3 channels" in c.value for c in at.caption)
    at.switch_page("app_pages/distill.py").run()
    assert not at.exception, [e.value for e in at.exception]
    flops = next(m for m in at.metric if m.label == "FLOPs per sample")
    assert "black box" in flops.delta
