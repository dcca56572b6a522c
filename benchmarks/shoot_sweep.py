"""The issue's sweep from the browser, photographed: docs/img/sweep_heatmaps.png.

A digits teacher (the default preset, 15 epochs) is trained by the CLI into a fresh store; a real
`streamlit run app.py` serves that store (tests/_server.py), and Debian's chromium, headless, driven
by Playwright, opens the Sweep page with the grid of benchmarks/bench_sweep.py in its URL
(T 1, 2, 4, 8, 16 × λ 0.25, 0.5, 0.75, 1 × mlp 16×1 × 3 seeds, 100 epochs, batch 32, lr 0.003,
in-process), checks that the page plans 63 runs, clicks Start sweep and waits for "Finished" with
every cell at n=3. The Results section (accuracy and gain heatmaps, one above the other, the best
cell and the multiple-testing counts in words) is shot twice, with the page's default metric (test
accuracy) and with best validation accuracy picked in its "Accuracy" select box, and the two shots
are stacked into one PNG. The browser window is 1400 px wide by default (a laptop screen, the
narrow end the heatmaps' cell text is made to fit; --width to change it).

    python benchmarks/shoot_sweep.py [--out docs/img/sweep_heatmaps.png] [--keep DIR] [--width 1400]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from _server import StreamlitServer, kd_env, launch_browser, settle, wait_until  # noqa: E402

GRID = {
    "sw_T": "1, 2, 4, 8, 16",
    "sw_lam": "0.25, 0.5, 0.75, 1",
    "sw_sizes": "16",
    "sw_family": "mlp",
    "sw_depth": 1,
    "sw_seeds": 3,
    "sw_epochs": 100,
    "sw_bs": 32,
    "sw_lr": 0.003,
    "sw_backend": "inprocess",
}
N_RUNS = 5 * 4 * 3 + 3
TIMEOUT_S = 1800


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "sweep_heatmaps.png")
    p.add_argument("--keep", type=Path, default=None, help="store and shots here (default: a temp dir)")
    p.add_argument("--width", type=int, default=1400, help="browser window width in px (default 1400)")
    return p.parse_args()


def train_teacher(runs: Path, data: Path) -> str:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "kd_core",
            "teacher",
            "--dataset",
            "digits",
            "--epochs",
            "15",
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
        check=True,
    )
    return json.loads(out.stdout)["runs"][0]["run_id"]


def heat_texts(page) -> list[str]:
    """Every heatmap cell's text, as plotly holds it ("—" where no run finished)."""
    return page.evaluate("""() => [...document.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot')]
        .flatMap(p => (p.data && p.data[0] && p.data[0].text) ? p.data[0].text.flat() : [])""")


def all_filled(page) -> bool:
    """Every accuracy cell (the first map) at n=3, every gain cell (the second) with its test."""
    try:
        texts = heat_texts(page)
    except Exception:
        return False
    return (
        len(texts) == 2 * 20
        and all(t.endswith("n=3") for t in texts[:20])
        and all("<br>p=" in t or t.endswith("no test") for t in texts[20:])
    )


def results_shot(page, path: Path) -> None:
    """From the Results heading to the significance caption under the heatmaps."""
    main = page.get_by_test_id("stMain")
    top = main.get_by_role("heading", name="Results").bounding_box()
    bottom = main.get_by_text("Significance: paired t-test").first.bounding_box()
    page.screenshot(
        path=str(path),
        clip={
            "x": top["x"] - 10,
            "y": top["y"] - 10,
            "width": top["width"] + 20,
            "height": bottom["y"] + bottom["height"] - top["y"] + 24,
        },
    )


def pick_metric(page, label: str) -> None:
    """The Results section's "Accuracy" select box, as a user picks it (retried: a rerun may close the list)."""
    combo = (
        page.get_by_test_id("stMain").get_by_test_id("stSelectbox").filter(has_text="Accuracy").get_by_role("combobox")
    )

    def pick() -> bool:
        if combo.input_value() == label:
            return True
        combo.click()
        try:
            page.get_by_role("option", name=label, exact=True).click(timeout=3000)
        except Exception:
            page.keyboard.press("Escape")
        return False

    wait_until(pick, 60, what=f"the metric {label!r}")
    settle(page, "Sweep")


def drive(page, base: str, teacher: str, shots: Path) -> list[Path]:
    page.goto(base)
    settle(page, "KD Studio")  # a first visit to a sub-page URL gets Streamlit's legacy navigation
    page.goto(f"{base}/sweep?{urlencode({'teacher': teacher, **GRID})}")
    settle(page, "Sweep")
    runs = page.locator('[data-testid="stMetric"]').filter(has_text="Runs").get_by_test_id("stMetricValue")
    assert runs.inner_text() == str(N_RUNS), f"the page plans {runs.inner_text()} runs, not {N_RUNS}"
    page.screenshot(path=str(shots / "setup.png"), full_page=True)
    started = time.perf_counter()
    page.get_by_test_id("stMain").get_by_role("button", name="Start sweep", exact=True).click()
    page.get_by_text("Finished: sweep").first.wait_for(timeout=TIMEOUT_S * 1000)
    print(f"the sweep finished {time.perf_counter() - started:.0f} s after Start sweep")
    settle(page, "Sweep")
    out = []
    for metric in ("test accuracy", "best validation accuracy"):
        pick_metric(page, metric)
        wait_until(lambda: all_filled(page), 60, what="every heatmap cell at n=3")
        page.mouse.move(0, 0)  # no plotly toolbar over a chart
        page.wait_for_timeout(1500)  # plotly's last paint
        name = metric.replace(" ", "_")
        page.screenshot(path=str(shots / f"full_{name}.png"), full_page=True)
        out.append(shots / f"results_{name}.png")
        results_shot(page, out[-1])
    return out


def check_store(runs: Path) -> None:
    """The page stored the sweep bench_sweep.py runs; print its best cells to compare with RESULTS_sweep.md."""
    from kd_core.store import Store
    from kd_core.sweep.grid import load_sweep
    from kd_core.sweep.results import multiple_tests, sweep_results

    store = Store(runs)
    [row] = store.list_sweeps()
    sweep = load_sweep(store, row["id"])
    got = (
        sweep.temperatures,
        sweep.alphas,
        sweep.sizes,
        sweep.seeds,
        sweep.family,
        sweep.depth,
        sweep.train.epochs,
        sweep.train.batch_size,
        sweep.train.lr,
    )
    want = ((1.0, 2.0, 4.0, 8.0, 16.0), (0.25, 0.5, 0.75, 1.0), (16,), (0, 1, 2), "mlp", 1, 100, 32, 0.003)
    assert got == want, f"the page stored {got}, not {want}"
    assert len(store.list_runs(sweep_id=row["id"], status="finished")) == N_RUNS
    for metric in ("test_acc", "best_val_acc"):
        df = sweep_results(store, row["id"], metric)
        marked = df[df["best_marked"]]
        best = (
            ", ".join(
                f"T={r['temperature']:g} λ={r['alpha']:g} {r['text']}, gain {r['gain_text']}: {r['verdict']}"
                for _, r in marked.iterrows()
            )
            or "none (no mean gain above 0)"
        )
        tests = multiple_tests(df)
        print(
            f"{metric}: marked best {best}; {tests['significant']} of {tests['tested']} cells significant, "
            f"{tests['significant_bh']} after Benjamini–Hochberg"
        )


def stack(parts: list[Path], out: Path) -> None:
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in parts]
    canvas = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images)), "white")
    y = 0
    for image in images:
        canvas.paste(image, (0, y))
        y += image.height
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out, optimize=True)


def main() -> int:
    from playwright.sync_api import sync_playwright

    a = parse_args()
    root = a.keep or Path(tempfile.mkdtemp(prefix="kd_shoot_sweep_"))
    runs, data, shots = root / "runs", root / "data", root / "shots"
    shots.mkdir(parents=True, exist_ok=True)
    teacher = train_teacher(runs, data)
    with StreamlitServer(runs, data, cwd=root) as server, sync_playwright() as pw:
        browser = launch_browser(pw)
        try:
            page = browser.new_page(viewport={"width": a.width, "height": 3000})
            page.set_default_timeout(120_000)
            parts = drive(page, server.url, teacher, shots)
        finally:
            browser.close()
    check_store(runs)
    stack(parts, a.out)
    print(f"written: {a.out} (store and full-page shots in {root})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
