"""FER Studio dashboard: a Streamlit multipage app over fer_core run directories.

Run it with ``streamlit run dashboard/app.py``. Pages live in :mod:`dashboard.views` (one file
each); caching lives only in :mod:`dashboard.resources`; shared widgets in
:mod:`dashboard.components`.
"""
