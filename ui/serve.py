"""Start the dashboard's server (`streamlit run app.py ARGS…`) with its heavy modules already
imported: `python ui/serve.py [--no-preload] [streamlit flags]`, as `kd-studio ui` does.

Streamlit runs app.py only when a browser connects, so the first visitor paid for importing
torch, pandas, plotly, scikit-learn and kd_core (most of a cold first paint: several seconds on
2 cores).
Imported here first, in this process, before the server starts, they are in sys.modules when
the script runs; the server answers its health check a little later instead, before the
browser is opened. Synchronously, on purpose: two threads importing torch's packages at once
can meet a partially initialised module. Measured on a slow, shared 2-core EPYC
(benchmarks/RESULTS_startup.md): the Overview came 0.4-3 s sooner than without a preloader in
four paired runs before the imports were cut down, within noise of it after; a thread
started beside the server was no better (the imports then compete for the GIL with the server
and its serving of the page's scripts). Kept: when the server answers, it is ready, so the
browser `kd-studio ui` opens shows the page rather than a long spinner.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "app.py"
# The server's settings; flags given to this script come after them and win.
SERVER_FLAGS = (
    # Streamlit runs gc.collect(2) after every script run, each 2 s poll of the live panel included:
    # 40-90 ms holding the GIL while a job trains (benchmarks/RESULTS_dashboard.md). Python's own
    # collector still runs; the heavy startup objects are frozen (ui/state.py) so its passes are short.
    "--runner.postScriptGC",
    "false",
    # Users do not edit the app's code: no watcher thread, no scan of sys.modules after every run.
    "--server.fileWatcherType",
    "none",
)

NO_PRELOAD = "--no-preload"


def preload() -> None:
    """What app.py and its pages import, in the order they do (kd_core through ui.state)."""
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path[0] = str(REPO)  # not ui/ itself: its modules would shadow top-level names
    else:
        sys.path.insert(0, str(REPO))
    import plotly.express
    import plotly.graph_objects  # noqa: F401
    import sklearn.datasets
    import sklearn.model_selection  # noqa: F401  (the sidebar's dataset: digits' loader, the stratified split)

    # set_page_config's check of app.py's emoji icon (a catalogue: 0.1-0.3 s), st.Page's icons
    import streamlit.emojis
    import streamlit.material_icon_names  # noqa: F401

    import ui.state  # noqa: F401  (kd_core.views.studio: torch, pandas, the engine)
    from kd_core.views import compare, deploy, runs_table, sweep_view  # noqa: F401

    # ui.state freezes the heap on the first script run (why: its _freeze_startup_objects); its full
    # collection over the objects just imported (0.3-0.7 s on 2 cores) is done here instead, before
    # the browser waits; the script's own collection then scans only what came since.
    gc.collect()
    gc.freeze()


def main(argv: list[str]) -> None:
    if NO_PRELOAD in argv:  # the same server, nothing imported first: what the preloader buys
        argv = [a for a in argv if a != NO_PRELOAD]  # (benchmarks/bench_startup.py's "plain")
    else:
        preload()
    from streamlit.web import cli

    sys.argv = streamlit_argv(argv)
    cli.main()


def streamlit_argv(argv: list[str]) -> list[str]:
    """`streamlit run app.py` with SERVER_FLAGS, then the caller's flags (the last of a flag wins)."""
    return ["streamlit", "run", str(APP), *SERVER_FLAGS, *argv]


if __name__ == "__main__":
    main(sys.argv[1:])
