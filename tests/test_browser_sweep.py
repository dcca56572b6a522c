"""The Sweep and Runs pages in a real browser: `streamlit run app.py` in a subprocess (tests/_server.py),
driven by Playwright through Debian's chromium.

A teacher is trained by the CLI first. On the Sweep page a 2 T × 2 λ × 1 size × 2 seeds sweep
(10 runs) is set up through the URL and started; the accuracy heatmap's cells fill in while it
runs; it is stopped, then resumed from the Resume section, and completes with every cell at n=2 (two seeds)
and no finished cell run twice (checked in the store). The Runs page then lists the store, its
rows can be picked (curves and reproduce commands appear) and its CSV download is the store.
Screenshots go to artifacts/screenshots/. Waits poll with generous deadlines; nothing is timed.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from _server import CHROMIUM, REPO, StreamlitServer, kd_env, launch_browser, settle, wait_until

pytestmark = pytest.mark.browser

if not os.path.exists(CHROMIUM):
    pytest.skip(
        f"browser tests need Debian's chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need the playwright package")

SHOTS = REPO / "artifacts" / "screenshots"
LONG = 90_000  # ms: first renders import torch and load data; CI machines can be slow
# Runs of about a second each (more on a busy machine), so that the grid visibly fills and a Stop
# lands in the middle: 2 seeds × (1 baseline + 2 T × 2 λ) = 10 runs.
GRID = "sw_T=1,4&sw_lam=0.5,0.9&sw_sizes=256&sw_depth=2&sw_seeds=2&sw_epochs=3&sw_bs=16"
N_RUNS = 10


def assert_no_exception(page, name: str) -> None:
    errors = page.locator('[data-testid="stException"]')
    if errors.count():
        page.screenshot(path=str(SHOTS / f"{name}_exception.png"), full_page=True)
        raise AssertionError(f"{name} shows a Streamlit exception:\n{errors.first.inner_text()}")


def shot(page, name: str) -> None:
    assert_no_exception(page, name)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def heat_cells(page) -> list[str]:
    """The texts of the accuracy heatmap's cells (as plotly holds them); "—" where no run finished."""
    return page.evaluate("""() => {
        for (const plot of document.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot')) {
            const title = plot.layout && plot.layout.title;
            const text = title ? (title.text || title) : '';
            // the accuracy map (the gain map's title says "gain over the no-KD baseline")
            if (!String(text).includes('accuracy') || String(text).includes('gain over')
                || !plot.data || !plot.data.length) continue;
            return plot.data[0].text.flat();
        }
        return [];
    }""")


def filled(page) -> int:
    try:
        return sum(t != "—" for t in heat_cells(page))
    except sync_api.Error:  # redrawn by the fragment mid-read
        return 0


def button(page, label: str):
    """A button of the page's main area (not the status widget's own Stop) by its name."""
    return page.get_by_test_id("stMain").get_by_role("button", name=label, exact=True)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("kd_browser_sweep")
    runs, data = root / "runs", root / "data"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "kd_core",
            "teacher",
            "--epochs",
            "2",
            "--store",
            str(runs),
            "--data-root",
            str(data),
            "--json",
            "--quiet",
        ],
        cwd=root,
        env=kd_env(runs, data),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    teacher = json.loads(out.stdout)["runs"][0]
    assert teacher["status"] == "finished"
    return runs, data, teacher["run_id"]


def test_sweep_stop_resume_and_runs_page(folders):
    runs, data, teacher_id = folders
    SHOTS.mkdir(parents=True, exist_ok=True)
    server = StreamlitServer(runs, data, cwd=runs.parent)
    server.start()
    try:
        with sync_api.sync_playwright() as pw:
            browser = launch_browser(pw)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 2200}, accept_downloads=True)
                page.set_default_timeout(LONG)
                # the server's first session on the main page (a first visit to a sub-page URL gets
                # Streamlit's legacy pages/ navigation: see test_browser.py)
                page.goto(server.url)
                settle(page, "KD Studio")
                sweep_id = _sweep(page, server.url, runs, teacher_id)
                _runs_page(page, server.url, runs, sweep_id)
            finally:
                browser.close()
    finally:
        code = server.stop()
    assert code == 0, f"streamlit exited with {code}:\n{server.log()}"


def _sweep(page, base: str, runs: Path, teacher_id: str) -> str:
    from kd_core.store import Store
    from kd_core.sweep.grid import cell_key

    store = Store(runs)
    page.goto(f"{base}/sweep?teacher={teacher_id}&{GRID}")
    settle(page, "Sweep")
    runs_metric = page.locator('[data-testid="stMetric"]').filter(has_text="Runs")
    assert runs_metric.locator('[data-testid="stMetricValue"]').inner_text() == str(N_RUNS)
    estimate = page.locator('[data-testid="stMetric"]').filter(has_text="Estimated time")
    assert estimate.locator('[data-testid="stMetricValue"]').inner_text().startswith("about ")
    shot(page, "sweep_setup")

    button(page, "Start sweep").click()
    wait_until(lambda: filled(page) >= 1, LONG / 1000, what="a heatmap cell to fill in")
    assert page.locator('[data-testid="stProgress"]').first.inner_text().startswith("Sweep ")
    shot(page, "sweep_live")
    button(page, "Stop").click()
    page.get_by_text(re.compile(r"^Stopped: sweep ")).first.wait_for(timeout=LONG)
    settle(page, "Sweep")
    [sweep] = store.list_sweeps()
    sweep_id = sweep["id"]
    first = {r.id: cell_key(r.config) for r in store.list_runs(sweep_id=sweep_id, status="finished")}
    assert 1 <= len(first) < N_RUNS, f"the stop came after {len(first)} of {N_RUNS} runs"
    cells = heat_cells(page)
    assert len(cells) == 4 and any(t != "—" for t in cells)
    shot(page, "sweep_stopped")

    left = page.get_by_text(re.compile(rf"^{N_RUNS - len(first)} runs? left"))  # "1 run left" when one is
    left.first.wait_for()
    button(page, "Resume").click()
    page.get_by_text(re.compile(rf"^Finished: sweep {sweep_id}")).first.wait_for(timeout=3 * LONG)
    settle(page, "Sweep")
    wait_until(lambda: all(t.endswith("n=2") for t in heat_cells(page)), 30, what="every cell at n=2")
    assert page.get_by_test_id("stMain").get_by_text("Resume a sweep").count() == 0
    shot(page, "sweep_done")

    finished = store.list_runs(sweep_id=sweep_id, status="finished")
    keys = [cell_key(r.config) for r in finished]
    assert len(finished) == N_RUNS and len(set(keys)) == N_RUNS  # each cell once
    assert set(first) <= {r.id for r in finished}  # what was done is kept as it was
    others = [r for r in store.list_runs(sweep_id=sweep_id) if r.status != "finished"]
    assert all(r.status == "stopped" for r in others) and len(others) <= 1  # the run cut by Stop
    return sweep_id


def _runs_page(page, base: str, runs: Path, sweep_id: str) -> None:
    import pandas as pd

    from kd_core.store import Store

    store = Store(runs)
    page.goto(f"{base}/runs")
    settle(page, "Runs")
    shot(page, "runs")
    with page.expect_download() as info:
        button(page, "Download CSV").click()
    csv = pd.read_csv(io.StringIO(Path(info.value.path()).read_text()))
    stored = store.list_runs()
    assert csv["id"].tolist() == [r.id for r in stored]
    assert csv["status"].tolist() == [r.status for r in stored]
    assert (csv["sweep"] == sweep_id).sum() == len(store.list_runs(sweep_id=sweep_id))

    # pick the first two rows by their checkboxes (the grid is a canvas: click by position)
    grid = page.locator('[data-testid="stDataFrame"]').first
    box = grid.bounding_box()
    header = 35
    for row in (0, 1):
        page.mouse.click(box["x"] + 16, box["y"] + header + 35 * row + 17)
        page.get_by_text(re.compile(rf"^{row + 1} runs? picked")).first.wait_for()
    settle(page, "Runs")
    codes = page.locator('[data-testid="stCode"]')
    assert codes.count() == 2 and codes.first.inner_text().startswith("python -m kd_core")
    shot(page, "runs_picked")
