"""KD Studio: the dashboard's entry point (`streamlit run app.py`).

The router: page config and navigation. Each page starts with
`ui.state.sidebar()`, the shared sidebar, so that it is in place however the
page is run (Streamlit's AppTest runs a page file on its own after switch_page).
"""

import streamlit as st

st.set_page_config(page_title="KD Studio", page_icon="⚗️", layout="wide")

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon=":material/school:", default=True),
    st.Page("pages/teacher.py", title="Teacher", icon=":material/psychology:"),
    st.Page("pages/distill.py", title="Distill", icon=":material/compress:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page("pages/soft_targets.py", title="Soft targets", icon=":material/bar_chart:"),
    st.Page("pages/runs.py", title="Runs", icon=":material/table_view:"),
    st.Page("pages/sweep.py", title="Sweep", icon=":material/grid_on:"),
]

st.navigation(PAGES).run()
