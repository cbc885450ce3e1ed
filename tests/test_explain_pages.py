"""AppTest for the Explain and Filters pages on a tiny run (untrained small cnn4 on SynthFER).

The pages are run through a two-line wrapper script (project root on ``sys.path``, then the page
file as ``__main__``), so they are tested exactly as ``st.Page`` runs them without needing
``app.py``. ``FER_RUNS_ONLY`` restricts the dashboard to the temporary run folder.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 240  # seconds per script run: generous, the CI machine is shared


@pytest.fixture(scope="module")
def run_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fer_core.checkpoint import atomic_write_text, save_checkpoint
    from fer_core.data.spec import open_dataset
    from fer_core.evaluate import evaluate_run
    from fer_core.labels import EMOTIONS
    from fer_core.models import create_model
    from fer_core.preprocess import Preprocess
    from fer_core.runs import write_config

    root = tmp_path_factory.mktemp("xp_runs")
    run = root / "tiny"
    run.mkdir()
    spec = "synthetic:n=240,seed=0"
    faces = open_dataset(spec)
    kwargs = {"channels": [4, 8, 8, 8], "fc": 16}
    torch.manual_seed(0)
    model = create_model("cnn4", **kwargs)
    pre = Preprocess.fit(faces.select("train").x, normalize=True)
    config = {"model": "cnn4", "model_kwargs": kwargs, "data": spec, "preprocess": pre.to_dict(),
              "classes": list(EMOTIONS), "synthetic": True, "finished": True, "seed": 0,
              "train": {"epochs": 1, "val_fraction": 0.1, "seed": 0},
              "data_summary": {s: int((faces.split == s).sum()) for s in faces.splits}}
    write_config(run, config)
    save_checkpoint(run / "best.pt", {"state_dict": model.state_dict(), "epoch": 1, "config": config})
    atomic_write_text(run / "metrics.csv", "epoch,time_s,lr,train_loss,train_acc,val_loss,val_acc\n"
                                           "1,1.0,0.001,1.9,0.2,1.9,0.2\n")
    evaluate_run(run, split="test", faces=faces)
    return root


@pytest.fixture()
def env(run_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FER_RUNS", str(run_root))
    monkeypatch.setenv("FER_RUNS_ONLY", "1")
    return run_root


def _app(tmp_path: Path, page: str):
    from streamlit.testing.v1 import AppTest

    wrapper = tmp_path / f"run_{page}.py"
    wrapper.write_text(f"import runpy, sys\nsys.path.insert(0, {str(ROOT)!r})\n"
                       f"runpy.run_path({str(ROOT / 'dashboard' / 'views' / f'{page}.py')!r}, run_name='__main__')\n")
    return AppTest.from_file(str(wrapper), default_timeout=TIMEOUT)


def _ok(at) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _images(at) -> int:
    return len(at.get("image"))


def _texts(at) -> str:
    return " ".join(str(e.value) for kind in ("caption", "markdown", "info", "warning") for e in at.get(kind))


def test_explain_page_methods_targets_and_sanity(env: Path, tmp_path: Path) -> None:
    at = _app(tmp_path, "explain").run()
    _ok(at)
    assert _images(at) >= 24                       # a page of 24 faces with their maps
    assert "synthetic" in _texts(at).lower()
    at.session_state["xp_method"] = "gradcam"
    at.run()
    _ok(at)
    layers = at.selectbox(key="xp_layer")
    assert any("6×6" in o for o in layers.options) and any("coarse" in o for o in layers.options)
    layers.set_value("features.pool4").run()
    _ok(at)
    assert any("too coarse" in w.value for w in at.warning)
    at.session_state["xp_contrast"] = True
    at.session_state["xp_scale"] = "shared"
    at.run()
    _ok(at)
    assert "right map: true class" in _texts(at)
    at.session_state["xp_method"] = "saliency"
    at.session_state["xp_sanity"] = True
    at.run()
    _ok(at)
    assert any("Spearman" in m.label for m in at.metric)


def test_explain_page_confusion_cell_and_integrated_gradients(env: Path, tmp_path: Path) -> None:
    at = _app(tmp_path, "explain").run()
    at.session_state["xp_source"] = "cell"
    at.session_state["xp_method"] = "integrated_gradients"
    at.session_state["xp_baseline"] = "mean"
    at.session_state["xp_ig_steps"] = 8
    at.session_state["xp_cells_max"] = 4
    at.run()
    _ok(at)
    assert at.selectbox(key="xp_cell_true") is not None
    assert "mean map" in _texts(at) or "This cell is empty" in _texts(at) or "No faces here" in _texts(at)


def test_explain_page_without_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "none"
    empty.mkdir()
    monkeypatch.setenv("FER_RUNS", str(empty))
    monkeypatch.setenv("FER_RUNS_ONLY", "1")
    for page in ("explain", "filters"):
        at = _app(tmp_path, page).run()
        assert not at.exception
        assert any("No runs found" in i.value for i in at.info)


def test_upload_decoding_messages() -> None:
    import sys

    sys.path.insert(0, str(ROOT))
    from PIL import Image

    from dashboard.views.explain import decode_uploads

    png = io.BytesIO()
    Image.fromarray((np.arange(64 * 80) % 256).astype(np.uint8).reshape(64, 80)).save(png, format="PNG")
    png.name = "face.png"
    bad = io.BytesIO(b"this is not an image")
    bad.name = "notes.txt"
    faces, names, errors = decode_uploads([png, bad])
    assert faces.shape == (1, 48, 48) and faces.dtype == np.uint8 and names == ["face.png"]
    assert len(errors) == 1 and "notes.txt" in errors[0] and "not an image" in errors[0]


def test_filters_page_optimise_and_pick_layer(env: Path, tmp_path: Path) -> None:
    at = _app(tmp_path, "filters").run()
    _ok(at)
    assert "synthetic" in _texts(at).lower()
    at.number_input(key="fv_steps").set_value(3)
    at.button(key="fv_go").click().run()
    _ok(at)
    assert sum("one batch" in c.value for c in at.caption) == 2           # naive and regularised
    at.selectbox(key="fv_layer").set_value("features.conv2").run()
    _ok(at)
    assert any("features.conv2" in c.value for c in at.caption)
    at.text_input(key="fv_filters").set_value("0-3, 99").run()
    assert not at.exception
    assert any("outside" in e.value for e in at.error)


def _select_cell(at, i: int, j: int, k: int = 7) -> None:
    """What the frontend sends when a confusion-matrix cell is clicked (see test_dashboard_apptest)."""
    from streamlit.typing import PlotlyState

    from fer_core.labels import EMOTIONS

    at.session_state["err_cm"] = PlotlyState({"selection": {
        "points": [{"curve_number": 1, "point_number": i * k + j, "point_index": i * k + j,
                    "x": EMOTIONS[j], "y": EMOTIONS[i]}],
        "point_indices": [i * k + j], "box": [], "lasso": []}})


def _populated_cell(run: Path) -> tuple[int, int, int]:
    with np.load(run / "eval" / "test.npz") as z:
        labels, preds = z["label"], z["pred"]
    cm = np.bincount(labels * 7 + preds, minlength=49).reshape(7, 7)
    i, j = np.unravel_index(int(cm.argmax()), cm.shape)
    return int(i), int(j), int(cm[i, j])


def _gallery(at) -> list[str]:
    """Captions of the gallery's images (the colour bar is outside the gallery container)."""
    return at.container(key="err_gal_faces").image[0].captions


def test_errors_gallery_explain_faces(env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Errors page's opt-in overlays: every gallery face gets its map (predicted class) under
    it, from ONE batched explain call for the page, on one colour scale shared by the page."""
    import sys

    sys.path.insert(0, str(ROOT))
    from dashboard import components, resources
    from fer_core.labels import EMOTIONS

    calls: list[tuple[str, tuple[int, ...], int]] = []
    overlays: list[list[tuple[int, ...]]] = []
    real_maps, real_over = resources.attributions, components.faces_over_maps

    def spy_maps(model, faces, targets, method, opts_items=(), mean=None):
        calls.append((method, tuple(targets), len(faces)))
        return real_maps(model, faces, targets, method, opts_items, mean)

    def spy_over(faces_u8, maps, limits, **kw):
        out = real_over(faces_u8, maps, limits, **kw)
        overlays.append([im.shape for im in out])
        assert np.allclose(limits, limits[0])                      # one scale for the page
        return out

    monkeypatch.setattr(resources, "attributions", spy_maps)
    monkeypatch.setattr(components, "faces_over_maps", spy_over)

    i, j, n = _populated_cell(env / "tiny")
    with np.load(env / "tiny" / "eval" / "test.npz") as z:
        assert int(((z["label"] == i) & (z["pred"] == j)).sum()) == n
    at = _app(tmp_path, "errors").run()
    _ok(at)
    _select_cell(at, i, j)
    at.run()
    _ok(at)
    assert f"true **{EMOTIONS[i]}** → predicted **{EMOTIONS[j]}**: {n} faces" in _texts(at)
    assert at.toggle(key="err_gal_xp").value is False          # opt-in: off by default
    before = _gallery(at)
    assert len(before) == min(36, n) and not any("map [" in c for c in before)
    assert not calls

    at.toggle(key="err_gal_xp").set_value(True).run()
    _ok(at)
    assert at.selectbox(key="err_gal_xp_method").value == "saliency"
    shown = _gallery(at)
    assert len(shown) == min(36, n) and all("map [" in c for c in shown)   # each face: its map's range
    assert calls == [("saliency", tuple([j] * len(shown)), len(shown))]    # one batched call, pred class
    assert overlays[-1] == [(48 + 2 + 48, 48, 3)] * len(shown)            # face over its overlay
    bar = [c for im in at.image for c in im.captions if "one colour scale" in c]   # the colour bar
    assert len(bar) == 1 and "Saliency" in bar[0] and "values range" in bar[0]

    at.selectbox(key="err_gal_xp_method").set_value("integrated_gradients").run()
    _ok(at)
    assert calls[-1][0] == "integrated_gradients" and len(calls) == 2
    assert any(c.startswith("Integrated Gradients") for im in at.image for c in im.captions)
    assert all("map [" in c for c in _gallery(at))


def test_errors_gallery_explain_faces_without_a_model(run_root: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint that cannot be loaded: a plain warning, the faces still shown, no traceback."""
    import shutil

    root = tmp_path / "runs"
    shutil.copytree(run_root / "tiny", root / "tiny")
    (root / "tiny" / "best.pt").write_bytes(b"not a checkpoint")
    monkeypatch.setenv("FER_RUNS", str(root))
    monkeypatch.setenv("FER_RUNS_ONLY", "1")
    i, j, n = _populated_cell(root / "tiny")
    at = _app(tmp_path, "errors").run()
    _select_cell(at, i, j)
    at.session_state["err_gal_xp"] = True
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("could not be loaded" in w.value for w in at.warning)
    shown = _gallery(at)
    assert len(shown) == min(36, n) and not any("map [" in c for c in shown)


def test_model_pages_take_the_run_from_the_url(run_root: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """``?run=<folder name>`` opens the Explain/Filters pages on that run (README screenshots use it)."""
    import shutil

    root = tmp_path / "runs"
    for name in ("a-first", "b-second"):
        shutil.copytree(run_root / "tiny", root / name)
    monkeypatch.setenv("FER_RUNS", str(root))
    monkeypatch.setenv("FER_RUNS_ONLY", "1")
    for page, key in (("filters", "fv_run"), ("explain", "xp_run")):
        at = _app(tmp_path, page).run()
        _ok(at)
        assert at.selectbox(key=key).value == str(root / "a-first")
        at = _app(tmp_path, page)
        at.query_params["run"] = "b-second"
        at.run()
        _ok(at)
        assert at.selectbox(key=key).value == str(root / "b-second")


def test_model_pages_first_start_with_only_the_shipped_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user's first start (no FER_RUNS, no FER_DATA, only the shipped checkpoints/): both model
    pages open on a run whose faces this machine can show, and show them in the first render;
    the Filters page opens on the model's default feature layer, not on the first conv."""
    import sys

    sys.path.insert(0, str(ROOT))
    from fer_core.model import LoadedRun

    for var in ("FER_RUNS", "FER_RUNS_ONLY", "FER_DATA"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)                    # no ./runs of the working directory
    shipped = ROOT / "checkpoints"

    at = _app(tmp_path, "explain").run()
    _ok(at)
    run = Path(at.selectbox(key="xp_run").value)
    assert run.parent == shipped and json.loads((run / "config.json").read_text())["data"].startswith("synthetic")
    assert not any("No faces" in i.value for i in at.info)
    assert _images(at) >= 24                       # a page of faces with their maps
    assert any("range [" in c for im in at.image for c in im.captions)

    at = _app(tmp_path, "filters").run()
    _ok(at)
    run = Path(at.selectbox(key="fv_run").value)
    assert run.parent == shipped
    assert not any("No faces" in i.value or "unavailable" in i.value for i in at.info)
    model = LoadedRun(run)
    first_conv = model.feature_layers()[0].name    # cnn4's feature layers are its convs, in order
    layer = at.selectbox(key="fv_layer").value
    assert layer == model.default_feature_layer() and layer != first_conv
    assert any(f"outputs of {layer}" in c.value.lower() for c in at.caption)
    assert any("test faces" in c.value for c in at.caption)        # the top-activating faces


def test_model_pages_without_a_torch_module_say_why(run_root: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A run whose model has no torch module (e.g. a foreign ONNX graph): both pages say why in
    one message and stop, instead of failing on the first gradient."""
    import shutil

    from fer_core.model import ModelSource, register_kind

    @register_kind("test-pages-no-module")
    def _load(run, config, which, device):  # noqa: ANN001
        return ModelSource(module=None, checkpoint=run / "best.pt", reason="this graph has no gradients here",
                           forward=lambda x: torch.zeros(len(x), 7))

    root = tmp_path / "runs"
    shutil.copytree(run_root / "tiny", root / "foreign")
    cfg = json.loads((root / "foreign" / "config.json").read_text())
    cfg["kind"] = "test-pages-no-module"
    (root / "foreign" / "config.json").write_text(json.dumps(cfg))
    monkeypatch.setenv("FER_RUNS", str(root))
    monkeypatch.setenv("FER_RUNS_ONLY", "1")
    for page in ("explain", "filters"):
        at = _app(tmp_path, page).run()
        _ok(at)
        assert any("no torch module" in i.value and "this graph has no gradients here" in i.value
                   for i in at.info)
        assert _images(at) == 0                    # stopped before any face or map
