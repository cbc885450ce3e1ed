"""The Live page (dashboard/views/live.py) under Streamlit's AppTest, plus its per-file function.

AppTest drives ``st.file_uploader`` and ``st.camera_input`` with bytes, so every kind of bad upload
is tried on the real page: it must show a clear message and keep working for the other files. The
streamlit-webrtc component cannot stream under AppTest; it must only render (the browser test
covers the stream).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_faces_predictor import astronaut, encode, make_run, png_bomb, synth_scene

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "dashboard" / "views" / "live.py"
TIMEOUT = 600  # seconds per AppTest run: the CI machine is shared with training jobs


def _page_module():
    spec = importlib.util.spec_from_file_location("live_page", PAGE)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["live_page"] = mod  # dataclasses look their module up here
    spec.loader.exec_module(mod)   # __name__ != "__main__": the page body does not run
    return mod


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("live_runs")
    make_run(root, "synth-cnn4-a", seed=0)
    make_run(root, "other-cnn4", seed=1, data="somewhere/fer2013.csv")
    return root


@pytest.fixture()
def app(runs_root, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("FER_RUNS", str(runs_root))
    monkeypatch.setenv("FER_RUNS_ONLY", "1")
    at = AppTest.from_file(str(PAGE), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def face_png() -> bytes:
    frame, _ = synth_scene()
    return encode(Image.fromarray(frame), "PNG")


def texts(at) -> str:
    parts = [e.value for e in at.error] + [e.value for e in at.warning] + [e.value for e in at.info]
    parts += [m.value for m in at.markdown] + [c.value for c in at.caption]
    return "\n".join(str(p) for p in parts)


def captions(at) -> str:
    return "\n".join(c for im in at.image for c in im.captions)


def test_page_renders_with_tabs_and_limit(app):
    assert [t.label for t in app.tabs] == ["Upload", "Snapshot", "Live"]
    assert app.selectbox(key="live_run").value.endswith("other-cnn4")   # real data beats synthetic
    # no run has a bench record: the stream uses the strongest model too, and says why
    assert app.selectbox(key="live_stream_run").value.endswith("other-cnn4")
    assert "so the stream uses the strongest model" in texts(app)
    assert "10 MB" in texts(app)
    assert "FER_ICE_SERVERS" in texts(app) or any("live stream is not available" in i.value for i in app.info)
    assert len(app.get("file_uploader")) == 1 and len(app.get("camera_input")) == 1
    # the live classifier defaults to the fastest usable backend (ONNX Runtime, a requirement)
    backend = app.selectbox(key="live_backend")
    assert "PyTorch fp32" in backend.options
    if importlib.util.find_spec("onnxruntime"):
        assert backend.value == "onnx"


def test_first_render_shows_the_example_faces(app):
    """Before any upload the page classifies its built-in example (three SynthFER faces), so a
    fresh machine shows detected faces at once, labelled as synthetic."""
    assert not app.exception
    assert any("synthetic" in c.value and "SynthFER" in c.value for c in app.caption)
    shown = [cap for im in app.image for cap in im.captions if "example (SynthFER, synthetic)" in cap]
    assert len(shown) == 1 and "3 face(s)" in shown[0], shown
    assert sum(m.value.startswith("**Face #") for m in app.markdown) == 3


def test_upload_good_and_bad_files_together(app):
    bad = {
        "notes.txt": b"just text, not a picture",
        "empty.png": b"",
        "truncated.jpg": encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3),
                                                                                   dtype=np.uint8)), "JPEG")[:300],
        "bomb.png": png_bomb(30000, 30000),
    }
    files = [("face.png", face_png(), "image/png")] + [(n, d, "application/octet-stream") for n, d in bad.items()] \
        + [("blank.png", encode(Image.new("L", (120, 90), 128), "PNG"), "image/png")]
    app.file_uploader(key="live_upload").set_value(files)
    app.run()
    assert not app.exception, app.exception
    errors = "\n".join(e.value for e in app.error)
    assert "notes.txt: not an image" in errors
    assert "empty.png: the file is empty" in errors
    assert "truncated.jpg: the image is truncated or corrupt" in errors
    assert "bomb.png: image is too large" in errors and "decompression bomb" in errors
    assert any("blank.png: no face found" in w.value for w in app.warning)
    # the good file still got its per-face display: crop + overlay images and 7 probability rows
    prob_tables = [d for d in app.dataframe if list(d.value.columns) == ["emotion", "probability"]]
    assert len(prob_tables) == 1 and len(prob_tables[0].value) == 7
    assert abs(prob_tables[0].value["probability"].sum() - 1) < 1e-4
    assert "Face #1" in texts(app)
    caps = captions(app)
    assert "model input 48×48" in caps and "Grad-CAM for" in caps   # the crop the model saw + overlay
    assert "face.png · 640×480 · 1 face(s)" in caps                  # the annotated picture


def test_whole_image_option_and_compare_two_runs(app):
    app.file_uploader(key="live_upload").set_value(
        ("blank.png", encode(Image.new("L", (120, 90), 128), "PNG"), "image/png"))
    app.checkbox(key="live_whole").check()
    runs = app.selectbox(key="live_run_b").options
    app.selectbox(key="live_run_b").select_index(1)
    app.run()
    assert not app.exception, app.exception
    assert "whole image was classified" in texts(app)
    prob_tables = [d for d in app.dataframe if list(d.value.columns) == ["emotion", "probability"]]
    assert len(prob_tables) == 2, runs   # one per run, side by side
    a, b = (t.value["probability"].to_numpy() for t in prob_tables)
    assert not np.allclose(a, b)         # two different models on the same face


def test_overlay_choice_saliency_and_none(app):
    app.file_uploader(key="live_upload").set_value(("face.png", face_png(), "image/png"))
    app.selectbox(key="live_attr").set_value("saliency")
    app.run()
    assert not app.exception and "Saliency for" in captions(app)
    app.selectbox(key="live_attr").set_value("none")
    app.run()
    assert not app.exception and "model input" in captions(app) and "Saliency for" not in captions(app)


def test_snapshot_camera_input(app):
    app.camera_input(key="live_camera").set_value(("snap.jpg", encode(Image.fromarray(synth_scene()[0]), "JPEG",
                                                                       quality=95), "image/jpeg"))
    app.run()
    assert not app.exception, app.exception
    assert "snapshot" in texts(app) and "Face #1" in texts(app)


def test_no_runs_message(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("FER_RUNS", str(tmp_path))
    monkeypatch.setenv("FER_RUNS_ONLY", "1")
    at = AppTest.from_file(str(PAGE), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception and "No runs found" in texts(at)


def test_analyze_bytes_directly(runs_root):
    from fer_core.model import LoadedRun

    page = _page_module()
    p = LoadedRun(runs_root / "synth-cnn4-a")
    ok = page.analyze_bytes("face.png", face_png(), [p])
    assert ok.error is None and ok.n_faces == 1 and ok.maps[0][0].shape == (48, 48)
    assert page.analyze_bytes("x.bin", b"\x00\x01", [p]).error.startswith("x.bin: not an image")
    real = page.analyze_bytes("astro.jpg", encode(Image.fromarray(astronaut()), "JPEG"), [p, p],
                              attribution="saliency")
    assert real.error is None and real.n_faces >= 1 and len(real.predictions) == 2
    # several faces: numbered left to right, and the one detection's time is reported
    three = page.analyze_bytes("three.png", encode(Image.fromarray(synth_scene(3, size=(360, 720), face_px=150)[0]),
                                                   "PNG"), [p], attribution="none")
    xs = [f.box[0] for f in three.predictions[0].faces]
    assert three.n_faces == 3 and xs == sorted(xs)
    assert three.predictions[0].timings["detect"] > 0


def test_webcam_defaults_to_the_fast_run_uploads_to_the_strongest(tmp_path, monkeypatch):
    """A run whose bench record meets both figures is the stream's default; uploads keep the
    model with the best validation accuracy."""
    import json

    from streamlit.testing.v1 import AppTest

    from fer_core.live.choice import write_record

    strong = make_run(tmp_path, "strong", data="x.npz")
    fast = make_run(tmp_path, "fast", data="x.npz", seed=1)
    for run, acc in ((strong, 0.71), (fast, 0.69)):
        cfg = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps({**cfg, "best_val_acc": acc}))
    write_record(fast, {"ours_ms": 0.3, "peer_ms": 0.37, "ours_acc": 0.69, "split": "test",
                        "peer": "fer==25.10.3"})
    monkeypatch.setenv("FER_RUNS", str(tmp_path))
    monkeypatch.setenv("FER_RUNS_ONLY", "1")
    at = AppTest.from_file(str(PAGE), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="live_run").value == str(strong)
    assert at.selectbox(key="live_stream_run").value == str(fast)
    assert "fast is the fast model for the stream: 0.300 ms/face vs 0.370 ms for fer==25.10.3" in texts(at)
