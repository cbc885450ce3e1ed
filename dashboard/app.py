"""FER Studio entry point: page config, navigation, shared sidebar, nothing else.

Why so thin: each page is its own file in ``dashboard/views/`` and adding one is one line in
``PAGES`` below. ``streamlit run dashboard/app.py`` puts only ``dashboard/`` on ``sys.path``, so
the project root is added first to make ``fer_core`` and ``dashboard`` importable without
installing the project.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from dashboard.components import sidebar  # noqa: E402

# an emoji favicon: a ":material/…:" one is fetched from fonts.gstatic.com, which offline machines cannot reach
st.set_page_config(page_title="FER Studio", page_icon="🙂", layout="wide")

VIEWS = Path(__file__).resolve().parent / "views"
PAGES = [
    st.Page(VIEWS / "runs.py", title="Runs", icon=":material/monitoring:", default=True),
    st.Page(VIEWS / "errors.py", title="Errors", icon=":material/grid_on:"),
    st.Page(VIEWS / "explain.py", title="Explain", icon=":material/visibility:"),
    st.Page(VIEWS / "filters.py", title="Filters", icon=":material/filter:"),
    st.Page(VIEWS / "live.py", title="Live", icon=":material/videocam:"),
    st.Page(VIEWS / "model.py", title="Model", icon=":material/schema:"),
]

pg = st.navigation(PAGES)
sidebar()
pg.run()
