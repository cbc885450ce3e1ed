"""Dashboard pages under Streamlit's AppTest, on tiny runs this module trains itself.

Why AppTest: it runs the real scripts (app.py + a page) in-process, fast, without a browser. It
cannot click a chart, so a confusion-cell click is simulated by putting the chart's selection
state (``streamlit.typing.PlotlyState``) into session state under the chart's key -- exactly what
the frontend sends on a click; the real mouse click is proven in ``test_browser.py``.

``FER_RUNS_ONLY=1`` keeps the shipped ``checkpoints/`` and the user's ``runs/`` out of the lists,
so the assertions only see these runs.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "dashboard" / "app.py"
VIEWS = ROOT / "dashboard" / "views"
DATA = "synthetic:n=700"
TIMEOUT = 180


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 1-epoch cnn4 runs on 700 synthetic faces (A: normalised + basic aug, B: neither),
    both evaluated on test; A also on val. Takes a few seconds."""
    from fer_core.data.spec import open_dataset
    from fer_core.evaluate import evaluate_run
    from fer_core.train import TrainConfig, fit

    root = tmp_path_factory.mktemp("dash_runs")
    faces = open_dataset(DATA)
    for name, kw in (("run_a", {}), ("run_b", {"aug": "none", "normalize": False})):
        cfg = TrainConfig(data=DATA, model="cnn4", epochs=1, batch_size=64, threads=2, **kw)
        run = fit(cfg, run_dir=root / name, faces=faces)
        evaluate_run(run, split="test", faces=faces)
    evaluate_run(root / "run_a", split="val", faces=faces)
    return root


def _app(monkeypatch: pytest.MonkeyPatch, runs: Path | str) -> Any:
    """The app on the runs under ``runs`` (one folder, or several joined by ``os.pathsep``)."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("FER_RUNS", str(runs))
    monkeypatch.setenv("FER_RUNS_ONLY", "1")
    monkeypatch.delenv("FER_DATA", raising=False)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _page(at: Any, name: str) -> Any:
    at.switch_page(str(VIEWS / f"{name}.py")).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _select_cell(at: Any, i: int, j: int, k: int = 7) -> None:
    from streamlit.typing import PlotlyState

    from fer_core.labels import EMOTIONS

    at.session_state["err_cm"] = PlotlyState({"selection": {
        "points": [{"curve_number": 1, "point_number": i * k + j, "point_index": i * k + j,
                    "x": EMOTIONS[j], "y": EMOTIONS[i]}],
        "point_indices": [i * k + j], "box": [], "lasso": []}})


def _texts(at: Any) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [x.value for x in at.info] + [x.value for x in at.warning]
    return "\n".join(str(p) for p in parts)


def _npz(run: Path, split: str = "test") -> dict[str, np.ndarray]:
    with np.load(run / "eval" / f"{split}.npz") as z:
        return {k: z[k] for k in z.files}


# --------------------------------------------------------------------------- every page renders
def test_every_page_renders(tiny_runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _app(monkeypatch, tiny_runs)
    # Runs (the default page): both (user's) runs selected by default, newest first (run_b was
    # trained last), curves and tables drawn.
    assert at.multiselect(key="runs_select").value == [str(tiny_runs / "run_b"), str(tiny_runs / "run_a")]
    charts = at.get("plotly_chart")
    assert len(charts) >= 3  # loss, accuracy, per-class
    cfg = at.container(key="runs_config_box").dataframe[0].value
    assert "train.aug" in cfg.index and "train.normalize" in cfg.index
    assert "model" not in cfg.index  # same in both runs: hidden by "only the keys that differ"
    at.slider(key="runs_smooth").set_value(0.5).run()
    at.radio(key="runs_x").set_value("wall time").run()
    assert not at.exception

    _page(at, "errors")
    assert at.selectbox(key="err_run").value == str(tiny_runs / "run_a")
    assert "synthetic" in _texts(at)
    assert at.image, "the default cell's gallery should show faces"
    at.selectbox(key="err_split").set_value("val").run()
    assert not at.exception

    _page(at, "model")
    assert at.container(key="model_layers_box").dataframe[0].value["layer"].size > 5
    assert len(at.latex) >= 4
    assert "max |hand − autograd|" in " ".join(m.label for m in at.metric)
    at.number_input(key="conv_k").set_value(5).run()
    assert not at.exception
    at.radio(key="model_src").set_value("run").run()
    assert not at.exception and at.container(key="model_layers_box").dataframe[0].value["layer"].size > 5


def test_empty_runs_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    at = _app(monkeypatch, empty)
    for page in ("runs", "errors", "model"):
        if page != "runs":
            _page(at, page)
        if page == "model":
            at.radio(key="model_src").set_value("run").run()
        assert not at.exception
        assert any("No runs found" in i.value and "fer_core train" in i.value for i in at.info), page


def _touch(run: Path, age_s: float) -> None:
    """Make the run look last written ``age_s`` seconds ago (its config and metrics)."""
    t = time.time() - age_s
    for name in ("config.json", "metrics.csv"):
        os.utime(run / name, (t, t))


def test_runs_page_defaults_to_the_users_runs(tiny_runs: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Someone who trained a model opens the dashboard to see it: their own runs are selected,
    newest first, a run still training included and marked; the shipped ones only otherwise."""
    shipped = ROOT / "checkpoints"
    mine = tmp_path / "mine"
    for name, src in (("older", "run_a"), ("newer", "run_b"), ("live", "run_a")):
        shutil.copytree(tiny_runs / src, mine / name)
    cfg_path = mine / "live" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["finished"] = False
    cfg["train"]["epochs"] = 5
    cfg_path.write_text(json.dumps(cfg))
    _touch(mine / "older", 3000)
    _touch(mine / "newer", 2000)
    _touch(mine / "live", 0)

    at = _app(monkeypatch, os.pathsep.join([str(shipped), str(mine)]))
    select = at.multiselect(key="runs_select")
    assert select.value == [str(mine / n) for n in ("live", "newer", "older")]
    assert any(o.startswith("mine/live") and "training…" in o for o in select.options), select.options
    assert any(o.startswith("checkpoints/") for o in select.options)  # offered, not selected

    at = _app(monkeypatch, shipped)
    want = sorted(str(p.parent) for p in shipped.glob("*/config.json"))
    assert len(want) > 1 and at.multiselect(key="runs_select").value == want


def test_one_model_object_per_checkpoint(tiny_runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every page of one run shares ONE LoadedRun (model, preprocessing, lock): visiting them all
    loads the checkpoint once, not once per page or per cached function."""
    import streamlit as st

    from fer_core.model import LoadedRun

    st.cache_resource.clear()
    st.cache_data.clear()
    built: Counter[Path] = Counter()
    real_init = LoadedRun.__init__

    def counting_init(self: LoadedRun, run: Any, *args: Any, **kwargs: Any) -> None:
        built[Path(run).resolve()] += 1
        real_init(self, run, *args, **kwargs)

    monkeypatch.setattr(LoadedRun, "__init__", counting_init)
    run = str(tiny_runs / "run_a")
    at = _app(monkeypatch, tiny_runs)  # Runs
    at.query_params["run"] = "run_a"
    _page(at, "errors")
    assert at.selectbox(key="err_run").value == run
    at.toggle(key="err_gal_xp").set_value(True).run()  # maps under the faces need the model
    assert not at.exception, [e.value for e in at.exception]
    assert any("map [" in c for im in at.image for c in im.captions), _texts(at)
    _page(at, "explain")
    assert at.selectbox(key="xp_run").value == run
    _page(at, "filters")
    assert at.selectbox(key="fv_run").value == run
    _page(at, "live")
    if at.selectbox(key="live_run").value != run:
        at.selectbox(key="live_run").set_value(run).run()
    _page(at, "model")
    at.radio(key="model_src").set_value("run").run()
    if at.selectbox(key="model_run").value != run:
        at.selectbox(key="model_run").set_value(run).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.container(key="model_layers_box").dataframe[0].value["layer"].size > 5
    assert built[Path(run).resolve()] == 1, built
    assert set(built.values()) == {1}, built  # no other run's model was loaded twice either


def test_running_run_is_marked_and_rereads_metrics(tiny_runs: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A run still training is flagged (its curves sit in a timed fragment) and new epochs show up
    without restarting the app: metrics are cached by file mtime, not forever."""
    runs = tmp_path / "runs"
    shutil.copytree(tiny_runs / "run_a", runs / "live")
    cfg_path = runs / "live" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["finished"] = False
    cfg["train"]["epochs"] = 5
    cfg_path.write_text(json.dumps(cfg))
    at = _app(monkeypatch, runs)
    assert any("training now" in c.value for c in at.caption)
    summary = at.container(key="runs_summary_box").dataframe[0].value
    assert int(summary.loc[0, "epochs"]) == 1
    metrics = runs / "live" / "metrics.csv"
    last = metrics.read_text().strip().splitlines()[-1].split(",")
    last[0] = "2"
    metrics.write_text(metrics.read_text() + ",".join(last) + "\n")
    at.run()
    assert int(at.container(key="runs_summary_box").dataframe[0].value.loc[0, "epochs"]) == 2


# --------------------------------------------------------------------------- errors page
def test_cell_click_shows_that_cells_faces(tiny_runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fer_core.labels import EMOTIONS

    pred = _npz(tiny_runs / "run_a")
    k = len(EMOTIONS)
    cm = np.bincount(pred["label"] * k + pred["pred"], minlength=k * k).reshape(k, k)
    # a populated off-diagonal cell if there is one, else the biggest cell
    off = [(int(cm[i, j]), (i, j)) for i in range(k) for j in range(k) if i != j and cm[i, j]]
    i, j = max(off)[1] if off else np.unravel_index(int(cm.argmax()), cm.shape)

    at = _page(_app(monkeypatch, tiny_runs), "errors")
    at.selectbox(key="err_gal_sort").set_value("row").run()
    _select_cell(at, int(i), int(j))
    at.run()
    assert not at.exception, [e.value for e in at.exception]

    want = np.flatnonzero((pred["label"] == i) & (pred["pred"] == j))
    head = [m.value for m in at.markdown if m.value.startswith("#### true")]
    assert head == [f"#### true **{EMOTIONS[i]}** → predicted **{EMOTIONS[j]}**: {len(want)} faces "
                    f"({'correctly classified' if i == j else 'misclassified'}) · *synthetic (SynthFER)*"]
    rows = np.sort(pred["row"][want])[:36]
    captions = at.image[0].captions
    assert len(captions) == len(rows)
    for cap, row, pos in zip(captions, rows, want[np.argsort(pred["row"][want])][:36]):
        p = pred["probs"][pos]
        assert cap.startswith(f"row {row} · {EMOTIONS[j]} {p[j]:.2f} · p({EMOTIONS[i]})={p[i]:.2f}"), cap

    # Sorting by "likely mislabeled" puts the lowest true-class probability first.
    at.selectbox(key="err_gal_sort").set_value("mislabel").run()
    first = at.image[0].captions[0]
    lowest = want[np.argmin(pred["probs"][want, i])]
    assert first.startswith(f"row {pred['row'][lowest]} "), first

    # A diagonal cell shows the correctly classified faces of that class.
    d = int(np.argmax(np.diag(cm)))
    _select_cell(at, d, d)
    at.run()
    n_diag = int(cm[d, d])
    assert any(m.value.startswith(f"#### true **{EMOTIONS[d]}** → predicted **{EMOTIONS[d]}**: {n_diag} faces "
                                  "(correctly classified)") for m in at.markdown)
    assert len(at.image[0].captions) == min(36, n_diag)


def test_paging_keeps_predictions_cached(tiny_runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Changing the gallery's page or sort must not reload predictions or faces."""
    import fer_core.data.spec as spec
    import fer_core.rundata as rundata

    at = _page(_app(monkeypatch, tiny_runs), "errors")
    _select_cell(at, 3, 3)  # happy, the biggest class
    at.run()
    calls: list[str] = []
    real_npz, real_open = rundata.read_predictions, spec.open_dataset
    real_compute = rundata.RunData.compute_predictions
    monkeypatch.setattr(rundata, "read_predictions", lambda *a, **k: calls.append("npz") or real_npz(*a, **k))
    monkeypatch.setattr(spec, "open_dataset", lambda *a, **k: calls.append("faces") or real_open(*a, **k))
    monkeypatch.setattr(rundata.RunData, "compute_predictions",
                        lambda *a, **k: calls.append("compute") or real_compute(*a, **k))
    at.selectbox(key="err_gal_sort").set_value("confidence").run()
    page = at.number_input(key="err_gal_page")
    if page.max > 1:
        page.set_value(2).run()
        assert at.image[0].captions, "page 2 shows faces"
    assert not at.exception
    assert calls == []


def test_difference_matrix_is_b_minus_a(tiny_runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fer_core.evaluate import confusion_matrix

    at = _page(_app(monkeypatch, tiny_runs), "errors")
    at.selectbox(key="err_run_b").set_value(str(tiny_runs / "run_b")).run()
    assert not at.exception, [e.value for e in at.exception]
    a, b = _npz(tiny_runs / "run_a"), _npz(tiny_runs / "run_b")
    cm_a, cm_b = confusion_matrix(a["label"], a["pred"], 7), confusion_matrix(b["label"], b["pred"], 7)
    shown = at.container(key="err_diff_box").dataframe[0].value.to_numpy()
    np.testing.assert_array_equal(shown, cm_b - cm_a)

    a_right_b_wrong = int(((a["pred"] == a["label"]) & (b["pred"] != b["label"])).sum())
    radio = at.radio(key="err_flip_kind")
    assert radio.value == "a_right_b_wrong"
    if a_right_b_wrong:
        caps = at.image[-1].captions
        assert len(caps) == min(36, a_right_b_wrong)
        assert all(" · A: " in c for c in caps)
    radio.set_value("a_wrong_b_right").run()
    assert not at.exception


def test_compare_refuses_different_data(tiny_runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = tmp_path / "runs"
    shutil.copytree(tiny_runs, runs)
    cfg_path = runs / "run_b" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["data"] = "synthetic:n=800"
    cfg_path.write_text(json.dumps(cfg))
    at = _page(_app(monkeypatch, runs), "errors")
    at.selectbox(key="err_run_b").set_value(str(runs / "run_b")).run()
    assert not at.exception
    assert any("different data" in i.value for i in at.info)


# --------------------------------------------------------------------------- broken runs
def test_broken_runs_show_a_message(tiny_runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = tmp_path / "runs"
    shutil.copytree(tiny_runs, runs)
    (runs / "run_b" / "metrics.csv").write_text("epoch,time_s\n1,oops,\x00\x01\n\"unterminated\n")
    shutil.copytree(runs / "run_a", runs / "no_ckpt")
    for f in ("best.pt", "last.pt"):
        (runs / "no_ckpt" / f).unlink()
    (runs / "no_ckpt" / "eval" / "val.npz").unlink()
    (runs / "no_ckpt" / "eval" / "val.json").unlink()
    (runs / "bad_config").mkdir()
    (runs / "bad_config" / "config.json").write_text("{not json")

    at = _app(monkeypatch, runs)  # Runs page, everything selected by default
    at.multiselect(key="runs_select").set_value([str(runs / n) for n in ("bad_config", "no_ckpt", "run_a", "run_b")]).run()
    assert not at.exception, [e.value for e in at.exception]
    warnings = " ".join(w.value for w in at.warning)
    assert "metrics.csv" in warnings and "corrupt" in warnings
    assert "no checkpoint" in warnings
    assert "not valid JSON" in warnings
    assert at.get("plotly_chart"), "the healthy runs' curves still show"

    at = _page(at, "errors")
    at.selectbox(key="err_run").set_value(str(runs / "no_ckpt")).run()
    assert not at.exception
    assert "no checkpoint" in " ".join(w.value for w in at.warning)
    assert at.image, "stored predictions still give a gallery without a checkpoint"
    at.selectbox(key="err_split").set_value("val").run()  # no npz, no checkpoint: say why
    assert not at.exception
    assert any("no checkpoint" in i.value for i in at.info)
    at.selectbox(key="err_run").set_value(str(runs / "run_b")).run()
    assert not at.exception and at.get("plotly_chart")

    at = _page(at, "model")
    at.radio(key="model_src").set_value("run").run()
    at.selectbox(key="model_run").set_value(str(runs / "no_ckpt")).run()
    assert not at.exception
    assert any("checkpoint" in w.value for w in at.warning)


def test_missing_data_file_is_said_plainly(tiny_runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run trained on a file that is not here: stored metrics still show, faces need the path."""
    runs = tmp_path / "runs"
    shutil.copytree(tiny_runs / "run_a", runs / "fer_run")
    cfg_path = runs / "fer_run" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["data"] = cfg["train"]["data"] = "/nonexistent/fer2013.csv"
    cfg["synthetic"] = False
    cfg_path.write_text(json.dumps(cfg))
    at = _page(_app(monkeypatch, runs), "errors")
    assert not at.exception
    assert any("not on this machine" in i.value and "FER2013 data path" in i.value for i in at.info)
    assert at.get("plotly_chart") and not at.image
    at.text_input(key="fer_data_path").set_value("/also/missing.csv").run()
    assert not at.exception
    assert any("does not exist either" in i.value for i in at.info)


# --------------------------------------------------------------------------- pure helpers
def test_gallery_helpers() -> None:
    from fer_core.gallery import (cell_from_selection, cell_positions, comparable, default_cell,
                                  difference_matrix, differing_keys, ema, flip_positions,
                                  order_positions, page_bounds, row_normalize)

    classes = ("a", "b", "c")
    assert cell_from_selection(None, classes) is None
    assert cell_from_selection({"points": []}, classes) is None
    assert cell_from_selection({"points": [{"x": "c", "y": "b", "point_index": 0}]}, classes) == (1, 2)
    assert cell_from_selection({"points": [{"point_index": 7, "curve_number": 1}]}, classes, 1) == (2, 1)
    assert cell_from_selection({"points": [{"point_index": 7, "curve_number": 0}]}, classes, 1) is None

    labels = np.array([0, 0, 1, 1, 2, 2])
    preds = np.array([0, 1, 1, 0, 2, 1])
    probs = np.array([[.9, .1, 0], [.4, .6, 0], [.2, .8, 0], [.7, .3, 0], [0, .1, .9], [0, .55, .45]])
    np.testing.assert_array_equal(cell_positions(labels, preds, 0, 1), [1])
    rows = np.array([50, 40, 30, 20, 10, 0])
    pos = np.arange(6)
    np.testing.assert_array_equal(order_positions(pos, probs, labels, rows, "row"), [5, 4, 3, 2, 1, 0])
    assert order_positions(pos, probs, labels, rows, "confidence")[0] in (0, 4)
    assert order_positions(pos, probs, labels, rows, "mislabel")[0] == 3  # p(true)=0.3, lowest
    assert page_bounds(100, 3, 36) == (72, 100, 3) and page_bounds(0, 5, 36) == (0, 0, 1)
    cm = np.array([[5, 2, 0], [1, 7, 3], [0, 0, 0]])
    assert default_cell(cm) == (1, 2)
    np.testing.assert_allclose(row_normalize(cm)[1], [100 / 11, 700 / 11, 300 / 11])
    np.testing.assert_array_equal(difference_matrix(cm, cm.T), cm.T - cm)
    f = flip_positions(labels, preds, np.array([1, 1, 1, 1, 2, 2]))
    np.testing.assert_array_equal(f["a_right_b_wrong"], [0])
    np.testing.assert_array_equal(f["a_wrong_b_right"], [3, 5])
    assert differing_keys([{"a": 1, "t": {"lr": 1}}, {"a": 1, "t": {"lr": 2}, "z": 0}]) == ["t.lr", "z"]
    np.testing.assert_allclose(ema([1.0, 1.0, 1.0], 0.9), [1.0, 1.0, 1.0])
    assert comparable({"data": "x"}, {"data": "y"}, "test")
    assert comparable({"data": "x", "train": {"seed": 0}}, {"data": "x", "train": {"seed": 1}}, "val")
    assert comparable({"data": "x", "train": {"seed": 0}}, {"data": "x", "train": {"seed": 1}}, "test") is None


def test_users_copy_is_matched_by_row_id(tiny_runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run whose data is not here, browsed with the user's own copy in another order/layout:
    faces are joined on the dataset row id, so the gallery shows the right faces."""
    from fer_core.data.spec import open_dataset
    from fer_core.labels import EMOTIONS

    faces = open_dataset(DATA)
    perm = np.random.default_rng(1).permutation(len(faces))
    usage = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
    copy = tmp_path / "my_fer2013.npz"
    np.savez(copy, x=faces.x.numpy()[perm], y=faces.y.numpy()[perm], row=faces.row[perm],
             usage=np.array([usage[s] for s in faces.split[perm]]))
    runs = tmp_path / "runs"
    shutil.copytree(tiny_runs / "run_a", runs / "fer_run")
    cfg_path = runs / "fer_run" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["data"] = "/nonexistent/fer2013.csv"
    cfg["synthetic"] = False
    cfg_path.write_text(json.dumps(cfg))

    # the join itself: every stored prediction gets its own face back
    from fer_core.rundata import RunData, open_faces, resolve_data

    pred = _npz(runs / "fer_run")
    data = resolve_data(cfg, str(copy))
    assert data.spec == str(copy) and "row id" in (data.note or "")
    rd = RunData(runs / "fer_run", str(copy))
    stored = rd.stored_predictions("test")
    got = open_faces(rd.data)
    pos = rd.aligned(stored, got)  # raises DataUnavailable when the faces cannot be matched
    np.testing.assert_array_equal(got.x.numpy()[pos], faces.x.numpy()[pred["index"]])

    # and through the page
    monkeypatch.setenv("FER_DATA", str(copy))
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("FER_RUNS", str(runs))
    monkeypatch.setenv("FER_RUNS_ONLY", "1")
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    at = _page(at, "errors")
    k = len(EMOTIONS)
    d = int(np.argmax(np.bincount(pred["label"] * k + pred["pred"], minlength=k * k)[:: k + 1]))
    _select_cell(at, d, d)
    at.selectbox(key="err_gal_sort").set_value("row").run()
    assert not at.exception, [e.value for e in at.exception]
    want = np.sort(pred["row"][(pred["label"] == d) & (pred["pred"] == d)])[:36]
    caps = at.image[0].captions
    assert [int(c.split(" ")[1]) for c in caps] == want.tolist()
