"""``--format pdf``: the report's HTML printed to PDF by Chromium through Playwright.

Why Chromium: it prints exactly the page a user would see (the same CSS, ``@media print`` rules
and embedded PNGs), it is a maintained engine, and on Debian it is one package
(``apt-get install chromium``) that CI installs anyway for the browser tests. Playwright drives
that system browser (``executable_path``); it never downloads one. Network requests are aborted,
so printing works offline and proves the page needs nothing from outside.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "check_pdf_support", "html_to_pdf"]

CHROMIUM = Path(os.environ.get("FER_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
TIMEOUT_MS = 120_000


def check_pdf_support() -> None:
    """RuntimeError saying what to install when Playwright or Chromium is missing."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        raise RuntimeError("--format pdf needs the playwright package (pip install playwright; it uses the "
                           "system Chromium, no browser download); use --format html otherwise") from None
    if not CHROMIUM.exists():
        raise RuntimeError(f"--format pdf needs Chromium at {CHROMIUM} (Debian/Ubuntu: apt-get install -y "
                           "chromium; or set FER_CHROMIUM to its path); use --format html otherwise")


def html_to_pdf(html: str) -> bytes:
    """PDF bytes of a self-contained HTML page (A4, backgrounds printed)."""
    check_pdf_support()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.route("**/*", lambda route: route.abort() if not route.request.url.startswith("data:")
                       else route.continue_())
            page.set_content(html, wait_until="load")
            return page.pdf(format="A4", print_background=True,
                            margin={"top": "12mm", "bottom": "12mm", "left": "10mm", "right": "10mm"})
        finally:
            browser.close()
