"""One module per dashboard page; each is a script that ``st.navigation`` runs (see app.py).

Importing a page module does not render it (the page body runs under ``__name__ == "__main__"``),
so tests and benches can call its functions directly.
"""
