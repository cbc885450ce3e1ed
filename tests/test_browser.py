"""The real thing: `streamlit run` + Chromium, a mouse click on a confusion-matrix cell.

Why: AppTest can only *pretend* a chart was clicked (by writing the selection into session
state). This test proves the whole chain once -- Plotly in the browser turns a click on the
invisible square marker over a cell into a selection, Streamlit sends it to the script, and the
gallery of exactly that (true, pred) cell appears. The cell's pixel position is computed from the
Plotly plot area (``gd._fullLayout`` axes), so the test clicks where a user would.

Needs Debian's ``/usr/bin/chromium`` and the ``playwright`` package (never ``playwright
install``); skips with the reason otherwise. Screenshots go to ``tests/artifacts/`` (git-ignored)
and, with ``FER_DOCS_SCREENSHOTS=1``, one per page to ``docs/<page>.png`` for the README (taken
from a second server that also lists the shipped ``checkpoints/``).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
DOCS = ROOT / "docs"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
DATA = "synthetic:n=700"
START_TIMEOUT_S = 180
UI_TIMEOUT_MS = 600_000  # generous: on a shared 2-core box a first page load (torch import,
# SynthFER generation) has been seen to take minutes


def _require_browser() -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found (Debian chromium: apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; no browser download needed)")


@pytest.fixture(scope="module")
def browser_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require_browser()
    from fer_core.data.spec import open_dataset
    from fer_core.evaluate import evaluate_run
    from fer_core.train import TrainConfig, fit

    root = tmp_path_factory.mktemp("browser_runs")
    faces = open_dataset(DATA)
    for name, kw in (("run_a", {}), ("run_b", {"aug": "none", "normalize": False})):
        run = fit(TrainConfig(data=DATA, model="cnn4", epochs=1, batch_size=64, threads=2, **kw),
                  run_dir=root / name, faces=faces)
        evaluate_run(run, split="test", faces=faces)
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def streamlit_server(env_extra: dict[str, str], log: Path) -> Iterator[str]:
    """``streamlit run dashboard/app.py`` on a free loopback port; killed in ``finally``."""
    port = _free_port()
    env = {**os.environ, **env_extra}
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard" / "app.py"),
           "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"streamlit exited early:\n{log.read_text()[-3000:]}")
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                        if r.read().strip() == b"ok":
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"streamlit did not start in {START_TIMEOUT_S}s:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


@contextmanager
def chromium_page(height: int = 1100) -> Iterator[Any]:
    """A Chromium page; Streamlit scrolls inside its own container, so a tall viewport is what
    makes a screenshot show a whole page."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": height})
            page.set_default_timeout(UI_TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def _settle(page: Any) -> None:
    """Wait until Streamlit has finished running the script (its status widget disappears)."""
    page.wait_for_timeout(300)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " || document.querySelector('[data-testid=\"stStatusWidget\"]').innerText.trim() === ''",
        timeout=UI_TIMEOUT_MS)
    page.wait_for_timeout(300)


IMAGES_LOADED_JS = """() => {
  const imgs = [...document.querySelectorAll('.st-key-err_gal_faces img')];
  return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);
}"""

ALL_IMAGES_LOADED_JS = """() => {
  const imgs = [...document.querySelectorAll('[data-testid="stMain"] img')];
  return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);
}"""

NOTHING_STALE_JS = """() => !document.querySelector('[data-stale="true"]')"""

CELL_JS = """([x, y]) => {
  const gd = document.querySelector('[data-testid="stPlotlyChart"] .js-plotly-plot');
  const fl = gd._fullLayout, r = gd.getBoundingClientRect();
  return [r.left + fl.xaxis._offset + fl.xaxis.d2p(x), r.top + fl.yaxis._offset + fl.yaxis.d2p(y)];
}"""


def _click_cell(page: Any, true_name: str, pred_name: str) -> None:
    page.wait_for_function(
        "() => { const gd = document.querySelector('[data-testid=\"stPlotlyChart\"] .js-plotly-plot');"
        " return gd && gd._fullLayout && gd._fullLayout.xaxis && gd._fullLayout.xaxis._offset !== undefined; }")
    x, y = page.evaluate(CELL_JS, [pred_name, true_name])
    page.mouse.move(x, y)
    page.wait_for_timeout(200)
    page.mouse.click(x, y)


def _gallery_heading(page: Any, true_name: str, pred_name: str, n: int) -> Any:
    pattern = re.compile(rf"true {true_name} → predicted {pred_name}: {n} faces")
    return page.locator("h4").filter(has_text=pattern)


def test_click_confusion_cell_shows_its_faces(browser_runs: Path, tmp_path: Path) -> None:
    from fer_core.labels import EMOTIONS

    with np.load(browser_runs / "run_a" / "eval" / "test.npz") as z:
        labels, preds, rows = z["label"], z["pred"], z["row"]
    k = len(EMOTIONS)
    cm = np.bincount(labels * k + preds, minlength=k * k).reshape(k, k)
    off = cm.copy()
    np.fill_diagonal(off, -1)
    default = np.unravel_index(int(off.argmax()), off.shape)
    # click a populated cell that is NOT the one shown by default: the biggest diagonal cell
    i = j = int(np.argmax(np.diag(cm)))
    assert (i, j) != tuple(int(v) for v in default)
    n = int(cm[i, j])
    want_rows = set(rows[(labels == i) & (preds == j)].tolist())

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    env = {"FER_RUNS": str(browser_runs), "FER_RUNS_ONLY": "1"}
    with streamlit_server(env, tmp_path / "streamlit.log") as url, chromium_page(height=2600) as page:
        page.goto(f"{url}/errors")
        page.locator('[data-testid="stPlotlyChart"]').first.wait_for()
        page.locator("h4").filter(has_text="→ predicted").first.wait_for()
        _settle(page)
        page.wait_for_function(IMAGES_LOADED_JS)
        page.screenshot(path=str(ARTIFACTS / "errors_before_click.png"), full_page=True)

        _click_cell(page, EMOTIONS[i], EMOTIONS[j])
        heading = _gallery_heading(page, EMOTIONS[i], EMOTIONS[j], n)
        heading.wait_for()
        _settle(page)
        faces = page.locator(".st-key-err_gal_faces img")
        assert faces.count() == min(36, n)
        page.wait_for_function(IMAGES_LOADED_JS)
        captions = page.locator(".st-key-err_gal_faces [data-testid='stImageCaption']").all_inner_texts()
        assert len(captions) == min(36, n)
        shown = {int(re.match(r"row (\d+)", c.strip()).group(1)) for c in captions}
        assert shown <= want_rows and len(shown) == len(captions)
        assert all(f"{EMOTIONS[j]} " in c for c in captions)  # predicted class named in each caption
        page.screenshot(path=str(ARTIFACTS / "errors_after_click.png"), full_page=True)

        # and an off-diagonal cell, by mouse too
        oi, oj = (int(v) for v in default)
        if cm[oi, oj] > 0:
            _click_cell(page, EMOTIONS[oi], EMOTIONS[oj])
            _gallery_heading(page, EMOTIONS[oi], EMOTIONS[oj], int(cm[oi, oj])).wait_for()
            _settle(page)
            assert page.locator(".st-key-err_gal_faces img").count() == min(36, int(cm[oi, oj]))


DOCS_RUN = "synth-cnn4-aug"  # the shipped SynthFER run the model pages are shown on (?run=)


def _select(page: Any, key: str, option: str) -> None:
    """Choose ``option`` (a substring of its text) in the selectbox with widget key ``key``."""
    page.locator(f".st-key-{key} [role='combobox']").click()
    page.get_by_role("option").filter(has_text=option).first.click()
    _settle(page)
    value = page.locator(f".st-key-{key} [role='combobox']").input_value()
    assert option in value, f"{key} shows {value!r}, not {option!r}"


def _assert_synthetic_run(page: Any, key: str) -> None:
    """docs/ is committed: never write real FER2013 faces there (dataset licence)."""
    box = page.locator(f".st-key-{key}")
    inputs = box.locator("input")   # the selectbox (a combobox) shows its value in an <input>
    chosen = box.inner_text() + " " + " ".join(inputs.nth(i).input_value() for i in range(inputs.count()))
    assert DOCS_RUN in chosen and "synthetic" in chosen, f"the page is not showing {DOCS_RUN}: {chosen}"


@pytest.mark.skipif(os.environ.get("FER_DOCS_SCREENSHOTS") != "1",
                    reason="set FER_DOCS_SCREENSHOTS=1 to refresh docs/<page>.png")
def test_docs_screenshots(tmp_path: Path) -> None:
    """One screenshot per page for the README, of the shipped runs (no run is trained for it).

    Pages that show faces are shown on a shipped SynthFER run: the Errors page opens on one by
    itself; Explain and Filters are opened on ``DOCS_RUN`` through their ``?run=`` URL parameter.
    """
    _require_browser()
    if not (ROOT / "checkpoints" / DOCS_RUN).is_dir():
        pytest.skip(f"checkpoints/{DOCS_RUN} (a shipped SynthFER run) is missing")
    DOCS.mkdir(exist_ok=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    env = {"FER_RUNS": "", "FER_RUNS_ONLY": "0"}
    with streamlit_server(env, tmp_path / "streamlit-docs.log") as url, chromium_page(height=3000) as page:
        for name, path, ready in (("runs", "", '[data-testid="stPlotlyChart"]'),  # the default page is /
                                  ("errors", "errors", ".st-key-err_gal_faces img"),
                                  ("dataset", f"dataset?run={DOCS_RUN}", ".st-key-ds_gal_faces img"),
                                  ("explain", f"explain?run={DOCS_RUN}", '[data-testid="stImage"] img'),
                                  ("filters", f"filters?run={DOCS_RUN}", ".st-key-fv_go button"),
                                  ("live", "live", '[data-testid="stFileUploader"]'),
                                  ("model", "model", '[data-testid="stDataFrame"]')):
            page.goto(f"{url}/{path}")
            page.locator(ready).first.wait_for()
            _settle(page)
            if name == "errors":
                page.wait_for_function(IMAGES_LOADED_JS)
                # docs/ is committed: never write real FER2013 faces there (dataset licence)
                heading = page.locator("h4").filter(has_text="→ predicted").first.inner_text()
                assert "synthetic" in heading, f"the Errors page opened on a non-synthetic run: {heading}"
            elif name == "dataset":
                _assert_synthetic_run(page, "ds_run")
                page.wait_for_function(ALL_IMAGES_LOADED_JS)
            elif name == "explain":
                _assert_synthetic_run(page, "xp_run")
                page.get_by_text("These are synthetic faces (SynthFER)").wait_for()
                page.wait_for_function(ALL_IMAGES_LOADED_JS)
            elif name == "filters":
                _assert_synthetic_run(page, "fv_run")
                _select(page, "fv_layer", "features.conv2")
                page.locator(".st-key-fv_go button").click()
                page.get_by_text("(one batch)").nth(1).wait_for()      # both modes optimised
                page.get_by_text("synthetic, SynthFER").first.wait_for()
                _settle(page)
                page.wait_for_function(NOTHING_STALE_JS)
                page.wait_for_function(ALL_IMAGES_LOADED_JS)
            elif name == "live":
                # an uploaded picture of three SynthFER (synthetic) faces: never a dataset face
                from PIL import Image
                from test_faces_predictor import synth_scene

                photo = tmp_path / "three_synthetic_faces.png"
                Image.fromarray(synth_scene(3, size=(360, 720), face_px=150)[0]).save(photo)
                page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(photo))
                page.get_by_text("Face #3").first.wait_for()
                _settle(page)
                page.wait_for_function(ALL_IMAGES_LOADED_JS)
            page.screenshot(path=str(DOCS / f"{name}.png"), full_page=True)
            page.screenshot(path=str(ARTIFACTS / f"docs_{name}.png"), full_page=True)


MAP_POINTS_JS = """() => {
  const gd = document.querySelector('[data-testid="stPlotlyChart"] .js-plotly-plot');
  const fl = gd._fullLayout, r = gd.getBoundingClientRect();
  const pts = [];
  gd._fullData.forEach(t => { for (let i = 0; i < t.x.length; i++) {  // decoded (data may hold base64)
    pts.push([r.left + fl.xaxis._offset + fl.xaxis.d2p(t.x[i]), r.top + fl.yaxis._offset + fl.yaxis.d2p(t.y[i]),
              t.customdata[i][1]]); } });
  return pts;
}"""


def test_box_select_on_dataset_map_shows_those_faces(browser_runs: Path, tmp_path: Path) -> None:
    """A mouse drag on the Dataset page's map box-selects faces; the gallery shows exactly them."""
    import shutil

    # the page writes its map cache (eval/test_embedding.npz) into the run: work on a copy
    runs = tmp_path / "runs"
    shutil.copytree(browser_runs / "run_a", runs / "run_a")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    env = {"FER_RUNS": str(runs), "FER_RUNS_ONLY": "1"}
    # tall enough that the page never needs a scroll bar: one appearing would resize the map
    with streamlit_server(env, tmp_path / "streamlit.log") as url, chromium_page(height=3400) as page:
        page.goto(f"{url}/dataset?run=run_a")
        page.locator("h4").filter(has_text="No selection").first.wait_for()
        page.wait_for_function(
            "() => { const gd = document.querySelector('[data-testid=\"stPlotlyChart\"] .js-plotly-plot');"
            " return gd && gd._fullLayout && gd._fullLayout.xaxis && gd._fullLayout.xaxis._offset !== undefined"
            " && gd.data && gd.data.length > 0; }")
        _settle(page)
        page.wait_for_function(NOTHING_STALE_JS)
        page.wait_for_function(ALL_IMAGES_LOADED_JS)
        # measure where the points are once the layout has stopped moving
        points, before = page.evaluate(MAP_POINTS_JS), None
        for _ in range(20):
            if points == before:
                break
            page.wait_for_timeout(500)
            before, points = points, page.evaluate(MAP_POINTS_JS)
        assert len(points) > 10
        # a box of 2×70 px centred on a face of the map (the middle one from left to right), by mouse
        cx, cy, _ = sorted(points)[len(points) // 2]
        x0, x1, y0, y1 = cx - 70, cx + 70, cy - 70, cy + 70

        def inside(margin: float) -> set[int]:
            return {int(r) for x, y, r in points
                    if x0 - margin <= x <= x1 + margin and y0 - margin <= y <= y1 + margin}

        outer, inner = inside(3), inside(-3)
        assert inner, "the box should hold faces"
        page.mouse.move(x0, y0)
        page.mouse.down()
        page.mouse.move(x1, y1, steps=12)
        page.mouse.up()
        heading = page.locator("h4").filter(has_text=re.compile(r"\d+ faces selected on the map"))
        heading.first.wait_for()
        _settle(page)
        n = int(re.match(r"(\d+) faces selected", heading.first.inner_text()).group(1))
        assert len(inner) <= n <= len(outer), (n, len(inner), len(outer))
        page.wait_for_function("""() => {
          const imgs = [...document.querySelectorAll('.st-key-ds_gal_faces img')];
          return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);
        }""")
        captions = page.locator(".st-key-ds_gal_faces [data-testid='stImageCaption']").all_inner_texts()
        assert len(captions) == min(36, n)
        shown = {int(re.match(r"row (\d+)", c.strip()).group(1)) for c in captions}
        assert shown <= outer and len(shown) == len(captions)
        page.wait_for_function(NOTHING_STALE_JS)
        page.screenshot(path=str(ARTIFACTS / "dataset_after_box_select.png"), full_page=True)
