"""AppTest: the Distill page's student controls follow the family (torchvision widths)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from kd_core.config import ModelSpec
from kd_core.train.models import build_model, param_count
from tests.test_pages import open_app, runs_dir, stored_teacher  # noqa: F401  (runs_dir is a fixture)


def test_student_slider_becomes_a_width_multiplier_for_a_torchvision_family(runs_dir):  # noqa: F811
    stored_teacher(runs_dir, width=64)
    at: AppTest = open_app("app_pages/distill.py")
    assert at.slider(key="s_size").label == "Hidden width"
    at.selectbox(key="s_family").set_value("mobilenet_v3_small").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not [s for s in at.slider if s.key == "s_size"]  # no channel/hidden width for this family
    width = at.select_slider(key="s_width")
    assert width.value == 0.5  # a student starts at half width
    expected = param_count(build_model(ModelSpec("mobilenet_v3_small", width=0.5), (1, 8, 8), 10))
    assert {m.label: m.value for m in at.metric}["Student parameters"] == f"{expected:,}"
    width.set_value(0.25).run()
    smaller = param_count(build_model(ModelSpec("mobilenet_v3_small", width=0.25), (1, 8, 8), 10))
    assert {m.label: m.value for m in at.metric}["Student parameters"] == f"{smaller:,}"
    assert smaller < expected
