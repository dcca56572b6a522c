"""End to end in a real browser: `streamlit run app.py` in a subprocess, driven by
Playwright through Debian's chromium.

One test walks the whole flow: Overview renders, a teacher (pre-trained by the CLI)
is in use, the Distill page's T slider moves by keyboard and lands in the URL, a
long run starts, its progress and loss curve grow, Stop stops it; every page is
visited by URL and none shows a Streamlit exception; the server then exits cleanly.
Screenshots go to artifacts/screenshots/. Nothing here is timed: waits poll with
generous deadlines.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from urllib.parse import parse_qs, urlparse

import pytest

from _server import REPO, StreamlitServer, kd_env, launch_browser, require_browser, settle, slider_value, wait_until

pytestmark = pytest.mark.browser

sync_api = require_browser()

SHOTS = REPO / "artifacts" / "screenshots"
LONG = 90_000  # ms: first renders import torch and load data; CI machines can be slow
PAGES = {
    "overview": ("", "KD Studio"),
    "teacher": ("teacher", "Teacher"),
    "distill": ("distill", "Distill"),
    "compare": ("compare", "Compare"),
    "soft_targets": ("soft_targets", "Soft targets"),
}
# A student big enough that 100 epochs at batch 16 outlast the test on any machine; it is stopped.
LONG_RUN = "s_size=1024&s_depth=3&s_epochs=100&s_bs=16&baseline=false"
STEP = re.compile(r"step (\d+)/(\d+)")


def assert_no_exception(page, name: str) -> None:
    errors = page.locator('[data-testid="stException"]')
    if errors.count():
        page.screenshot(path=str(SHOTS / f"{name}_exception.png"), full_page=True)
        raise AssertionError(f"{name} shows a Streamlit exception:\n{errors.first.inner_text()}")


def visit(page, base: str, name: str, query: str = "") -> None:
    path, heading = PAGES[name]
    page.goto(f"{base}/{path}{'?' + query if query else ''}")
    settle(page, heading, LONG / 1000)
    assert_no_exception(page, name)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def query_float(page, key: str):
    values = parse_qs(urlparse(page.url).query).get(key)
    try:
        return float(values[0]) if values else None
    except ValueError:
        return None


def nudge_slider(page, label: str, key: str, presses: int) -> float:
    """Focus the slider's thumb, press ArrowRight `presses` times and wait until the new value is
    both shown and in the URL (?key=…); returns it. A key press that lands while the page is
    being redrawn can be shown but never sent, so this moves it one more step if the URL does
    not follow."""
    before = slider_value(page, label)
    thumb = page.get_by_role("slider", name=label)
    thumb.focus()
    for _ in range(presses):
        page.keyboard.press("ArrowRight")
    wait_until(lambda: slider_value(page, label) not in ("", before), 30, what=f"{label} to move")
    for _ in range(5):
        value = float(slider_value(page, label))
        try:
            wait_until(lambda v=value: query_float(page, key) == v, 10, what=f"{key}={value:g} in the URL")
            return value
        except AssertionError:
            # One more step to a new value, which the slider must send (a right-then-left
            # nudge back to the same value can be dropped again, as can a press mid-redraw).
            page.wait_for_timeout(500)
            thumb.focus()
            page.keyboard.press("ArrowRight")
            wait_until(
                lambda v=value: slider_value(page, label) not in ("", str(v), f"{v:.2f}"),
                10,
                what=f"{label} to move on",
            )
    raise AssertionError(f"the {label} slider's value {slider_value(page, label)} never reached the URL ({page.url})")


def loss_curve_end(page) -> float:
    """The last step drawn in the loss chart, from plotly's decoded traces: the curve grows to
    the right. (Its point count stops growing: kd_core downsamples curves to 400 points, and
    plotly express then draws them with WebGL.) While the fragment redraws, a stale copy of the
    chart can linger; the newest reaches furthest."""
    return page.evaluate("""() => {
        let end = -1;
        for (const plot of document.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot')) {
            const title = plot.layout && plot.layout.title;
            const text = title ? (title.text || title) : '';
            if (!String(text).includes('Loss per step') || !plot._fullData) continue;
            for (const trace of plot._fullData) {
                const x = trace.x;
                if (x && x.length && Number.isFinite(Number(x[x.length - 1])))
                    end = Math.max(end, Number(x[x.length - 1]));
            }
        }
        return end;
    }""")


def progress_step(page) -> int:
    bar = page.locator('[data-testid="stProgress"]')
    if not bar.count():
        return -1
    try:
        m = STEP.search(bar.first.inner_text(timeout=2_000))
    except sync_api.Error:  # redrawn by the fragment between count and read
        return -1
    return int(m.group(1)) if m else -1


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("kd_browser")
    runs, data = root / "runs", root / "data"
    return runs, data


@pytest.fixture(scope="module")
def teacher_id(folders) -> str:
    """A small teacher trained by the CLI before the server starts (faster than Quick start,
    and independent of the UI under test)."""
    runs, data = folders
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "kd_core",
            "teacher",
            "--epochs",
            "3",
            "--store",
            str(runs),
            "--data-root",
            str(data),
            "--json",
            "--quiet",
        ],
        cwd=runs.parent,
        env=kd_env(runs, data),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    run = json.loads(out.stdout)["runs"][0]
    assert run["status"] == "finished"
    return run["run_id"]


@contextlib.contextmanager
def browser_on(server: StreamlitServer):
    """A page of headless chromium for a started `server`; the server is stopped afterwards and
    must exit with 0 (the JobManager stops and joins its worker at exit)."""
    try:
        with sync_api.sync_playwright() as pw:
            browser = launch_browser(pw)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1800})
                page.set_default_timeout(LONG)
                yield page
            finally:
                browser.close()
    finally:
        code = server.stop()
    assert code == 0, f"streamlit exited with {code}:\n{server.log()}"


def test_dashboard_flow(folders, teacher_id):
    runs, data = folders
    SHOTS.mkdir(parents=True, exist_ok=True)
    server = StreamlitServer(runs, data, cwd=runs.parent).start()
    with browser_on(server) as page:
        try:
            _walk(page, server.url, teacher_id)
        except Exception:
            page.screenshot(path=str(SHOTS / "failure.png"), full_page=True)
            raise

    # The stopped student was finished as "stopped" by the worker, not left "running" (the
    # JobManager stopped and joined it at exit; a dead process's run would read "failed").
    from kd_core.store import Store

    students = Store(runs).list_runs(kind="student")
    assert [r.status for r in students] == ["stopped"], students


def _walk(page, base: str, teacher_id: str) -> None:
    # Overview: the text, and the CLI's teacher picked up from KD_RUNS.
    visit(page, base, "overview")
    page.get_by_text("Knowledge distillation").first.wait_for()
    teacher_card = page.locator('[data-testid="stMetric"]').filter(has_text="Teacher")
    assert "none yet" not in teacher_card.inner_text()
    assert page.get_by_role("button", name="Quick start on digits").is_enabled()

    visit(page, base, "teacher")
    page.get_by_role("heading", name=re.compile("Teacher in use")).wait_for()

    # Distill: a long run set up through the URL, then T moved by keyboard.
    visit(page, base, "distill", f"teacher={teacher_id}&{LONG_RUN}")
    assert slider_value(page, "Epochs") == "100"
    before = float(slider_value(page, "Temperature T"))
    after = nudge_slider(page, "Temperature T", "T", presses=3)
    assert after > before
    settle(page, "Distill", LONG / 1000)

    page.get_by_role("button", name="Distill", exact=True).click()
    first = wait_until(lambda: max(progress_step(page), 0), LONG / 1000, what="the first training steps")
    end = wait_until(lambda: max(loss_curve_end(page), 0), LONG / 1000, what="the loss curve")
    page.get_by_text(re.compile(rf"Running: distil .*T={after:g}\b")).wait_for()  # the run got the new T
    page.wait_for_timeout(2_000)
    wait_until(lambda: progress_step(page) > first, 60, what="the step count to grow")
    wait_until(lambda: loss_curve_end(page) > end, 60, what="the loss curve to grow")
    assert_no_exception(page, "distill_live")
    page.screenshot(path=str(SHOTS / "distill_live.png"), full_page=True)

    main = page.get_by_test_id("stMain")  # not the status widget's own "Stop" (of the script)
    main.get_by_role("button", name="Stop", exact=True).click()
    page.get_by_text(re.compile(r"^Stopped: ")).first.wait_for(timeout=LONG)
    settle(page, "Distill", LONG / 1000)
    assert_no_exception(page, "distill_stopped")
    page.screenshot(path=str(SHOTS / "distill_stopped.png"), full_page=True)

    visit(page, base, "compare")
    visit(page, base, "soft_targets")


def test_first_visit_to_a_subpage_gets_the_app_navigation(folders, teacher_id):
    """A fresh server's very first session, opened on a sub-page URL, gets the app's navigation
    (not Streamlit's legacy listing of the pages/ folder: app, compare, distill, …)."""
    runs, data = folders
    server = StreamlitServer(runs, data, cwd=runs.parent).start()
    with browser_on(server) as page:
        page.goto(f"{server.url}/teacher")  # the server's very first session
        settle(page, "Teacher", LONG / 1000)
        nav = page.get_by_test_id("stSidebarNav").inner_text()
    assert "Overview" in nav and "Soft targets" in nav, f"navigation shows: {nav!r}"
