"""AppTest of the Distill page's method picker: its formula and parameter help, the preview
of extra parameters and of the teacher cache, the refusal of a mix the models cannot serve,
the URL round trip, and a DKD + KD mix trained with every named term on the live curves."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from app_helpers import APP, open_app, stored_teacher, wait_for_job
from kd_core.config import MethodSpec
from kd_core.store import Store
from kd_core.views import studio


def metrics(at) -> dict:
    return {m.label: m.value for m in at.metric}


def captions(at) -> str:
    return " ".join(c.value for c in at.caption)


def test_kd_is_the_default_with_its_formula_and_a_cached_teacher(runs_dir):
    stored_teacher(runs_dir, width=64)
    at = open_app("app_pages/distill.py")
    assert at.multiselect(key="methods").value == ["kd"]
    assert any("T²·KL" in m.value for m in at.markdown)  # the formula of the chosen method
    assert metrics(at)["Extra trainable parameters"] == "0"
    assert "Teacher targets: cached by sample index" in captions(at)
    assert not at.button(key="distill").disabled


@pytest.mark.slow
def test_fitnets_shows_its_regressor_and_parameter_help(runs_dir):
    stored_teacher(runs_dir, width=64)
    at = open_app("app_pages/distill.py")
    at.select_slider(key="s_size").set_value(16).run()
    at.multiselect(key="methods").set_value(["fitnets"]).run()
    assert not at.exception, [e.value for e in at.exception]
    # An MLP 16 student guided toward an MLP 64 teacher's hidden layer: a 16 → 64 linear regressor.
    assert metrics(at)["Extra trainable parameters"] == f"{16 * 64 + 64:,}"
    assert "fitnets: student hidden1 → teacher hidden1" in captions(at)
    coef = at.number_input(key="mp_fitnets_coef")
    assert coef.value == 1.0 and "½‖u_t − r(v_s)‖²" in coef.help


@pytest.mark.slow
def test_attention_transfer_on_mlps_is_refused_before_training(runs_dir):
    stored_teacher(runs_dir, width=64)
    at = open_app("app_pages/distill.py")
    at.multiselect(key="methods").set_value(["kd", "at"]).run()
    assert any("method 'at' needs spatial feature maps" in e.value for e in at.error)
    assert at.button(key="distill").disabled
    assert at.number_input(key="w_at").value == 1.0  # a mix shows each method's weight


@pytest.mark.slow
def test_the_url_carries_the_mix_and_its_parameters(runs_dir):
    stored_teacher(runs_dir, width=64)
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["methods"] = ["dkd", "dist"]
    at.query_params["w_dist"] = "0.5"
    at.query_params["mp_dkd_beta"] = "2"
    at.run()
    at.switch_page("app_pages/distill.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.multiselect(key="methods").value == ["dkd", "dist"]
    assert at.number_input(key="mp_dkd_beta").value == 2.0 and at.number_input(key="w_dist").value == 0.5
    at.number_input(key="mp_dist_gamma").set_value(3.0).run()
    assert "--method '1*dkd+0.5*dist' --method-param dkd.beta=2.0 --method-param dist.gamma=3.0" in captions(at)


@pytest.mark.slow
def test_a_dkd_and_kd_mix_trains_and_draws_every_named_term(runs_dir):
    teacher = stored_teacher(runs_dir, width=64)
    at = open_app("app_pages/distill.py")
    at.slider(key="s_epochs").set_value(2)
    at.multiselect(key="methods").set_value(["kd", "dkd"]).run()
    at.number_input(key="w_dkd").set_value(0.5).run()
    at.button(key="distill").click().run()
    snap = wait_for_job()
    assert snap.status == "finished", snap.message
    student = snap.outcomes[0]
    stored = Store(runs_dir).get_run(student["run_id"])
    assert stored.teacher_id == teacher.id
    assert stored.config.distill.methods == (MethodSpec("kd", 1.0), MethodSpec("dkd", 0.5))
    curves = studio.step_frame(snap)
    by_run = curves.groupby("run")["component"].unique().map(sorted).to_dict()
    assert sorted(by_run.values(), key=len)[-1] == ["CE", "KD", "NCKD", "TCKD", "total"]
    assert set(Store(runs_dir).epochs(student["run_id"])[0]["terms"]) == {"ce", "kd", "tckd", "nckd"}
