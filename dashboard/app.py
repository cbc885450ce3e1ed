"""FER Studio entry point: page config, navigation, shared sidebar, nothing else.

Why so thin: each page is its own file in ``dashboard/views/`` and adding one is one line in
``PAGES`` below. ``fer_core`` and ``dashboard`` are imported as installed packages
(``pip install -r requirements.txt`` installs the project, editable), so no ``sys.path`` edits.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard.components import sidebar

# an emoji favicon: a ":material/…:" one is fetched from fonts.gstatic.com, which offline machines cannot reach
st.set_page_config(page_title="FER Studio", page_icon="🙂", layout="wide")

VIEWS = Path(__file__).resolve().parent / "views"
PAGES = [
    st.Page(VIEWS / "runs.py", title="Runs", icon=":material/monitoring:", default=True),
    st.Page(VIEWS / "errors.py", title="Errors", icon=":material/grid_on:"),
    st.Page(VIEWS / "dataset.py", title="Dataset", icon=":material/scatter_plot:"),
    st.Page(VIEWS / "explain.py", title="Explain", icon=":material/visibility:"),
    st.Page(VIEWS / "filters.py", title="Filters", icon=":material/filter:"),
    st.Page(VIEWS / "live.py", title="Live", icon=":material/videocam:"),
    st.Page(VIEWS / "model.py", title="Model", icon=":material/schema:"),
]

pg = st.navigation(PAGES)
sidebar()
pg.run()
