"""KD Studio: the dashboard's entry point (`streamlit run app.py`)."""
import streamlit as st

from ui import state

st.set_page_config(page_title="KD Studio", page_icon="⚗️", layout="wide")

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon=":material/school:", default=True),
    st.Page("pages/teacher.py", title="Teacher", icon=":material/psychology:"),
    st.Page("pages/distill.py", title="Distill", icon=":material/compress:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page("pages/soft_targets.py", title="Soft targets", icon=":material/bar_chart:"),
]

page = st.navigation(PAGES)
state.sidebar()
page.run()
