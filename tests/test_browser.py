"""End to end in a real browser: `streamlit run app.py` in a subprocess, driven by
Playwright through Debian's chromium.

- The flow: Overview renders, a teacher (pre-trained by the CLI) is in use, the Distill page's
  T slider moves by keyboard and lands in the URL, a long run starts, its progress and loss
  curve grow, Stop stops it and the page says what a stopped run left.
- The sidebar's settings: a store folder changed in the sidebar holds on every page the user
  goes to, and after the browser is closed and the page opened again (the settings file).
- Every page at 800 px and 1400 px wide, light and dark, into artifacts/screenshots/
  (<page>_<width>_<theme>.png): no Streamlit exception, no browser console error, no metric
  value clipped to "0.9…"; at 800 px the sidebar starts collapsed and columns are stacked.
- A sub-page URL opened first on a fresh server gets the app's navigation; the cold first
  paint is timed (artifacts/timings.json), not asserted against the 5 s target (a shared
  2-core machine is too noisy for that), only against a generous bound.

Every page load listens to the console: any error fails the test, except the two probes
Streamlit's frontend itself makes when a sub-page URL is opened directly (it asks
/<page>/_stcore/health and /<page>/_stcore/host-config first, gets 404 and goes on to the
root ones: streamlit/streamlit#7074, open upstream).
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
from urllib.parse import parse_qs, urlparse

import pytest

from _server import REPO, StreamlitServer, kd_env, launch_browser, require_browser, settle, slider_value, wait_until

pytestmark = pytest.mark.browser

sync_api = require_browser()
pytestmark = pytest.mark.browser

SHOTS = REPO / "artifacts" / "screenshots"
TIMINGS = REPO / "artifacts" / "timings.json"
LONG = 120_000  # ms: first renders import torch and load data; a shared machine can be slow
PAGES = {
    "overview": ("", "KD Studio"),
    "teacher": ("teacher", "Teacher"),
    "distill": ("distill", "Distill"),
    "compare": ("compare", "Compare"),
    "soft_targets": ("soft_targets", "Soft targets"),
    "runs": ("runs", "Runs"),
    "sweep": ("sweep", "Sweep"),
    "compress": ("compress", "Compress"),
    "methods": ("methods", "Methods"),
}
WIDTHS, THEMES = (800, 1400), ("light", "dark")
NARROW = 900  # ui/layout.py: at this width or less, columns stack and the sidebar starts collapsed
# A student big enough that 100 epochs at batch 16 outlast the test on any machine; it is stopped.
LONG_RUN = "s_size=1024&s_depth=3&s_epochs=100&s_bs=16&baseline=false"
STEP = re.compile(r"step (\d+)/(\d+)")
# Streamlit's own probes of a sub-page URL opened directly (streamlit/streamlit#7074).
UPSTREAM_PROBE = re.compile(r"/[a-z_]+/_stcore/(health|host-config)$")


class Console:
    """Console errors and uncaught exceptions of a page, but Streamlit's known sub-page probes."""

    def __init__(self, page):
        self.errors: list[str] = []
        page.on("console", self._message)
        page.on("pageerror", lambda err: self.errors.append(f"uncaught: {err}"))

    def _message(self, msg) -> None:
        url = (msg.location or {}).get("url", "")
        if msg.type == "error" and not UPSTREAM_PROBE.search(url):
            self.errors.append(f"{msg.text} ({url})")

    def check(self, where: str) -> None:
        errors, self.errors = self.errors, []
        assert not errors, f"browser console errors on {where}:\n" + "\n".join(errors)


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


CHARTS_DRAWN = """() => [...document.querySelectorAll('[data-testid="stPlotlyChart"]')]
    .filter(c => c.offsetParent !== null)
    .every(c => c.querySelector('.main-svg'))
    && !document.querySelector('[data-testid="stSkeleton"]')"""


def whole_page(page, path) -> None:
    """A screenshot of the whole page once every visible chart is drawn: Streamlit scrolls its main
    block, not the document, so the viewport is made as tall as that block first (the charts
    are drawn again at the new size)."""
    size = page.viewport_size
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], int(height))})
    page.wait_for_timeout(1000)
    wait_until(lambda: page.evaluate(CHARTS_DRAWN), 60, what=f"the charts of {path.name} to be drawn")
    page.wait_for_timeout(500)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)


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
    """The last step drawn in the loss chart, from plotly's decoded traces (the newest copy of a
    chart the fragment is redrawing reaches furthest)."""
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


def cli(runs, data, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "kd_core", *args, "--store", str(runs), "--data-root", str(data), "--json", "--quiet"],
        cwd=runs.parent,
        env=kd_env(runs, data),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("kd_browser")
    return root / "runs", root / "data"


@pytest.fixture(scope="module")
def teacher_id(folders) -> str:
    """A small teacher, a student with its baseline, and a 2 T × 2 λ sweep over 2 seeds, all
    trained by the CLI before a server starts (so every page has something to show)."""
    runs, data = folders
    run = cli(runs, data, "teacher", "--epochs", "3")["runs"][0]
    assert run["status"] == "finished"
    cli(runs, data, "distill", "--teacher", run["run_id"], "--baseline", "--epochs", "3")
    cli(runs, data, "sweep", "--teacher", run["run_id"], "--temperatures", "1,4", "--alphas", "0.5,0.9")
    return run["run_id"]


@contextlib.contextmanager
def browser_on(server: StreamlitServer, width: int = 1400, theme: str = "light"):
    """A page of headless chromium (its own context: a device of this width and colour scheme)
    for a started `server`; the server is stopped afterwards and must exit with 0."""
    try:
        with sync_api.sync_playwright() as pw:
            browser = launch_browser(pw)
            try:
                context = browser.new_context(viewport={"width": width, "height": 1200}, color_scheme=theme)
                page = context.new_page()
                page.set_default_timeout(LONG)
                yield page
            finally:
                browser.close()
    finally:
        code = server.stop()
    assert code == 0, f"streamlit exited with {code}:\n{server.log()}"


def record_timing(name: str, seconds: float) -> None:
    TIMINGS.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(TIMINGS.read_text()) if TIMINGS.is_file() else {}
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "")
    data[name] = {"seconds": round(seconds, 2), "cpu": model, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    TIMINGS.write_text(json.dumps(data, indent=2) + "\n")


# ---------------------------------------------------------------- the flow


def test_dashboard_flow(folders, teacher_id):
    runs, data = folders
    SHOTS.mkdir(parents=True, exist_ok=True)
    server = StreamlitServer(runs, data, cwd=runs.parent).start()
    with browser_on(server) as page:
        console = Console(page)
        try:
            _walk(page, server.url, teacher_id, console)
        except Exception:
            page.screenshot(path=str(SHOTS / "failure.png"), full_page=True)
            raise

    # The stopped student was finished as "stopped" by the worker, not left "running".
    from kd_core.store import Store

    stopped = [r for r in Store(runs).list_runs(kind="student") if r.sweep_id is None and r.status != "finished"]
    assert [r.status for r in stopped] == ["stopped"], stopped


def _walk(page, base: str, teacher_id: str, console: Console) -> None:
    visit(page, base, "overview")
    page.get_by_text("Knowledge distillation").first.wait_for()
    teacher_card = page.locator('[data-testid="stMetric"]').filter(has_text="Teacher")
    assert "none yet" not in teacher_card.inner_text()
    console.check("Overview")

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
    wait_until(lambda: progress_step(page) > first, 60, what="the step count to grow")
    wait_until(lambda: loss_curve_end(page) > end, 60, what="the loss curve to grow")
    assert_no_exception(page, "distill_live")
    page.screenshot(path=str(SHOTS / "distill_live.png"), full_page=True)

    main = page.get_by_test_id("stMain")  # not the status widget's own "Stop" (of the script)
    main.get_by_role("button", name="Stop", exact=True).click()
    page.get_by_text(re.compile(r"^Stopped: ")).first.wait_for(timeout=LONG)
    settle(page, "Distill", LONG / 1000)
    assert_no_exception(page, "distill_stopped")
    whole_page(page, SHOTS / "distill_stopped.png")
    console.check("Distill (live, then stopped)")


# ---------------------------------------------------------------- settings


def store_field(page):
    """The sidebar's run store folder, its expander opened first if need be."""
    field = page.get_by_label("Run store folder")
    if not field.is_visible():
        page.get_by_test_id("stSidebar").get_by_text("Folders and compute").click()
    return field


def test_the_store_folder_set_in_the_sidebar_holds_across_pages_and_restarts(folders, teacher_id, tmp_path):
    runs, data = folders
    other = tmp_path / "other_store"
    server = StreamlitServer(runs, data, cwd=runs.parent).start()
    with browser_on(server) as page:
        console = Console(page)
        visit(page, server.url, "teacher")
        field = store_field(page)
        assert field.input_value() == str(runs)
        field.fill(str(other))
        field.press("Enter")
        settle(page, "Teacher", LONG / 1000)
        for name, (_, heading) in (("runs", PAGES["runs"]), ("compare", PAGES["compare"])):
            page.get_by_test_id("stSidebarNav").get_by_role("link", name=heading).click()  # the same session
            settle(page, heading, LONG / 1000)
            assert_no_exception(page, name)
            assert store_field(page).input_value() == str(other), f"the store folder was reset on {name}"
            if name == "runs":  # the page itself reads the store the sidebar names
                assert f"No runs in the store at {other}" in page.get_by_test_id("stMain").inner_text()
        page.goto(server.url + "/")  # a new session: the settings file, not the session's state
        settle(page, "KD Studio", LONG / 1000)
        assert store_field(page).input_value() == str(other)
        store_field(page).fill(str(runs))  # back to the store the other tests use
        store_field(page).press("Enter")
        settle(page, "KD Studio", LONG / 1000)
        console.check("the settings walk")
    settings = json.loads((runs / "kd_studio_settings.json").read_text())
    assert settings["store_root"] == str(runs)


# ---------------------------------------------------------------- every page, two widths, two themes

LAYOUT_FACTS = """() => {
    const sidebar = document.querySelector('[data-testid="stSidebar"]');
    const box = sidebar ? sidebar.getBoundingClientRect() : {width: 0, right: 0};
    const clipped = [...document.querySelectorAll('[data-testid="stMetricValue"]')]
        .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.innerText);
    const sideBySide = [...document.querySelectorAll('[data-testid="stMain"] [data-testid="stHorizontalBlock"]')]
        .filter(row => {
            const cols = [...row.querySelectorAll(':scope > [data-testid="stColumn"]')]
                .filter(c => c.getBoundingClientRect().width > 0);
            const tops = cols.map(c => Math.round(c.getBoundingClientRect().top));
            return new Set(tops).size < tops.length;
        }).length;
    const bg = getComputedStyle(document.querySelector('.stApp')).backgroundColor.match(/\\d+/g).map(Number);
    return {sidebarOpen: box.width > 50 && box.right > 50, clipped, sideBySide,
            dark: (0.2126 * bg[0] + 0.7152 * bg[1] + 0.0722 * bg[2]) / 255 < 0.3};
}"""


def test_the_screenshots_cover_every_page():
    assert sorted(PAGES) == sorted(p.stem for p in (REPO / "app_pages").glob("*.py"))


@pytest.mark.parametrize("theme", THEMES)
@pytest.mark.parametrize("width", WIDTHS)
def test_every_page_at_this_width_and_theme(folders, teacher_id, width, theme):
    runs, data = folders
    SHOTS.mkdir(parents=True, exist_ok=True)
    server = StreamlitServer(runs, data, cwd=runs.parent).start()
    with browser_on(server, width, theme) as page:
        console = Console(page)
        for name in PAGES:
            visit(page, server.url, name)
            page.wait_for_timeout(1000)  # the sidebar's collapse and the charts' first layout
            facts = page.evaluate(LAYOUT_FACTS)
            whole_page(page, SHOTS / f"{name}_{width}_{theme}.png")
            where = f"{name} at {width} px, {theme}"
            console.check(where)
            assert facts["dark"] == (theme == "dark"), where
            assert not facts["clipped"], f"clipped metric values on {where}: {facts['clipped']}"
            if width <= NARROW:
                assert not facts["sidebarOpen"], f"the sidebar is open on {where}"
                assert facts["sideBySide"] == 0, f"{facts['sideBySide']} rows of columns side by side on {where}"
            else:
                assert facts["sidebarOpen"], f"the sidebar is closed on {where}"


# ---------------------------------------------------------------- the Deployment headline


def test_deployment_headline_after_a_measurement(folders, teacher_id):
    """The Deployment tab measured for real (few timed calls): its headline names the fastest option
    as accurate as float32 and states the accuracy difference with its noise."""
    runs, data = folders
    server = StreamlitServer(runs, data, cwd=runs.parent).start()
    with browser_on(server) as page:
        console = Console(page)
        visit(page, server.url, "compare", "dep_tab=Deployment")
        main = page.get_by_test_id("stMain")
        main.get_by_text("Timing", exact=True).click()
        for label, value in (("Warm-up calls", "1"), ("Timed calls (at least; and at least 0.2 s)", "3")):
            field = main.get_by_label(label)
            field.fill(value)
            field.press("Enter")
        settle(page, "Compare", LONG / 1000)
        main.get_by_role("button", name="Measure across runtimes").click()
        main.get_by_text(re.compile(r"the fastest at batch 1 of its \d+ options")).wait_for(timeout=5 * LONG)
        settle(page, "Compare", LONG / 1000)
        assert_no_exception(page, "deployment")
        text = main.inner_text()
        assert re.search(r"Accuracy against the teacher: [+-]\d\.\d{4} \([+-]\d+ of \d+ test images\) · 1 seed ·", text)
        whole_page(page, SHOTS / "compare_deployment_1400_light.png")
        console.check("the Deployment tab")


# ---------------------------------------------------------------- first visits


def test_first_visit_to_a_subpage_gets_the_app_navigation(folders, teacher_id):
    """A fresh server's very first session, opened on a sub-page URL, gets the app's navigation
    and its page."""
    runs, data = folders
    server = StreamlitServer(runs, data, cwd=runs.parent).start()
    with browser_on(server) as page:
        console = Console(page)
        page.goto(f"{server.url}/teacher")  # the server's very first session
        settle(page, "Teacher", LONG / 1000)
        nav = page.get_by_test_id("stSidebarNav").inner_text()
        page.get_by_role("heading", name=re.compile("Teacher in use")).wait_for()
        console.check("a sub-page opened first")
    assert "Overview" in nav and "Soft targets" in nav, f"navigation shows: {nav!r}"


def test_cold_first_paint(folders, teacher_id):
    """From a fresh server's first request to the Overview's title on screen (the first visitor
    pays for importing torch and loading the data). Recorded with the CPU; asserted only against
    a bound a loaded machine still meets."""
    runs, data = folders
    server = StreamlitServer(runs, data, cwd=runs.parent).start()
    with browser_on(server) as page:
        started = time.perf_counter()
        page.goto(server.url + "/")
        page.get_by_role("heading", name="KD Studio", exact=True).wait_for(timeout=LONG)
        seconds = time.perf_counter() - started
    record_timing("cold_first_paint_s", seconds)
    assert seconds < 60, f"cold first paint took {seconds:.1f} s"
