"""The Distill page's multi-model section (AppTest): a TAKD chain started from the page trains
as one job and its stages are stored as linked runs; a bad model list is one message."""

from __future__ import annotations

from app_helpers import open_app, stored_teacher, wait_for_job
from kd_core.store import Store


def test_takd_from_the_distill_page_stores_a_linked_chain(runs_dir):
    teacher = stored_teacher(runs_dir, width=64)
    at = open_app("app_pages/distill.py")
    at.slider(key="s_epochs").set_value(1)
    at.radio(key="pipe_method").set_value("takd").run()
    at.text_input(key="pipe_models_takd").set_value("mlp:32, mlp:8")
    at.button(key="pipe_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    snap = wait_for_job()
    assert snap.status == "finished", snap.message
    first, second = (Store(runs_dir).get_run(o["run_id"]) for o in snap.outcomes)
    assert first.teacher_id == teacher.id and second.teacher_id == first.id
    assert second.config.pipeline.parents == (first.id,)
    at.run()
    [table] = at.dataframe
    assert list(table.value["stage"]) == ["assistant 1", "student"]


def test_a_bad_model_list_is_one_message_and_nothing_starts(runs_dir):
    stored_teacher(runs_dir, width=64)
    at = open_app("app_pages/distill.py")
    at.radio(key="pipe_method").set_value("dml").run()
    at.text_input(key="pipe_models_dml").set_value("mlp:16")
    at.button(key="pipe_start").click().run()
    assert any("2 to 8 peers" in e.value for e in at.error), [e.value for e in at.error]
    assert len(Store(runs_dir).list_runs()) == 1  # the teacher only
