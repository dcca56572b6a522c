"""The README's screenshots: a fresh server, Quick start pressed, then the Distill and
Compare pages as a first-time visitor sees them. Needs Debian's chromium.

    python scripts/readme_screens.py [--out docs/img]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from _server import StreamlitServer, launch_browser, settle, wait_until  # noqa: E402

WIDTH, HEIGHT = 1400, 1500


def finished(page, timeout: float = 300) -> None:
    """Wait for a visible "Finished: …" banner (a redrawn fragment can leave a hidden copy first)."""
    banners = page.get_by_text(re.compile(r"^Finished: "))
    wait_until(
        lambda: any(banners.nth(i).is_visible() for i in range(banners.count())), timeout, what="the job to finish"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="kd_readme_"))
    from playwright.sync_api import sync_playwright

    with StreamlitServer(runs=work / "runs", data=work / "data") as server, sync_playwright() as pw:
        browser = launch_browser(pw)
        page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        page.goto(server.url)
        settle(page, "KD Studio")
        page.get_by_role("button", name="Quick start on digits").click()
        page.wait_for_url(re.compile(r"job="), timeout=60_000)
        page.goto(server.url + "/distill")  # the quick start shows there, live, then its results
        finished(page)
        settle(page, "Distill")
        finished(page)
        page.wait_for_timeout(1500)  # let plotly finish drawing
        page.screenshot(path=str(args.out / "distill.png"), full_page=True)
        page.goto(server.url + "/compare")
        settle(page, "Compare")
        page.wait_for_timeout(2000)
        page.screenshot(path=str(args.out / "compare.png"), full_page=False)
        browser.close()
    print("written:", *(str(args.out / n) for n in ("distill.png", "compare.png")))


if __name__ == "__main__":
    main()
