"""The one-command report: ``python -m fer_core report`` and the Runs page's Report button.

Built once for the shipped SynthFER run ``synth-cnn4-aug`` (compared with ``synth-cnn4-plain``),
then checked for what a reader relies on: every section in order with its "how it was computed"
line, every figure an embedded PNG that decodes, nothing fetched from outside, and the
most-confused-pair sentences equal to the confusion matrix. Runs that lack something (the data
file, a model, hookable layers) must still give a report that says why. The browser test opens the
file from disk in Chromium with every network request refused and recorded.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from fer_core.__main__ import main
from fer_core.labels import EMOTIONS
from fer_core.report import SECTION_TITLES, build_report

ROOT = Path(__file__).resolve().parents[1]
AUG = ROOT / "checkpoints" / "synth-cnn4-aug"
PLAIN = ROOT / "checkpoints" / "synth-cnn4-plain"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
DATA = "synthetic:n=700,seed=3"
PAIR_RE = re.compile(r"(\w+) is predicted as (\w+) (\d+)% of the time \((\d+) of (\d+) \1 faces\)")


def _cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(args))
    return rc, out.getvalue(), err.getvalue()


def _sections(html: str) -> dict[str, str]:
    """Section id -> its HTML."""
    return dict(re.findall(r'<section id="(\w+)">(.*?)</section>', html, flags=re.S))


def _why(section_html: str) -> list[str]:
    return re.findall(r'<p class="why">(.*?)</p>', section_html, flags=re.S)


@pytest.fixture(scope="module")
def aug_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str, str]:
    out = tmp_path_factory.mktemp("report") / "synth-cnn4-aug.html"
    rc, stdout, stderr = _cli("report", str(AUG), "--compare", str(PLAIN), "--out", str(out))
    assert rc == 0, stderr
    return out, out.read_text(encoding="utf-8"), stdout, stderr


def test_cli_writes_one_file_and_prints_its_path(aug_report) -> None:
    out, html, stdout, stderr = aug_report
    assert stdout.strip().splitlines()[-1] == str(out)
    assert "[100%] done" in stderr and "saliency" in stderr  # progress on stderr, not stdout
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert not list(out.parent.glob(".*.tmp")), "the atomic write left a temp file"


def test_every_section_in_order_with_how_it_was_computed(aug_report) -> None:
    html = aug_report[1]
    heads = re.findall(r'<section id="(\w+)"><h2>(.*?)</h2><p class="how">([^<]+)</p>', html)
    assert [(k, t) for k, t, _ in heads] == list(SECTION_TITLES)
    how = {k: h for k, _, h in heads}
    assert "test split, n = 1200 faces" in how["confusion"]
    assert "Grad-CAM at layer features.act4" in how["saliency"] and "n = 7 faces" in how["saliency"]
    assert "features.conv4" in how["filters"] and "48 steps" in how["filters"]
    assert "synth-cnn4-plain" in how["history"]
    assert "class=\"why\"" not in html, _why(html)  # everything could be made for this run


def test_summary_states_data_as_synthetic_and_the_stored_metrics(aug_report) -> None:
    s = _sections(aug_report[1])
    ev = json.loads((AUG / "eval" / "test.json").read_text())
    assert "SynthFER: synthetic faces" in s["summary"] and '<span class="tag">synthetic</span>' in s["summary"]
    assert f"{100 * ev['accuracy']:.1f}%" in s["summary"] and f"{ev['ece']:.3f}" in s["summary"]
    assert f"{ev['macro_f1']:.3f}" in s["summary"]
    assert "(synthetic)" in s["history"] and "synthetic" in s["confusion"]  # wherever the data is shown
    assert "8/8 agree" in s["architecture"] and "⌊(48 + 2·2 − 5)/1⌋ + 1 = 48" in s["architecture"]
    assert "preprocess.normalize" in s["history"] and "train.aug" in s["history"]  # the differing keys


def test_every_image_is_an_embedded_png(aug_report) -> None:
    from PIL import Image

    html = aug_report[1]
    srcs = re.findall(r'<img\b[^>]*\bsrc="([^"]*)"', html)
    assert len(srcs) == html.count("<img") == 10  # curves, matrix, 3 strips, 2 saliency, 3 filters
    for src in srcs:
        assert src.startswith("data:image/png;base64,"), src[:60]
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
            assert im.format == "PNG" and im.size[0] > 20 and im.size[1] > 20


def test_no_external_reference(aug_report) -> None:
    html = aug_report[1]
    assert not re.search(r"https?:", html, flags=re.I)
    assert not re.search(r"<(script|link|iframe|object|embed)\b", html, flags=re.I)
    assert "url(" not in html and "@import" not in html
    for attr in re.findall(r'\b(?:src|href)="([^"]*)"', html):
        assert attr.startswith(("data:image/png;base64,", "#")), attr[:60]


def test_confused_pair_sentences_match_the_matrix(aug_report) -> None:
    from fer_core.rundata import RunData

    cm = RunData(AUG, "").stored_predictions("test").cm
    sentences = re.findall(r'<li class="pair">(.*?)</li>', _sections(aug_report[1])["confusion"])
    assert len(sentences) == 5
    k = len(EMOTIONS)
    share = cm / cm.sum(1, keepdims=True)
    off = [(share[i, j], cm[i, j], i, j) for i in range(k) for j in range(k) if i != j and cm[i, j] > 0]
    expected = sorted(off, key=lambda t: (-t[0], -t[1]))[:5]
    for text, (sh, _, i, j) in zip(sentences, expected):
        m = PAIR_RE.fullmatch(text)
        assert m, text
        true, pred, pct, count, support = m.group(1), m.group(2), *map(int, m.groups()[2:])
        assert (true, pred) == (EMOTIONS[i], EMOTIONS[j]), text
        assert count == cm[i, j] and support == cm[i].sum() and pct == round(100 * sh), text
    # the top pairs get a strip of their faces, captioned with the cell's size
    t, p = EMOTIONS[expected[0][2]], EMOTIONS[expected[0][3]]
    assert f"true {t}, predicted {p}: " in aug_report[1]


def _run_without_data(tmp_path: Path) -> Path:
    run = tmp_path / "no-data-run"
    shutil.copytree(AUG, run)
    cfg = json.loads((run / "config.json").read_text())
    cfg.update(data="fer2013_elsewhere.npz", data_ref={"file": "fer2013_elsewhere.npz"}, synthetic=False)
    cfg["train"]["data"] = cfg["data"]
    (run / "config.json").write_text(json.dumps(cfg))
    return run


def test_missing_data_says_why_in_the_data_sections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fer_core.report import analysis

    monkeypatch.delenv("FER_DATA", raising=False)
    monkeypatch.setattr(analysis, "FILTERS", 4)  # the ascent needs no data; keep this test quick
    monkeypatch.setattr(analysis, "ASCENT_STEPS", 6)
    run = _run_without_data(tmp_path)
    seen: list[float] = []
    html = build_report(run, progress=lambda f, m: seen.append(f))
    assert seen == sorted(seen) and seen[0] == 0.0 and seen[-1] == 1.0
    s = _sections(html)
    assert list(s) == [k for k, _ in SECTION_TITLES]
    assert "This section failed" not in html
    for key in ("confusion", "saliency", "filters"):
        assert any("fer2013_elsewhere.npz, which is not on this machine" in w for w in _why(s[key])), key
    assert "<img" in s["confusion"] and "is predicted as" in s["confusion"]  # stored predictions still count
    assert "<img" in s["filters"]  # gradient ascent needs no faces
    for key in ("summary", "architecture", "history", "math"):
        assert not _why(s[key]), (key, _why(s[key]))


@pytest.fixture(scope="module")
def predictions_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A predictions-only run (imported CSV of probabilities, no model)."""
    import pandas as pd

    from fer_core.data.spec import open_dataset

    root = tmp_path_factory.mktemp("preds_runs")
    faces = open_dataset(DATA, val_fraction=0.1, seed=0)
    test = np.flatnonzero(faces.split == "test")
    p = np.random.default_rng(0).dirichlet(np.ones(7) * 0.3, size=len(test))
    df = pd.DataFrame(p, columns=list(EMOTIONS))
    df.insert(0, "row", faces.row[test])
    df.insert(1, "label", [EMOTIONS[int(v)] for v in faces.y[test]])
    df.to_csv(root / "preds.csv", index=False)
    rc, out, err = _cli("import", "--predictions", str(root / "preds.csv"), "--name", "preds", "--out",
                        str(root / "runs"), "--data", DATA)
    assert rc == 0, err
    return Path(out.strip().splitlines()[-1])


def test_predictions_only_run(predictions_run: Path) -> None:
    html = build_report(predictions_run)
    s = _sections(html)
    assert list(s) == [k for k, _ in SECTION_TITLES] and "This section failed" not in html
    for key in ("architecture", "saliency", "filters", "math"):
        assert any("predictions only" in w for w in _why(s[key])), key
    assert "is predicted as" in s["confusion"] and "<img" in s["confusion"]  # SynthFER faces regenerate
    assert "BatchNorm backward" in s["math"]  # the model-independent checks are still there


def test_torchscript_import_falls_back_to_gradients(tmp_path: Path) -> None:
    """A TorchScript model cannot be hooked: no layer table / filters (said why), plain-gradient
    saliency instead of Grad-CAM."""
    import torch
    import torch.nn as nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(8 * 24 * 24, 7)).eval()
    torch.jit.trace(net, torch.zeros(1, 1, 48, 48)).save(str(tmp_path / "ts.pt"))
    rc, out, err = _cli("import", str(tmp_path / "ts.pt"), "--name", "ts", "--out", str(tmp_path / "runs"),
                        "--data", DATA)
    assert rc == 0, err
    s = _sections(build_report(Path(out.strip().splitlines()[-1])))
    assert any("TorchScript" in w for w in _why(s["architecture"]))
    assert any("TorchScript" in w for w in _why(s["filters"]))
    assert "Saliency (" in s["saliency"] and "<img" in s["saliency"] and not _why(s["saliency"])


def test_pdf_without_a_browser_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fer_core.report import pdf

    monkeypatch.setattr(pdf, "CHROMIUM", tmp_path / "no-chromium")
    rc, _, err = _cli("report", str(AUG), "--format", "pdf", "--out", str(tmp_path / "r.pdf"))
    assert rc == 2 and "needs Chromium" in err and "apt-get install" in err
    assert not (tmp_path / "r.pdf").exists()


def test_runs_page_report_button_builds_once(predictions_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Report button -> progress bar -> download button; a second click is a cache hit (and the
    progress bar, made outside the cached function, does not break its replay)."""
    from streamlit.testing.v1 import AppTest

    import fer_core.report as report

    calls: list[str] = []
    real = report.build_report

    def counting(*a, **kw):
        calls.append("build")
        return real(*a, **kw)

    monkeypatch.setattr(report, "build_report", counting)
    monkeypatch.setenv("FER_RUNS", str(predictions_run.parent))
    monkeypatch.setenv("FER_RUNS_ONLY", "1")
    monkeypatch.delenv("FER_DATA", raising=False)
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=180)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    for _ in range(2):
        at.button(key="runs_report_build").click().run()
        assert not at.exception, [e.value for e in at.exception]
        buttons = at.get("download_button")
        assert len(buttons) == 1 and "Download the report" in buttons[0].proto.label
    assert calls == ["build"]


# --------------------------------------------------------------------------- browser
def _skip_or_fail(reason: str) -> None:
    if os.environ.get("FER_REQUIRE_BROWSER", "") == "1":
        pytest.fail(f"FER_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.mark.browser
def test_report_opens_offline_in_chromium(aug_report, tmp_path: Path) -> None:
    """The file from disk in Chromium with every request other than the file itself refused and
    recorded: none is made, none fails, every image decodes. ``FER_DOCS_SCREENSHOTS=1`` saves the
    first screen to docs/report.png (a SynthFER run: no FER2013 face may go into docs/)."""
    if not CHROMIUM.is_file():
        _skip_or_fail(f"chromium not found at {CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip_or_fail("python playwright is not installed (pip install playwright; no `playwright install`)")
    out = aug_report[0]
    url = out.resolve().as_uri()
    external, failed = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            ctx = browser.new_context(viewport={"width": 1200, "height": 900}, offline=True)
            page = ctx.new_page()

            def route(r):
                if r.request.url == url:
                    r.continue_()
                else:
                    external.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.on("requestfailed", lambda req: failed.append(req.url))
            page.goto(url, wait_until="load")
            n, broken = page.evaluate("""() => { const imgs = [...document.images];
                return [imgs.length, imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length]; }""")
            heads = page.locator("h2").all_inner_texts()
            if os.environ.get("FER_DOCS_SCREENSHOTS") == "1":
                assert "SynthFER" in page.locator("header").inner_text()
                (ROOT / "docs").mkdir(exist_ok=True)
                page.screenshot(path=str(ROOT / "docs" / "report.png"))
        finally:
            browser.close()
    assert not external, f"the report requested {external[:5]}"
    assert not failed, f"failed requests: {failed[:5]}"
    assert n == 10 and broken == 0
    assert heads == [t for _, t in SECTION_TITLES]

    from fer_core.report.pdf import html_to_pdf

    pdf = html_to_pdf(aug_report[1])
    assert pdf.startswith(b"%PDF") and len(pdf) > 50_000
