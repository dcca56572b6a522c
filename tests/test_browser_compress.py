"""The Compress page in a real browser (tests/_server.py, Debian's chromium): the issue's "done
when" on digits. A teacher is trained by the CLI; on the Compress page a goal is set through the
URL (eager PyTorch, a 30-point drop allowed, 3 trials of 2 epochs), Search is pressed, the Pareto
front fills in while the study runs, and the chosen student is ringed beside the teacher. One
click takes it to the Compare page's Deployment tab, where its int8 ONNX file and its model card
are built and downloaded. Screenshots go to artifacts/screenshots/compress_*.png.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.parse
import zipfile
from pathlib import Path

import pytest

from _server import REPO, StreamlitServer, kd_env, launch_browser, require_browser, settle, wait_until

sync_api = require_browser()
pytestmark = pytest.mark.browser

SHOTS = REPO / "artifacts" / "screenshots"
LONG = 120_000  # ms
GOAL = "cs_runtime=PyTorch+%28eager%29&cs_drop=30&cs_speedup=0&cs_trials=3&cs_epochs=2"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("kd_browser_compress")
    runs, data = root / "runs", root / "data"
    cmd = [sys.executable, "-m", "kd_core", "teacher", "--epochs", "3", "--store", str(runs), "--json", "--quiet"]
    out = subprocess.run(cmd, cwd=root, env=kd_env(runs, data), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return runs, data, json.loads(out.stdout)["runs"][0]["run_id"]


def shot(page, name: str) -> None:
    errors = page.locator('[data-testid="stException"]')
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    assert not errors.count(), errors.first.inner_text()


def trace_points(page, title: str) -> dict[str, int]:
    """{trace name: number of points} of the chart titled `title`, as plotly holds it."""
    return page.evaluate(
        """(title) => {
        for (const plot of document.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot')) {
            const t = plot.layout && plot.layout.title;
            // Streamlit's theme wraps the title in <b> tags
            if (!String(t ? (t.text || t) : '').includes(title) || !plot.data) continue;
            const out = {};
            // numeric arrays arrive base64-packed; every point trace has one hover text per point
            for (const tr of plot.data) out[tr.name] = tr.hovertext ? tr.hovertext.length : 0;
            return out;
        }
        return {};
    }""",
        title,
    )


def _wait(page, predicate, what: str, timeout: float = 3 * LONG / 1000) -> None:
    """wait_until, with a screenshot of the page when it times out."""
    try:
        wait_until(predicate, timeout, what=what)
    except AssertionError:
        page.screenshot(path=str(SHOTS / "compress_timeout.png"), full_page=True)
        raise


def main_button(page, label: str):
    return page.get_by_test_id("stMain").get_by_role("button", name=re.compile(label))


def test_a_small_study_from_search_to_an_int8_onnx_download(folders):
    runs, data, teacher_id = folders
    SHOTS.mkdir(parents=True, exist_ok=True)
    server = StreamlitServer(runs, data, cwd=runs.parent)
    server.start()
    try:
        with sync_api.sync_playwright() as pw:
            browser = launch_browser(pw)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 2400}, accept_downloads=True)
                page.set_default_timeout(LONG)
                page.goto(server.url)
                settle(page, "KD Studio")
                _study(page, server.url, teacher_id)
                _deploy(page, runs)
            finally:
                browser.close()
    finally:
        code = server.stop()
    assert code == 0, f"streamlit exited with {code}:\n{server.log()}"


def _study(page, base: str, teacher_id: str) -> None:
    page.goto(f"{base}/compress?teacher={teacher_id}&{GOAL}")
    settle(page, "Compress")
    shot(page, "compress_setup")
    main_button(page, "^Search$").click()
    _wait(
        page,
        lambda: (
            sum(
                trace_points(page, "Accuracy vs latency").get(n, 0)
                for n in ("meets the goal", "trained, misses the goal")
            )
            >= 1
        ),
        "a trained trial on the front",
    )
    shot(page, "compress_live")
    page.get_by_text(re.compile(r"^Chosen: trial \d+")).first.wait_for(timeout=3 * LONG)
    wait_until(lambda: not page.locator('[data-testid="stProgress"]').count(), 60, what="the study to end")
    settle(page, "Compress")
    points = trace_points(page, "Accuracy vs latency")
    assert points.get("teacher") == 1 and points.get("chosen student") == 1, points
    assert (
        sum(
            points.get(n, 0)
            for n in (
                "meets the goal",
                "trained, misses the goal",
                "stopped by the pruner",
                "over budget (not trained)",
            )
        )
        == 3
    )
    shot(page, "compress_done")


def _deploy(page, runs: Path) -> None:
    from kd_core.store import Store
    from kd_core.views.compress_view import study_state

    page.get_by_test_id("stMain").get_by_role("link", name=re.compile("Open in Deployment")).click()
    try:
        page.get_by_text("Distill, then quantize, then ship").first.wait_for(timeout=LONG)
    except sync_api.Error:
        page.screenshot(path=str(SHOTS / "compress_timeout.png"), full_page=True)
        raise
    settle(page, "Compare")
    [study] = Store(runs).list_studies()
    chosen = study_state(Store(runs), study["id"])["chosen"]
    assert chosen["run_id"] in urllib.parse.unquote_plus(page.url) and "dep_tab=Deployment" in page.url
    page.get_by_test_id("stMain").get_by_text(re.compile(chosen["run_id"])).first.wait_for()
    page.get_by_test_id("stMain").get_by_text("int8", exact=True).first.click()
    settle(page, "Compare")
    main_button(page, "^Build ONNX file$").click()
    link = main_button(page, r"^Download .*\.int8\.onnx$")
    link.wait_for(timeout=LONG)
    with page.expect_download() as info:
        link.click()
    onnx_path = Path(info.value.path())
    assert onnx_path.stat().st_size > 0 and info.value.suggested_filename.endswith(".int8.onnx")
    main_button(page, "^Build model card$").click()
    card = main_button(page, r"^Download .*\.zip$")
    card.wait_for(timeout=LONG)
    with page.expect_download() as info:
        card.click()
    with zipfile.ZipFile(info.value.path()) as z:
        assert any(n.endswith("MODEL_CARD.md") for n in z.namelist())
    shot(page, "compress_deployment")
