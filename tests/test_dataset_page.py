"""The Dataset page under AppTest, on a copy of a shipped SynthFER run, plus its pure helpers.

Why a copy: the page writes into the run folder (the map cache ``eval/<split>_embedding.npz`` and
the triage marks), and tests never write into the project's ``checkpoints/`` or ``runs/``. The map
is computed once for the module (the first UMAP in a process also compiles it) and then read back
from the copy's cache file by every later session.

A box/lasso drag cannot be done in AppTest, so it is simulated the way the Errors page's
confusion-cell click is: the chart's selection state (``streamlit.typing.PlotlyState``) is put
into session state under the chart's key, built exactly as Plotly reports it -- the points inside
the drawn shape, each with its trace (``curve_number``), its index in that trace and its
``customdata`` -- from the figure the page actually sent. The real mouse drag is in
``test_browser.py``.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "dashboard" / "app.py"
VIEWS = ROOT / "dashboard" / "views"
SHIPPED = "synth-cnn4-aug"
TIMEOUT = 600  # the first map of a process compiles UMAP (numba), on a shared 2-core machine


@pytest.fixture(scope="module")
def synth_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = ROOT / "checkpoints" / SHIPPED
    if not (src / "best.pt").is_file():
        pytest.skip(f"the shipped run checkpoints/{SHIPPED} is missing")
    root = tmp_path_factory.mktemp("dataset_runs")
    shutil.copytree(src, root / SHIPPED)
    for leftover in ("triage", "eval/test_embedding.npz", "eval/val_embedding.npz"):
        p = root / SHIPPED / leftover
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    return root


def _app(monkeypatch: pytest.MonkeyPatch, runs: Path) -> Any:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("FER_RUNS", str(runs))
    monkeypatch.setenv("FER_RUNS_ONLY", "1")
    monkeypatch.delenv("FER_DATA", raising=False)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    at.switch_page(str(VIEWS / "dataset.py")).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _texts(at: Any) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [x.value for x in at.info] + [x.value for x in at.warning] + [x.value for x in at.error]
    return "\n".join(str(p) for p in parts)


def _npz(run: Path, split: str = "test") -> dict[str, np.ndarray]:
    with np.load(run / "eval" / f"{split}.npz") as z:
        return {k: z[k] for k in z.files}


def _arr(v: Any) -> np.ndarray:
    """A Plotly JSON array: a list, or plotly's base64 typed array ``{"dtype", "bdata"}``."""
    if isinstance(v, dict) and "bdata" in v:
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
    return np.asarray(v)


def _map_traces(at: Any) -> list[dict[str, Any]]:
    charts = [c for c in at.get("plotly_chart") if '"dragmode":"select"' in c.proto.spec.replace(" ", "")]
    assert len(charts) == 1, "one embedding map on the page"
    spec = json.loads(charts[0].proto.spec)
    return [{"x": _arr(t["x"]).astype(float), "y": _arr(t["y"]).astype(float), "custom": t["customdata"]}
            for t in spec["data"]]


def _lasso(at: Any, x0: float, x1: float, y0: float, y1: float) -> list[int]:
    """Select, as Plotly would for a lasso drawn along the rectangle's border, every point of the
    map inside it; returns the selected faces' row ids."""
    from streamlit.typing import PlotlyState

    points, rows = [], []
    for c, t in enumerate(_map_traces(at)):
        inside = np.flatnonzero((t["x"] >= x0) & (t["x"] <= x1) & (t["y"] >= y0) & (t["y"] <= y1))
        for i in inside:
            points.append({"curve_number": c, "point_number": int(i), "point_index": int(i),
                           "x": float(t["x"][i]), "y": float(t["y"][i]), "customdata": t["custom"][i]})
            rows.append(int(t["custom"][i][1]))
    at.session_state["ds_map"] = PlotlyState({"selection": {
        "points": points, "point_indices": sorted({p["point_index"] for p in points}), "box": [],
        "lasso": [{"x": [x0, x1, x1, x0], "y": [y0, y0, y1, y1]}]}})
    return rows


def _gallery_rows(at: Any) -> list[int]:
    caps = [c for im in at.container(key="ds_gal_faces").image for c in im.captions]
    return [int(c.split(" · ")[0].removeprefix("row ")) for c in caps]


# --------------------------------------------------------------------------- pure helpers
def test_selection_positions_maps_trace_points_to_faces() -> None:
    from fer_core.gallery import selection_positions

    curves = [np.array([4, 7, 9]), np.array([0, 2]), np.array([5])]
    sel = {"points": [{"curve_number": 0, "point_index": 2}, {"curve_number": 1, "point_index": 0},
                      {"curve_number": 0, "point_index": 2}, {"curve_number": 2, "point_number": 0},
                      {"curve_number": 3, "point_index": 0}, {"curve_number": 1, "point_index": 5}]}
    np.testing.assert_array_equal(selection_positions(sel, curves), [0, 5, 9])
    assert selection_positions(None, curves).size == 0
    assert selection_positions({"points": [], "box": [{"x": [0, 1], "y": [0, 1]}]}, curves).size == 0


def test_issue_sort_and_colour_groups() -> None:
    from dashboard.views.dataset import colour_groups
    from fer_core.evaluate import ferplus_top_vote
    from fer_core.gallery import order_positions
    from fer_core.rundata import Predictions

    probs = np.full((5, 3), 1 / 3, np.float32)
    labels = np.array([0, 1, 2, 1, 0])
    scores = np.array([0.1, 0.9, np.nan, 0.5, 0.9])
    pos = np.arange(5)
    np.testing.assert_array_equal(order_positions(pos, probs, labels, None, "issue", scores=scores), [1, 4, 3, 0, 2])
    with pytest.raises(ValueError, match="scores"):
        order_positions(pos, probs, labels, None, "issue")

    votes = np.array([[5, 3, 0, 0, 0, 0, 0, 0, 0, 2], [4, 4, 0, 0, 0, 0, 0, 0, 0, 0],
                      [0] * 10, [0, 0, 0, 0, 0, 0, 0, 0, 0, 9], [1, 0, 6, 0, 0, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(ferplus_top_vote(votes), [0, -1, -1, 9, 2])
    pred = Predictions(split="test", index=pos, row=pos + 100, label=np.array([0, 1, 2, 1, -1]), probs=probs,
                       pred=np.array([0, 2, 2, 1, 0]), metrics={}, source="t", ferplus_votes=votes)
    groups = colour_groups("true", pred, ("a", "b", "c"), None)
    assert [(g[0], list(g[1])) for g in groups] == [("a", [0]), ("b", [1, 3]), ("c", [2]), ("unlabeled", [4])]
    groups = colour_groups("correct", pred, ("a", "b", "c"), None)
    assert [(g[0], list(g[1])) for g in groups] == [("correct", [0, 2, 3]), ("wrong", [1, 4])]
    groups = colour_groups("ferplus", pred, ("a", "b", "c"), None)
    assert [(g[0], list(g[1])) for g in groups] == [("neutral", [0]), ("surprise", [4]), ("NF", [3]),
                                                    ("no majority (tie)", [1, 2])]
    groups = colour_groups("issue", pred, ("a", "b", "c"), scores)
    assert [(g[0], list(g[1])) for g in groups] == [("label-issue score", [0, 1, 3, 4]), ("no label", [2])]


# --------------------------------------------------------------------------- the page
def test_page_renders_a_synthfer_run(synth_runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = synth_runs / SHIPPED
    at = _app(monkeypatch, synth_runs)
    assert at.selectbox(key="ds_run").value == str(run)
    assert at.selectbox(key="ds_split").value == "test"
    text = _texts(at)
    assert "UMAP of the penultimate layer" in text and "SynthFER" in text, text[:800]
    assert "held out from this run's training" in text
    cache = run / "eval" / "test_embedding.npz"
    assert cache.is_file(), "the map is cached in the run"
    with np.load(cache, allow_pickle=False) as z:
        assert z["xy"].shape == (len(_npz(run)["label"]), 2)
    traces = _map_traces(at)
    assert sum(len(t["x"]) for t in traces) == len(_npz(run)["label"])
    # no selection: the gallery shows cleanlab's flagged faces, most suspicious first
    assert any(m.value.startswith("#### No selection: the ") and "flagged" in m.value for m in at.markdown)
    assert at.selectbox(key="ds_gal_sort").value == "issue"
    assert len(_gallery_rows(at)) == 36
    # the inspector: the face and its saliency map for the predicted class
    caps = [c for im in at.container(key="ds_face_faces").image for c in im.captions]
    assert caps[0] == "the face" and caps[1].startswith("Saliency for "), caps

    # every colouring renders; the k-fold ranking says where its probabilities come from
    for colour in ("pred", "correct", "issue", "ferplus"):
        at.selectbox(key="ds_colour").set_value(colour).run()
        assert not at.exception, (colour, [e.value for e in at.exception])
    assert "no FER+ votes" in _texts(at)
    at.toggle(key="ds_kfold").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "k-fold cross-validation" in _texts(at)


def test_lasso_selection_shows_exactly_those_faces(synth_runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _app(monkeypatch, synth_runs)
    xy = np.concatenate([np.stack([t["x"], t["y"]], 1) for t in _map_traces(at)])
    # a window around a point of the map holding between 5 and 36 faces (one gallery page)
    centre = xy[np.argsort(xy[:, 0])[len(xy) // 3]]
    for half in np.linspace(0.05, 3.0, 60):
        n = int((np.abs(xy - centre) <= half).all(1).sum())
        if n >= 5:
            break
    assert 5 <= n <= 36, n
    want = _lasso(at, centre[0] - half, centre[0] + half, centre[1] - half, centre[1] + half)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(m.value.startswith(f"#### {len(want)} faces selected on the map") for m in at.markdown)
    assert sorted(_gallery_rows(at)) == sorted(want)
    at.selectbox(key="ds_gal_sort").set_value("row").run()
    assert _gallery_rows(at) == sorted(want)

    # a smaller selection (around a face of the map, so it is never empty) replaces it
    q = half / 4
    small = _lasso(at, centre[0] - q, centre[0] + q, centre[1] - q, centre[1] + q)
    at.run()
    assert 1 <= len(small) < len(want) or len(small) == len(want) == 5
    assert _gallery_rows(at) == sorted(small)


def test_triage_marks_survive_rerun_and_new_session_and_export(synth_runs: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from fer_core.dataset.triage import TriageStore

    run = synth_runs / SHIPPED
    shutil.rmtree(run / "triage", ignore_errors=True)
    pred = _npz(run)
    classes = json.loads((run / "config.json").read_text())["classes"]
    at = _app(monkeypatch, synth_runs)
    at.selectbox(key="ds_gal_sort").set_value("row").run()
    rows = _gallery_rows(at)
    pos_of = {int(r): i for i, r in enumerate(pred["row"])}
    a, b = pos_of[rows[0]], pos_of[rows[1]]

    # inspect face a, mark it "wrong label -> X"
    at.button(key=f"ds_gal_inspect_{a}").click().run()
    assert any(m.value.startswith(f"#### row {pred['row'][a]}:") for m in at.markdown)
    label = classes[int(pred["label"][a])]
    new = next(c for c in classes if c != label)
    at.selectbox(key="ds_face_new_label").set_value(new).run()
    at.button(key="ds_face_wrong").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert f"Row {pred['row'][a]} marked: wrong label {label} → {new}." in [s.value for s in at.success]
    # then face b as "not a face"
    at.button(key=f"ds_gal_inspect_{b}").click().run()
    at.button(key="ds_face_notface").click().run()
    at.run()  # a plain rerun keeps both marks
    caps = [c for im in at.container(key="ds_gal_faces").image for c in im.captions]
    assert f"✎ wrong label {label} → {new}" in caps[0] and "✎ not a face" in caps[1], caps[:2]

    # a new session reads them back from the run folder
    at2 = _app(monkeypatch, synth_runs)
    assert [m.value for m in at2.metric][:4] == ["2", "1", "1", "0"]
    table = at2.container(key="ds_marks_box").dataframe[0].value
    assert sorted(table["row"]) == sorted([int(pred["row"][a]), int(pred["row"][b])])
    assert at2.get("download_button"), "the CSV download"
    export = pd.read_csv(io.StringIO(TriageStore(run).export_csv()))
    assert list(export["row"]) == sorted([int(pred["row"][a]), int(pred["row"][b])])
    by_row = export.set_index("row")
    assert by_row.loc[int(pred["row"][a]), "kind"] == "wrong_label"
    assert by_row.loc[int(pred["row"][a]), "new_label"] == new
    assert by_row.loc[int(pred["row"][b]), "kind"] == "not_face"
    assert by_row.loc[int(pred["row"][b]), "index"] == int(pred["index"][b])

    # undo takes the last mark back
    at2.button(key="ds_undo").click().run()
    assert [m.value for m in at2.metric][:4] == ["1", "1", "0", "0"]
    assert [m["row"] for m in TriageStore(run).marks()] == [int(pred["row"][a])]


def test_errors_gallery_sorts_by_label_issue_score(synth_runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fer_core.dataset.label_issues import rank_label_issues

    run = synth_runs / SHIPPED
    pred = _npz(run)
    issues = rank_label_issues(pred["label"], pred["probs"])
    at = _app(monkeypatch, synth_runs)
    at.switch_page(str(VIEWS / "errors.py")).run()
    at.selectbox(key="err_gal_sort").set_value("issue").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "held out from this run's training" in _texts(at)
    caps = at.image[0].captions
    shown = [int(c.split(" · ")[0].removeprefix("row ")) for c in caps]
    pos_of = {int(r): i for i, r in enumerate(pred["row"])}
    scores = [issues.score[pos_of[r]] for r in shown]
    assert scores == sorted(scores, reverse=True)
    assert all(f"issue {s:.2f}" in c for s, c in zip(scores, caps))


def test_errors_gallery_marks_a_face_into_the_same_store(synth_runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Triage from the Errors page's cell gallery lands in the run's marks, which the Dataset page lists."""
    from fer_core.dataset.triage import TriageStore

    run = synth_runs / SHIPPED
    shutil.rmtree(run / "triage", ignore_errors=True)
    pred = _npz(run)
    at = _app(monkeypatch, synth_runs)
    at.switch_page(str(VIEWS / "errors.py")).run()
    assert not at.exception, [e.value for e in at.exception]
    caps = at.image[0].captions
    row = int(caps[0].split(" · ")[0].removeprefix("row "))
    at.selectbox(key="err_pick").set_value(row).run()
    assert any(m.value.startswith(f"#### row {row}:") for m in at.markdown)
    at.button(key="err_face_ambiguous").click().run()
    assert not at.exception, [e.value for e in at.exception]
    marks = TriageStore(run).marks()
    assert [(m["row"], m["kind"]) for m in marks] == [(row, "ambiguous")]
    at.switch_page(str(VIEWS / "dataset.py")).run()
    table = at.container(key="ds_marks_box").dataframe[0].value
    assert list(table["row"]) == [row]
