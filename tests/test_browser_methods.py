"""The Methods page in a real browser (tests/_server.py, Debian's chromium): the issue's "done
when" at small scale. A teacher is trained by the CLI; on the Methods page a two-method
leaderboard (DIST beside plain KD, which is always included, and the no-KD baseline) over two
seeds is set up through the URL and run; the chart fills in with every entry at n=2 and the
verdict is shown. Then the CLI, given the same leaderboard into a second store, reproduces the
page's numbers run for run (same seeds, same code, one torch thread on both sides).
Screenshots go to artifacts/screenshots/methods_*.png.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from _server import REPO, StreamlitServer, kd_env, launch_browser, require_browser, settle, wait_until
from kd_core.store import Store
from kd_core.views import leaderboard as lb

sync_api = require_browser()
pytestmark = pytest.mark.browser

SHOTS = REPO / "artifacts" / "screenshots"
LONG = 120_000  # ms
BUDGET = {"epochs": "2", "lr": "0.003", "bs": "64", "seed": "0", "size": "16", "depth": "1"}
SETUP = "mt_methods=dist&mt_seeds=2&mt_T=4.0&mt_lam=0.5" + "".join(f"&mt_{k}={v}" for k, v in BUDGET.items())


def kd_cli(runs, data, *args: str) -> dict:
    cmd = [sys.executable, "-m", "kd_core", *args, "--store", str(runs), "--data-root", str(data), "--json", "--quiet"]
    out = subprocess.run(cmd, cwd=runs.parent, env=kd_env(runs, data), capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("kd_browser_methods")
    runs, data = root / "runs", root / "data"
    teacher = kd_cli(runs, data, "teacher", "--epochs", "3", "--out", str(root / "teacher.pt"))["runs"][0]
    assert teacher["status"] == "finished"
    return runs, data, teacher["run_id"], root / "teacher.pt"


def chart_points(page) -> dict[str, str]:
    """The leaderboard chart's points as plotly holds them: {entry: "n=…"}."""
    try:
        return page.evaluate("""() => {
            for (const plot of document.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot')) {
                const d = plot.data && plot.data[0];
                if (!d || !d.error_y) continue;
                return Object.fromEntries(d.x.map((x, i) => [x, d.text[i]]));
            }
            return {};
        }""")
    except sync_api.Error:  # redrawn by the fragment mid-read
        return {}


def shot(page, name: str) -> None:
    errors = page.locator('[data-testid="stException"]')
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    assert not errors.count(), errors.first.inner_text()


def test_a_two_method_leaderboard_from_the_page_and_the_same_numbers_from_the_cli(folders):
    runs, data, teacher_id, teacher_file = folders
    SHOTS.mkdir(parents=True, exist_ok=True)
    server = StreamlitServer(runs, data, cwd=runs.parent).start()
    try:
        with sync_api.sync_playwright() as pw:
            browser = launch_browser(pw)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 2000})
                page.set_default_timeout(LONG)
                page.goto(server.url)  # the first session on the main page (see test_browser.py)
                settle(page, "KD Studio")
                page.goto(f"{server.url}/methods?teacher={teacher_id}&{SETUP}")
                settle(page, "Methods")
                main = page.get_by_test_id("stMain")
                main.get_by_text("6 runs: kd, dist and the baseline, × 2 seeds.").wait_for()
                shot(page, "methods_setup")
                main.get_by_role("button", name="Run leaderboard").click()
                page.get_by_text("Finished: ").first.wait_for(timeout=4 * LONG)
                settle(page, "Methods")
                points = wait_until(
                    lambda: (p := chart_points(page)) and set(p.values()) == {"n=2"} and p,
                    60,
                    what="every entry of the chart at n=2",
                )
                shot(page, "methods_done")
                verdict_on_page = main.locator('[data-testid="stAlert"]').all_inner_texts()
            finally:
                browser.close()
    finally:
        code = server.stop()
    assert code == 0, f"streamlit exited with {code}:\n{server.log()}"

    [board_row] = lb.leaderboards(Store(runs))
    board = lb.leaderboard(Store(runs), board_row["id"])
    assert set(points) == {lb.BASELINE, "kd", "dist"}
    assert any(board.verdict in text for text in verdict_on_page), (board.verdict, verdict_on_page)

    # The CLI, the same leaderboard into another store: the same accuracies, entry by entry.
    other = runs.parent / "cli_runs"
    flags = ["--epochs", BUDGET["epochs"], "--lr", BUDGET["lr"], "--batch-size", BUDGET["bs"]]
    flags += ["--size", BUDGET["size"], "--depth", BUDGET["depth"], "-T", "4", "--alpha", "0.5"]
    out = kd_cli(
        other, data, "leaderboard", "--teacher", str(teacher_file), "--methods", "dist", "--seeds", "2", *flags
    )
    from_cli = {r["method"]: (r["n"], round(r["mean"], 6)) for r in out["rows"]}
    from_page = {r["method"]: (r["n"], round(r["mean"], 6)) for r in board.table.to_dict("records")}
    assert from_cli == from_page
    assert out["verdict"] == board.verdict
