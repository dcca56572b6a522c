"""The dashboard against the CLI: the same distillation's training time, and the server's start-up.

For `digits` and Fashion-MNIST (Debian's files, unpacked into a temp data root), one
teacher is trained once by the CLI; then the same student config (family, size, depth,
epochs, batch, lr, T, λ, seed, no baseline) is distilled from it, alternating (ABBA…):

  cli        `python -m kd_core distill ... --threads N --json`; its runs[0]["seconds"].
  dashboard  a real `streamlit run app.py` server, driven headless by Playwright through
             Debian's chromium: the Distill page opened with the config in its URL query
             (the sidebar's teacher picker reads ?teacher=<run id>, ?baseline=false),
             the sidebar's "Torch threads" set to N, Distill clicked, "Finished" awaited
             while the page polls (st.fragment, every 2 s); the run's metrics["seconds"]
             read from the KD_RUNS store (kd_core.store.Store).
  no viewer  (diagnostic) the same as dashboard, but the page leaves for about:blank as soon
             as the run has started, so nobody polls: what remains is the server itself.

Both "seconds" are the engine's own timer around the training loop (kd_core.train.engine.fit),
so start-up, data loading and final evaluation are outside both. Medians are reported,
with the ratio dashboard / CLI (target ≤ 1.15×), and the spread of that ratio: repeat i of
the dashboard over repeat i of the CLI (run next to each other) is one pair; the median pair and
the lowest and highest pair are shown. The median pair lies between the lowest and the highest
with probability 1 − 2·0.5ⁿ for n pairs (75 % for 3, 94 % for 5), whatever the distribution,
so the verdict "met" needs every pair ≤ 1.15×, "missed" every pair above, else "within noise". The thread count each run really used is
read back from the run (metrics["train_threads"]; 0 asks for auto, which picks by model size).

Start-up: seconds from spawning `streamlit run` to the Overview title being visible in the
browser, for a first start and a second one (target: the second under 5 s).

    python benchmarks/bench_dashboard.py [--repeats 3] [--threads N] [--quick] [--out FILE]

At the default threads only, 5 repeats (about 6 minutes on a quiet 2-core EPYC):

    python benchmarks/bench_dashboard.py --repeats 5 --threads 0 --no-viewer-arm

Writes benchmarks/RESULTS_dashboard.md (with the machine: CPU model, cores, torch version).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from _server import CHROMIUM, StreamlitServer, kd_env, launch_browser, settle, slider_value, wait_until  # noqa: E402


@dataclass
class Case:
    dataset: str
    size: int
    depth: int
    epochs: int
    batch: int
    lr: float  # one of ui.forms.LEARNING_RATES (a select_slider)
    temperature: float = 4.0
    alpha: float = 0.9
    seed: int = 0
    teacher: dict = field(default_factory=dict)  # CLI flags of the shared teacher

    def label(self) -> str:
        return (
            f"{self.dataset}: student mlp {self.size}×{self.depth}, {self.epochs} epochs, batch {self.batch}, "
            f"lr {self.lr:g}, T {self.temperature:g}, λ {self.alpha:g}, seed {self.seed}, no baseline"
        )


CASES = [
    Case(
        "digits",
        size=32,
        depth=1,
        epochs=100,
        batch=32,
        lr=3e-3,
        teacher={"--size": "256", "--depth": "1", "--epochs": "5"},
    ),
    Case(
        "fashion-mnist",
        size=64,
        depth=1,
        epochs=2,
        batch=32,
        lr=1e-3,
        teacher={"--size": "256", "--depth": "1", "--epochs": "1"},
    ),
]
DEFAULT_DATASETS = ",".join(c.dataset for c in CASES)
TARGET = 1.15  # dashboard / CLI training time
NOTES = "## Notes"  # RESULTS_dashboard.md from this heading on is written by hand and kept
QUICK = {"digits": 20, "fashion-mnist": 1}  # epochs with --quick


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each side per dataset (default 3)")
    cores = os.cpu_count() or 1
    p.add_argument(
        "--threads",
        default=",".join(dict.fromkeys(["0", str(cores)])),
        help="torch thread counts to compare at, each the same on both sides; 0 is auto (default: "
        "auto, the dashboard's own default, and all cores)",
    )
    p.add_argument("--quick", action="store_true", help="fewer epochs, 1 repeat, no 'no viewer' arm")
    p.add_argument("--no-viewer-arm", action="store_true", help="skip the diagnostic 'no viewer' arm")
    p.add_argument("--datasets", default=DEFAULT_DATASETS)
    p.add_argument("--epochs", type=int, default=0, help="override every case's student epochs")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "RESULTS_dashboard.md"))
    return p.parse_args()


# ---------------------------------------------------------------- the machine


def machine() -> dict:
    import plotly
    import streamlit
    import torch

    from kd_core.deploy.runtimes import machine_info

    model = machine_info()["cpu"]
    try:
        chromium = subprocess.run(
            [CHROMIUM, "--version"], capture_output=True, text=True, check=False, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        chromium = "?"
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "streamlit": streamlit.__version__,
        "plotly": plotly.__version__,
        "chromium": chromium,
        "os": platform.platform(),
    }


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ---------------------------------------------------------------- the CLI side


def cli(args: list[str], env: dict, cwd: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "kd_core", *args, "--json", "--quiet"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if out.returncode != 0:
        raise RuntimeError(f"kd_core {' '.join(args)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout)


def train_teacher(case: Case, runs: Path, data: Path, env: dict) -> str:
    flags = [x for kv in case.teacher.items() for x in kv]
    out = cli(
        ["teacher", "--dataset", case.dataset, "--data-root", str(data), "--store", str(runs), *flags], env, runs.parent
    )
    run = out["runs"][0]
    assert run["status"] == "finished", run
    return run["run_id"]


def cli_distill(case: Case, teacher: str, runs: Path, data: Path, env: dict, threads: int) -> dict:
    out = cli(
        [
            "distill",
            "--dataset",
            case.dataset,
            "--data-root",
            str(data),
            "--store",
            str(runs),
            "--teacher",
            teacher,
            "--family",
            "mlp",
            "--size",
            str(case.size),
            "--depth",
            str(case.depth),
            "--epochs",
            str(case.epochs),
            "--batch-size",
            str(case.batch),
            "--lr",
            str(case.lr),
            "-T",
            str(case.temperature),
            "--alpha",
            str(case.alpha),
            "--seed",
            str(case.seed),
            "--threads",
            str(threads),
        ],
        env,
        runs.parent,
    )
    run = out["runs"][0]
    assert run["status"] == "finished" and len(out["runs"]) == 1, out["runs"]
    return run


# ---------------------------------------------------------------- the dashboard side


def distill_url(base: str, case: Case, teacher: str) -> str:
    query = {
        "dataset": case.dataset,
        "teacher": teacher,
        "s_family": "mlp",
        "s_size": case.size,
        "s_depth": case.depth,
        "s_epochs": case.epochs,
        "s_lr": case.lr,
        "s_bs": case.batch,
        "T": case.temperature,
        "lam": case.alpha,
        "s_seed": case.seed,
        "baseline": "false",
    }
    return f"{base}/distill?{urlencode(query)}"


def set_threads(page, threads: int) -> None:
    """The sidebar's "Torch threads" (a select box, not in the URL; 0 is auto)."""
    from kd_core.views.studio import threads_label

    label = threads_label(threads)
    sidebar = page.get_by_test_id("stSidebar")
    box = sidebar.get_by_test_id("stSelectbox").filter(has_text="Torch threads")
    if not box.is_visible():
        sidebar.get_by_text("Folders and compute").click()
    combo = box.get_by_role("combobox")

    def pick() -> bool:
        # A rerun of the page can close the list before the click lands: try again.
        if combo.input_value() == label:
            return True
        combo.click()
        combo.press("ArrowDown")
        option = page.get_by_role("option", name=label, exact=True)
        try:
            option.click(timeout=3000)
        except Exception:
            page.keyboard.press("Escape")
        return False

    wait_until(pick, 60, what="the thread count")
    settle(page, "Distill")


def check_widgets(page, case: Case) -> None:
    """What the page shows is the config asked for in the URL."""
    shown = {
        label: slider_value(page, label)
        for label in (
            "Hidden width",
            "Hidden layers",
            "Temperature T",
            "λ (weight of the teacher)",
            "Epochs",
            "Learning rate",
            "Batch size",
        )
    }
    want = {
        "Hidden width": str(case.size),
        "Hidden layers": str(case.depth),
        "Temperature T": f"{case.temperature:.2f}",
        "λ (weight of the teacher)": f"{case.alpha:.2f}",
        "Epochs": str(case.epochs),
        "Learning rate": f"{case.lr:g}",
        "Batch size": str(case.batch),
    }
    assert shown == want, f"the page shows {shown}, not {want}"
    assert not page.get_by_label("Also train the same student without distillation (baseline)").is_checked()


def dashboard_distill(page, base: str, case: Case, teacher: str, runs: Path, threads: int, viewer: bool = True) -> dict:
    from kd_core.store import Store

    store = Store(runs)
    page.goto(distill_url(base, case, teacher))
    settle(page, "Distill")
    set_threads(page, threads)
    check_widgets(page, case)
    before = {r.id for r in store.list_runs(kind="student")}
    page.get_by_role("button", name="Distill", exact=True).click()
    new = wait_until(
        lambda: [r for r in store.list_runs(kind="student") if r.id not in before],
        120,
        interval=0.1,
        what="the run to start",
    )
    run_id = new[0].id
    if viewer:
        page.get_by_text(re.compile(r"^Finished: ")).first.wait_for(timeout=1_800_000)
    else:
        page.goto("about:blank")
    run = wait_until(
        lambda: (r := store.get_run(run_id)) and r.status != "running" and r, 1800, what="the run to finish"
    )
    assert run.status == "finished", run
    return {"run_id": run_id, **run.metrics}


def same_config(a: dict, b: dict) -> None:
    """The two runs trained the same thing (the thread settings aside: see metrics.train_threads)."""

    def essentials(cfg: dict) -> dict:
        # The thread count is compared on what each run used (metrics.train_threads).
        train = {k: v for k, v in cfg["train"].items() if k not in ("threads", "spare_cores")}
        return {
            "dataset": cfg["data"]["dataset"],
            "model": cfg["model"],
            "train": train,
            "distill": cfg["distill"],
            "teacher": cfg["teacher_id"],
        }

    assert essentials(a) == essentials(b), (essentials(a), essentials(b))


# ---------------------------------------------------------------- start-up


def start_to_first_page(browser, runs: Path, data: Path, launcher: str = "serve") -> dict:
    """Seconds from spawning the server to its health check answering, and to the Overview shown
    with its content: the title, the "Where you are" cards and the Quick start button, the last
    thing the page draws without a job (Streamlit sends elements in the order the script draws
    them, and the sidebar, teacher picker included, before the page). `launcher`: how the server
    is started (tests/_server.LAUNCHERS). Also returns the "Last student" card's text, for the
    caller to check that the page read the store."""
    server = StreamlitServer(runs, data, launcher=launcher)
    server.start()
    healthy = time.perf_counter() - server.started_at
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(server.url + "/")
        page.get_by_role("button", name="Quick start on digits").wait_for(state="visible", timeout=300_000)
        shown = time.perf_counter() - server.started_at
        assert page.get_by_role("heading", name="KD Studio", exact=True).is_visible()
        last = page.get_by_test_id("stMetric").filter(has_text="Last student").inner_text()
    finally:
        page.close()
        code = server.stop()
        server.cleanup()
    assert code == 0, f"the server exited with {code}:\n{server.log()}"
    return {"healthy_s": healthy, "overview_s": shown, "last_student": " ".join(last.split())}


# ---------------------------------------------------------------- main


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def pair_ratios(dashboard: list[float], cli: list[float]) -> list[float]:
    """Repeat i of the dashboard over repeat i of the CLI: the two ran next to each other (ABBA…)."""
    return [d / c for d, c in zip(dashboard, cli)]


def verdict(pairs: list[float], target: float = TARGET) -> str:
    """'met' when every pair is at or under the target, 'missed' when every pair is above, else
    'within noise'; with the probability 1 − 2·0.5ⁿ that n pairs' [min, max] holds the median pair
    (none for fewer than 2 pairs: one pair says nothing about the noise)."""
    if len(pairs) < 2:
        return f"n/a ({len(pairs)} pair)"
    coverage = f"({1 - 2 * 0.5 ** len(pairs):.0%})"
    if max(pairs) <= target:
        return f"met {coverage}"
    if min(pairs) > target:
        return f"missed {coverage}"
    return "within noise"


def spread(pairs: list[float]) -> str:
    return f"{median(pairs):.2f}× [{min(pairs):.2f}–{max(pairs):.2f}]" if pairs else "n/a"


def main() -> int:
    args = parse_args()
    if not os.path.exists(CHROMIUM):
        print(f"needs Debian's chromium at {CHROMIUM}", file=sys.stderr)
        return 2
    wanted = args.datasets.split(",")
    thread_counts = [int(t) for t in str(args.threads).split(",")]
    cases = [c for c in CASES if c.dataset in wanted]
    repeats = 1 if args.quick else args.repeats
    no_viewer = not (args.quick or args.no_viewer_arm)
    if args.quick:
        for c in cases:
            c.epochs = QUICK[c.dataset]
    if args.epochs:
        for c in cases:
            c.epochs = args.epochs
    info = machine()
    info["load_start"] = load()
    print(f"machine: {info}\nload average at start: {info['load_start']}", flush=True)

    root = Path(tempfile.mkdtemp(prefix="kd_bench_dashboard_"))
    try:
        return run_all(args, cases, thread_counts, repeats, no_viewer, info, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_all(args, cases: list, thread_counts: list, repeats: int, no_viewer: bool, info: dict, root: Path) -> int:
    from playwright.sync_api import sync_playwright

    runs, data = root / "runs", root / "data"
    env = kd_env(runs, data)
    teachers = {c.dataset: train_teacher(c, runs, data, env) for c in cases}
    print(f"teachers: {teachers}", flush=True)

    results, startup = {}, []
    with sync_playwright() as pw:
        browser = launch_browser(pw)
        try:
            for which in ("first", "second"):
                startup.append({"start": which, **start_to_first_page(browser, runs, data)})
                print(f"start-up ({which}): {startup[-1]}", flush=True)

            server = StreamlitServer(runs, data, cwd=root)
            server.start()
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            try:
                # Warm-up (not timed): the server's first Distill page loads the data and the teacher.
                for c in cases:
                    page.goto(distill_url(server.url, c, teachers[c.dataset]))
                    settle(page, "Distill", 300)
                for c in cases:
                    for threads in thread_counts:
                        results[(c.dataset, threads)] = compare(
                            page, server.url, c, teachers[c.dataset], runs, data, env, threads, repeats, no_viewer
                        )
            finally:
                page.close()
                code = server.stop()
                server.cleanup()
            assert code == 0, f"the server exited with {code}:\n{server.log()}"
        finally:
            browser.close()

    write_report(render(info, args, repeats, results, startup), Path(args.out))
    return 0


def write_report(report: str, out: Path) -> None:
    """Print `report` and write it to `out`, keeping the file's hand-written findings (from NOTES on)."""
    print(report)
    old = out.read_text() if out.exists() else ""
    notes = old[old.index(NOTES) :] if NOTES in old else ""
    out.write_text(report + ("\n" + notes if notes else ""))
    print(f"written: {out}")


def compare(
    page,
    base: str,
    c: Case,
    teacher: str,
    runs: Path,
    data: Path,
    env: dict,
    threads: int,
    repeats: int,
    no_viewer: bool,
) -> dict:
    """The arms of one case at one thread count, alternating ABBA…; checks that every run trained
    the same config with the thread count asked for."""
    arms = {"cli": [], "dashboard": [], "no viewer": []}
    order = ["cli", "dashboard"] + (["no viewer"] if no_viewer else [])
    for r in range(repeats):
        for arm in order if r % 2 == 0 else order[::-1]:
            if arm == "cli":
                run = cli_distill(c, teacher, runs, data, env, threads)
            else:
                run = dashboard_distill(page, base, c, teacher, runs, threads, viewer=arm == "dashboard")
            arms[arm].append(run)
            print(
                f"  {c.dataset:13s} {threads} thr  {arm:9s} {run['seconds']:7.2f} s  "
                f"threads {run['train_threads']}  test acc {run['test_acc']:.4f}  load {load()}",
                flush=True,
            )
    pairs = pair_ratios([r["seconds"] for r in arms["dashboard"]], [r["seconds"] for r in arms["cli"]])
    print(f"  {c.dataset} {threads} thr: dashboard / CLI per pair {spread(pairs)}: {verdict(pairs)}", flush=True)
    reference = _stored_config(runs, arms["cli"][0])
    reference_threads = arms["cli"][0]["train_threads"]
    for arm, rs in arms.items():
        for run in rs:
            same_config(_stored_config(runs, run), reference)
            assert run["train_threads"] == (threads or reference_threads), (arm, run["train_threads"])
    return {
        "case": c,
        "threads": threads,
        "arms": {a: [r["seconds"] for r in rs] for a, rs in arms.items() if rs},
        "acc": {a: [r["test_acc"] for r in rs] for a, rs in arms.items() if rs},
    }


def _stored_config(runs: Path, run: dict) -> dict:
    from kd_core.store import Store

    return Store(runs).get_run(run["run_id"]).config.to_dict()


def render(info: dict, args, repeats: int, results: dict, startup: list) -> str:
    lines = [
        "# Dashboard against CLI: training time and start-up",
        "",
        f"`python benchmarks/bench_dashboard.py{' --quick' if args.quick else ''} --repeats {repeats} "
        f"--threads {args.threads}{' --no-viewer-arm' if args.no_viewer_arm else ''}"
        f"{' --datasets ' + args.datasets if args.datasets != DEFAULT_DATASETS else ''}` — "
        f"{time.strftime('%Y-%m-%d %H:%M')}",
        "",
        "## Machine",
        "",
        f"- CPU: {info['cpu']}, {info['cores']} cores",
        f"- torch {info['torch']}, streamlit {info['streamlit']}, plotly {info['plotly']}, Python {info['python']}",
        f"- browser: {info['chromium']} (headless, same machine)",
        f"- {info['os']}",
        f"- torch threads: {args.threads}, the same on both sides of each row (read back from every run: "
        "metrics.train_threads; 0 = auto)",
        f"- load average at the start: {info.get('load_start', '?')}; at the end: {load()}",
        "",
        "## Training time (the engine's `seconds`), medians",
        "",
        f"Pairs: repeat i of the dashboard / repeat i of the CLI (run next to each other), median [lowest–highest]; "
        f"≤ {TARGET}×: 'met' if every pair is, 'missed' if none is, else 'within noise'; in brackets the chance that the pairs' range holds the median pair (1 − 2·0.5ⁿ).",
        "",
        "| dataset | config | threads | CLI s | dashboard s | dashboard / CLI | pairs | "
        f"≤ {TARGET}× | no viewer s | no viewer / CLI |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (ds, _), r in results.items():
        a = r["arms"]
        cli_s, dash_s = median(a["cli"]), median(a["dashboard"])
        nv = a.get("no viewer")
        pairs = pair_ratios(a["dashboard"], a["cli"])
        lines.append(
            f"| {ds} | {r['case'].label().split(': ', 1)[1]} | {r['threads']} | {cli_s:.2f} | {dash_s:.2f} | "
            f"**{dash_s / cli_s:.2f}×** | {spread(pairs)} | {verdict(pairs)} | {median(nv) if nv else float('nan'):.2f} | "
            f"{(median(nv) / cli_s) if nv else float('nan'):.2f}× |"
        )
    lines += ["", "All runs (seconds, in the order run):", ""]
    for (ds, threads), r in results.items():
        for arm, xs in r["arms"].items():
            lines.append(
                f"- {ds}, {threads} thread(s), {arm}: {', '.join(f'{x:.2f}' for x in xs)} "
                f"(test acc {', '.join(f'{x:.4f}' for x in r['acc'][arm])})"
            )
    lines += [
        "",
        "## Start-up: `streamlit run` spawned → Overview title visible",
        "",
        "Both starts come after the CLI trained the teachers, so torch and friends are already in the "
        f"OS file cache (PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', 'unset')}).",
        "",
        "| start | server healthy s | Overview shown s |",
        "| --- | --- | --- |",
    ]
    for s in startup:
        lines.append(f"| {s['start']} | {s['healthy_s']:.2f} | {s['overview_s']:.2f} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
