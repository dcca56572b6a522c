"""KD Studio: the dashboard's entry point (`streamlit run app.py`).

The router: page config, the shared sidebar, navigation. The sidebar (dataset, teacher
in use, folders, device, threads, precision) is drawn here, once per run around the page, as
Streamlit's multipage docs recommend: widgets of the entry point keep their state when
the user changes page, where widgets drawn by a page are reset. The pages live in
app_pages/, not pages/: a `pages/` folder beside the entry point puts Streamlit in its
legacy mode (each page run on its own, without this file) until st.navigation first runs.
"""

import streamlit as st

from kd_core.views.studio import StoreError
from ui import layout, state

st.set_page_config(page_title="KD Studio", page_icon="⚗️", layout="wide")

PAGES = [
    st.Page("app_pages/overview.py", title="Overview", icon=":material/school:", default=True),
    st.Page("app_pages/teacher.py", title="Teacher", icon=":material/psychology:"),
    st.Page("app_pages/distill.py", title="Distill", icon=":material/compress:"),
    st.Page("app_pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page("app_pages/soft_targets.py", title="Soft targets", icon=":material/bar_chart:"),
    st.Page("app_pages/runs.py", title="Runs", icon=":material/table_view:"),
    st.Page("app_pages/sweep.py", title="Sweep", icon=":material/grid_on:"),
    st.Page("app_pages/methods.py", title="Methods", icon=":material/leaderboard:"),
    st.Page("app_pages/compress.py", title="Compress", icon=":material/speed:"),
]

page = st.navigation(PAGES)
try:
    layout.responsive()
    state.sidebar()
    if (problem := state.store_problem()) is not None:
        st.error(f"{problem} Set another run store folder in the sidebar (Folders and compute).")
        st.stop()
    page.run()
except StoreError as err:  # the store went bad while the sidebar or page read it: a message, not a traceback
    state.store_failed(err)
