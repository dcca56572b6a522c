"""Start-up: `kd-studio --help`, and the dashboard's first paint with a store of 200 runs.

  help      wall seconds of `kd-studio --help` (the console script beside this interpreter,
            else `python -m kd_core`), run from an empty temp folder, this checkout first
            on PYTHONPATH.
  dashboard a fresh server process per start, alternating the arms ABBA…: "cli" is what a
            user types (`python -m kd_core ui --headless`), "serve" the server it spawns
            (ui/serve.py, which preloads the pages' imports; the browser tests start this one),
            "plain" the same server without the preloader (ui/serve.py --no-preload), to see
            whether it helps.
            Headless Debian chromium (Playwright) opens the Overview. Times from spawn to the health check answering and to the Overview shown
            with its content (bench_dashboard.start_to_first_page, which also checks the
            "Last student" card names the store's newest student).

The store: `--runs` runs (default 200) of digits in one real store (SQLite index, weight
files, per-run JSON): two teachers and a few students trained for real by kd_core (tiny
MLPs, one or two epochs), the rest stored through the store's own API as copies of those
students (their config with a new seed and a sweep id, their epochs, a copy of their
weights), which is what a sweep leaves behind, at a fraction of the cost.

"Cold" here means a new process: the OS file cache is warm (it cannot be dropped without
privileges), as it is when a user starts the dashboard a second time.

    python benchmarks/bench_startup.py [--repeats 3] [--runs 200] [--arms cli,serve,plain] [--out FILE]

Prints the CPU (kd_core.deploy.runtimes.machine_info) and the load average, writes
benchmarks/RESULTS_startup.md (its "## Notes" section onwards is kept). About 2 minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks"), str(REPO / "tests")]

from bench_dashboard import load, median, start_to_first_page, write_report  # noqa: E402

from _server import CHROMIUM, kd_env, launch_browser  # noqa: E402
from kd_core.deploy.runtimes import machine_info  # noqa: E402
from kd_core.events import Progress  # noqa: E402
from kd_core.records import StoredRun  # noqa: E402
from kd_core.store import Store  # noqa: E402
from kd_core.train import recorder  # noqa: E402
from kd_core.views.studio import load_data  # noqa: E402
from stores import compare_config  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="starts of each arm, and runs of --help (default 3)")
    p.add_argument("--runs", type=int, default=200, help="runs in the store (default 200)")
    p.add_argument("--arms", default="cli,serve,plain", help="comma-separated: cli, serve, plain (see above)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "RESULTS_startup.md"))
    return p.parse_args()


# ---------------------------------------------------------------- the store


def make_store(root: Path, data_root: Path, n: int) -> str:
    """A store of `n` digits runs; returns the newest student's label (what the Overview's
    "Last student" card must show)."""
    data = load_data("digits", str(data_root))
    store = Store(root)
    real = []
    for width in (32, 64):  # the newer teacher (64) is the one the sidebar picks first
        teacher = recorder.train_teacher(store, compare_config("teacher", width, 2), data)
        for seed in range(2):
            cfg = compare_config("student", 8 * (seed + 1), 1, teacher.run_id, seed=seed)
            real += recorder.distill(store, cfg, data, teacher.model, True)
    assert all(o.status == "finished" for o in real), [o.message for o in real]
    sources = [run for o in real if (run := store.get_run(o.run_id)) is not None]
    for i in range(n - 2 - len(real)):
        src = sources[i % len(sources)]
        _copy_run(store, src, seed=100 + i, sweep_id=f"sw-bench-{i // 20}")
    runs = store.list_runs()
    assert len(runs) == n, len(runs)
    return next(r.label for r in runs if r.kind == "student" and r.dataset == "digits")


def _copy_run(store: Store, src: StoredRun, seed: int, sweep_id: str) -> str:
    """A finished run stored through the store's API: `src`'s config with another seed and a
    sweep id, its epochs and metrics, a copy of its weight file."""
    cfg = src.config
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed), sweep_id=sweep_id)
    run_id = store.create_run(cfg, src.label)
    for e in store.epochs(src.id):
        store.add_epoch(
            Progress(
                "epoch", e["epoch"], e["epoch"], e["epoch"], loss=e["loss"], terms=e["terms"], elapsed_s=e["seconds"],
                train_acc=e["train_acc"], val_acc=e["val_acc"], run_id=run_id,
            )
        )  # fmt: skip
    weights = store.weights_path(run_id)
    assert src.weights is not None
    shutil.copyfile(src.weights, weights)
    store.finish_run(run_id, "finished", src.metrics, weights=weights)
    return run_id


# ---------------------------------------------------------------- kd-studio --help


def help_seconds(env: dict, cwd: Path) -> float:
    exe = Path(sys.executable).with_name("kd-studio")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "kd_core"]
    t = time.perf_counter()
    out = subprocess.run([*cmd, "--help"], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t
    assert out.returncode == 0 and "usage: kd-studio" in out.stdout, out.stderr[-2000:]
    return seconds


# ---------------------------------------------------------------- main


def main() -> int:
    args = parse_args()
    if not os.path.exists(CHROMIUM):
        print(f"needs Debian's chromium at {CHROMIUM}", file=sys.stderr)
        return 2
    cpu = f"{machine_info()['cpu']}, {os.cpu_count()} cores; load average at the start: {load()}"
    print(f"CPU: {cpu}", flush=True)
    root = Path(tempfile.mkdtemp(prefix="kd_bench_startup_"))
    try:
        return run_all(args, cpu, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_all(args, cpu: str, root: Path) -> int:
    from playwright.sync_api import sync_playwright

    runs, data, empty = root / "runs", root / "data", root / "elsewhere"
    empty.mkdir()
    # Every child (the CLI, the servers) imports this checkout's kd_core, not an installed one.
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = kd_env(runs, data)
    t = time.perf_counter()
    newest = make_store(runs, data, args.runs)
    print(f"store of {args.runs} runs in {time.perf_counter() - t:.1f} s; newest student {newest!r}", flush=True)

    helps = [help_seconds(env, empty) for _ in range(args.repeats)]
    print(f"kd-studio --help: {', '.join(f'{x:.2f}' for x in helps)} s  load {load()}", flush=True)

    arms = args.arms.split(",")
    starts: dict[str, list[dict]] = {a: [] for a in arms}
    with sync_playwright() as pw:
        browser = launch_browser(pw)
        try:
            for r in range(args.repeats):
                for arm in arms if r % 2 == 0 else arms[::-1]:
                    s = start_to_first_page(browser, runs, data, launcher=arm)
                    assert newest in s["last_student"], f"the Overview shows {s['last_student']!r}, not {newest!r}"
                    starts[arm].append({**s, "load": load()})
                    print(f"  {arm:8s} healthy {s['healthy_s']:5.2f} s  Overview {s['overview_s']:5.2f} s  "
                          f"load {load()}", flush=True)  # fmt: skip
        finally:
            browser.close()

    write_report(render(args, cpu, helps, starts), Path(args.out))
    return 0


WHAT = {
    "cli": "`kd-studio ui --headless` (as a user starts it)",
    "serve": "`python ui/serve.py` (the server it spawns, preloaded)",
    "plain": "`python ui/serve.py --no-preload` (the same server, nothing preloaded)",
}


def render(args, cpu: str, helps: list[float], starts: dict[str, list[dict]]) -> str:
    lines = [
        f"# Start-up: `kd-studio --help` and the Overview's first paint ({args.runs} runs in the store)",
        "",
        f"`python benchmarks/bench_startup.py --repeats {args.repeats} --runs {args.runs} --arms {args.arms}` — "
        f"{time.strftime('%Y-%m-%d %H:%M')}",
        "",
        f"- CPU: {cpu}; load average at the end: {load()}",
        f"- `kd-studio --help` from an empty folder: median **{median(helps):.2f} s** "
        f"({', '.join(f'{x:.2f}' for x in helps)})",
        "",
        "| server | starts | healthy s (median) | Overview shown s (median) | each Overview s (1-min load then) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for arm, ss in starts.items():
        what = WHAT[arm]
        shown = median([s["overview_s"] for s in ss])
        each = ", ".join(f"{s['overview_s']:.2f} ({s['load'].split()[0]})" for s in ss)
        lines.append(f"| {what} | {len(ss)} | {median([s['healthy_s'] for s in ss]):.2f} | **{shown:.2f}** | {each} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
