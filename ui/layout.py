"""Narrow screens (900 px wide or less): columns stack, and the sidebar starts collapsed.

Streamlit stacks columns only below 640 px and collapses the sidebar only below 768 px; at
800 px an open sidebar left about 500 px, metric values shrank to "0.9…" and legends
covered curves. A media query stacks every row of columns at 900 px or less. The sidebar
is collapsed once per page load, when the window is that narrow and the user has not
opened or closed it before (Streamlit keeps that choice in localStorage under
stSidebarCollapsed-…; clicking its own button records it the same way, so a user who
opens the sidebar again keeps it open).
"""

from __future__ import annotations

import streamlit as st

NARROW_PX = 900

CSS = f"""
<style>
@media (max-width: {NARROW_PX}px) {{
  [data-testid="stHorizontalBlock"] {{ flex-wrap: wrap !important; }}
  [data-testid="stHorizontalBlock"] > [data-testid="stColumn"] {{
    flex: 1 1 100% !important; width: 100% !important; min-width: 100% !important;
  }}
}}
</style>
"""

COLLAPSE_SCRIPT = f"""
<script>
(() => {{
  if (window.__kdNarrowSidebar || window.innerWidth > {NARROW_PX}) return;
  window.__kdNarrowSidebar = true;
  for (let i = 0; i < window.localStorage.length; i++) {{
    if (window.localStorage.key(i).startsWith("stSidebarCollapsed")) return;  // the user chose
  }}
  const collapse = (tries) => {{
    const button = document.querySelector('[data-testid="stSidebarCollapseButton"] button');
    if (button) button.click();
    else if (tries > 0) setTimeout(() => collapse(tries - 1), 100);
  }};
  collapse(50);
}})();
</script>
"""


def responsive() -> None:
    """The narrow-screen rules, once per script run (app.py), before the page draws. The script
    sits in the sidebar, where its empty element takes no room from the page."""
    st.html(CSS)
    with st.sidebar:
        st.html(COLLAPSE_SCRIPT, unsafe_allow_javascript=True, width="content")
