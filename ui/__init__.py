"""Streamlit-side helpers shared by the pages: cached resources, the sidebar, charts."""
