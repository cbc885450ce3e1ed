"""Bring your own model: foreign models built here with plain PyTorch, exported by every route,
imported with ``python -m fer_core import``, and served by the same LoadedRun as our runs."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fer_core.__main__ import main
from fer_core.labels import EMOTIONS

DATA = "synthetic:n=700,seed=3"

STUDENT_CODE = textwrap.dedent('''
    import torch.nn as nn
    import torch.nn.functional as F


    class StudentCNN(nn.Module):
        """The course reports' 3-layer CNN: conv 64-128-512, 3x3, BN, ReLU, max-pool, FC 7."""

        def __init__(self, channels=(64, 128, 512), num_classes=7):
            super().__init__()
            layers, c_in = [], 1
            for c in channels:
                layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
                c_in = c
            self.features = nn.Sequential(*layers)
            self.fc = nn.Linear(c_in, num_classes)

        def forward(self, x):
            return self.fc(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))
''')


def _student_class(tmp: Path):
    f = tmp / "student.py"
    f.write_text(STUDENT_CODE)
    ns: dict = {}
    exec(compile(STUDENT_CODE, str(f), "exec"), ns)  # the student's own module, as they would import it
    return f, ns["StudentCNN"]


def _faces(n: int = 256, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    from fer_core.data.synthetic import generate

    x, y = generate(n=n, seed=seed)
    return torch.as_tensor(x), torch.as_tensor(y)


class RGB64(nn.Module):
    """A 3-channel 64x64-input model that wants raw [0,255] pixels."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.head = nn.Linear(32, 7)

    def forward(self, x):
        x = x / 255.0
        return self.head(F.adaptive_avg_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 1).flatten(1))


class NHWCProbs(nn.Module):
    """A Keras-like graph: NHWC input, softmax output, FER+ class order with contempt."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, 8)

    def forward(self, x):
        x = x.permute(0, 3, 1, 2)
        x = F.max_pool2d(F.relu(self.conv2(F.max_pool2d(F.relu(self.conv(x)), 2))), 2)
        return torch.softmax(self.fc(x.mean((2, 3))), 1)


FERPLUS = "neutral,happiness,surprise,sadness,anger,disgust,fear,contempt"


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """A student's CNN trained one epoch on SynthFER by a plain loop (as a student would)."""
    tmp = tmp_path_factory.mktemp("student")
    code, cls = _student_class(tmp)
    torch.manual_seed(0)
    net = cls()
    x, y = _faces(384, seed=7)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    net.train()
    for i in range(0, len(x), 64):
        xb = x[i:i + 64, None].float() / 255.0
        loss = F.cross_entropy(net(xb), y[i:i + 64])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    return tmp, code, net


def _import(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["import", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _eval_probs(run: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(run / "eval" / "test.npz") as z:
        return z["index"], z["probs"]


def _ref_probs(net, idx, channels=1, scale=1.0, size=48, nhwc=False, probs_out=False):
    from fer_core.data.spec import open_dataset

    faces = open_dataset(DATA, val_fraction=0.1, seed=0)
    x = faces.x[idx].float()[:, None] / 255.0
    if size != 48:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    x = x.expand(-1, channels, -1, -1) * scale
    if nhwc:
        x = x.permute(0, 2, 3, 1)
    with torch.no_grad():
        out = net(x.contiguous())
    return out.numpy() if probs_out else torch.softmax(out, 1).numpy()


@pytest.mark.parametrize("route", ["torchscript", "export", "state_dict"])
def test_student_cnn_every_torch_route(route, student, tmp_path, capsys):
    tmp, code_file, net = student
    if route == "torchscript":
        f = tmp_path / "student_ts.pt"
        torch.jit.save(torch.jit.script(net), f)
        extra: list[str] = []
    elif route == "export":
        f = tmp_path / "student.pt2"
        ep = torch.export.export(net, (torch.zeros(2, 1, 48, 48),),
                                 dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=4096)}})
        torch.export.save(ep, f)
        extra = []
    else:
        f = tmp_path / "student_weights.pth"
        torch.save(net.state_dict(), f)
        extra = ["--code", f"{code_file}:StudentCNN", "--kwargs", '{"channels": [64, 128, 512]}', "--trust-code"]
    rc, out, err = _import(capsys, str(f), "--name", f"student-{route}", "--out", str(tmp_path / "runs"),
                           "--data", DATA, *extra)
    assert rc == 0, err
    run = Path(out.strip().splitlines()[-1])
    assert run == tmp_path / "runs" / f"student-{route}" and run.is_dir()
    assert "probe: NCHW 1×48×48 input, outputs logits, 7 classes" in err
    idx, got = _eval_probs(run)
    np.testing.assert_allclose(got, _ref_probs(net, idx), atol=1e-5)

    # Captum saliency on the imported model equals Captum on the original
    from fer_core.explain.attribution import explain
    from fer_core.model import LoadedRun

    m = LoadedRun(run)
    faces, _ = _faces(6)
    mine = m.attribute_faces(faces.numpy(), [3] * 6, "saliency")
    ref = explain(net, faces[:, None].float() / 255.0, [3] * 6, "saliency")
    np.testing.assert_allclose(mine, ref, rtol=1e-4, atol=1e-6)
    layers = [li.name for li in m.gradcam_layers()] if m.layer_reason is None else []
    if route == "torchscript":
        assert "TorchScript" in (m.layer_reason or "")
    else:
        assert "net.features.0" in layers and m.default_feature_layer() is not None
        cam = m.attribute_faces(faces.numpy(), [3] * 6, "gradcam", layer=m.default_gradcam_layer())
        assert cam.shape == (6, 48, 48) and np.isfinite(cam).all()


def test_rgb64_raw_pixels_model(tmp_path, capsys):
    torch.manual_seed(1)
    net = RGB64().eval()
    f = tmp_path / "rgb.pt"
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 3, 64, 64)), f)
    rc, out, err = _import(capsys, str(f), "--name", "rgb", "--out", str(tmp_path), "--input", "3x64x64",
                           "--range", "255", "--data", DATA)
    assert rc == 0, err
    assert "NCHW 3×64×64 input, outputs logits, 7 classes" in err
    run = Path(out.strip().splitlines()[-1])
    idx, got = _eval_probs(run)
    np.testing.assert_allclose(got, _ref_probs(net, idx, channels=3, scale=255.0, size=64), atol=1e-5)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["preprocess"]["size"] == 64 and cfg["foreign"]["input"] == {"channels": 3, "size": 64, "layout": "nchw"}


def _keras_like_onnx(net, f: Path) -> Path:
    """``net`` (NHWC 1×48×48×1 input) as a Keras-converter-like ONNX file: tf2onnx's default opset is
    15, and the TorchScript-based exporter writes the same kind of graph."""
    torch.onnx.export(net, (torch.zeros(1, 48, 48, 1),), str(f), dynamo=False, input_names=["input_1"],
                      dynamic_axes={"input_1": {0: "batch"}}, opset_version=15)
    return f


def test_nhwc_onnx_probabilities_ferplus_classes(tmp_path, capsys):
    """A Keras-style NHWC graph with softmax output and FER+'s 8 classes: ORT for inference,
    onnx2torch for gradients, contempt dropped, FER2013 order restored."""
    torch.manual_seed(2)
    net = NHWCProbs().eval()
    f = _keras_like_onnx(net, tmp_path / "keras_like.onnx")
    rc, out, err = _import(capsys, str(f), "--name", "kerasish", "--out", str(tmp_path), "--classes", FERPLUS,
                           "--data", DATA)
    assert rc == 0, err
    assert "input read from the model: NHWC 1×48×48 input" in err
    assert "probe: NHWC 1×48×48 input, outputs probabilities, 7 classes" in err
    assert "contempt dropped" in err
    run = Path(out.strip().splitlines()[-1])
    idx, got = _eval_probs(run)
    p8 = _ref_probs(net, idx, nhwc=True, probs_out=True)
    order = [FERPLUS.split(",").index(n) for n in ("anger", "disgust", "fear", "happiness", "sadness", "surprise",
                                                     "neutral")]
    want = p8[:, order] / p8[:, order].sum(1, keepdims=True)
    np.testing.assert_allclose(got, want, atol=1e-4)
    from fer_core.model import LoadedRun

    m = LoadedRun(run)
    assert m.gradient_reason is None                       # onnx2torch converted it
    sal = m.attribute_faces(_faces(4)[0].numpy(), [3] * 4, "saliency")
    assert sal.shape == (4, 48, 48) and sal.max() > 0
    assert any("Conv" in n for n in m.model.feature_layers)


class WithDet(NHWCProbs):
    """An NHWC graph with an op onnx2torch has no converter for (ONNX ``Det``)."""

    def forward(self, x):
        p = super().forward(x)
        return p + 0.0 * torch.linalg.det(x[:, :2, :2, 0]).unsqueeze(1)


def test_onnx_graph_onnx2torch_cannot_convert_is_inference_only(tmp_path, capsys):
    """Inference works through ONNX Runtime; gradient pages get the reason in one sentence."""
    torch.manual_seed(3)
    net = WithDet().eval()
    f = _keras_like_onnx(net, tmp_path / "det.onnx")
    rc, out, err = _import(capsys, str(f), "--name", "det", "--out", str(tmp_path), "--classes", FERPLUS,
                           "--data", DATA)
    assert rc == 0, err
    from fer_core.model import LoadedRun, ModelUnavailable

    run = Path(out.strip().splitlines()[-1])
    m = LoadedRun(run)
    idx, got = _eval_probs(run)
    p8 = _ref_probs(net, idx, nhwc=True, probs_out=True)
    keep = [FERPLUS.split(",").index(n) for n in ("anger", "disgust", "fear", "happiness", "sadness", "surprise",
                                                    "neutral")]
    np.testing.assert_allclose(got, p8[:, keep] / p8[:, keep].sum(1, keepdims=True), atol=1e-4)
    assert "onnx2torch cannot convert" in (m.gradient_reason or "") and "Det" in m.gradient_reason
    with pytest.raises(ModelUnavailable, match="onnx2torch cannot convert"):
        m.attribute_faces(_faces(4)[0].numpy(), [0] * 4, "saliency")


# --------------------------------------------------------------------------- refusals
def _refused(capsys, tmp_path, *args: str, match: str) -> None:
    root = tmp_path / "refused"
    rc, out, err = _import(capsys, *args, "--name", "x", "--out", str(root))
    assert rc == 2 and out == "", (rc, out, err)
    assert match in err, err
    assert not (root / "x").exists() and not [p for p in root.glob("*")] if root.exists() else True


def test_refusals_leave_nothing_on_disk(student, tmp_path, capsys):
    tmp, code_file, net = student
    corrupt = tmp_path / "corrupt.pt"
    good = tmp_path / "good.pt"
    torch.jit.save(torch.jit.script(net), good)
    corrupt.write_bytes(good.read_bytes()[:2000])
    _refused(capsys, tmp_path, str(corrupt), match="error:")
    notmodel = tmp_path / "notes.txt"
    notmodel.write_text("hello, not a model\n")
    _refused(capsys, tmp_path, str(notmodel), match="not a model file")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    _refused(capsys, tmp_path, str(empty), match="empty")
    pickled = tmp_path / "whole.pt"
    torch.save(RGB64(), pickled)  # a whole pickled model (never unpickled here)
    _refused(capsys, tmp_path, str(pickled), match="fully pickled model")
    sd = tmp_path / "w.pth"
    torch.save(net.state_dict(), sd)
    _refused(capsys, tmp_path, str(sd), match="--code FILE.py:ClassName")
    _refused(capsys, tmp_path, str(sd), "--code", f"{code_file}:StudentCNN", match="would run your code")
    _refused(capsys, tmp_path, str(good), "--classes", "a,b,c", match="outputs 7 values per face but 3 classes")
    _refused(capsys, tmp_path, str(good), "--input", "3x64x64", match="does not accept a batch of NCHW 3×64×64")
    # an existing run name
    rc, out, err = _import(capsys, str(good), "--name", "taken", "--out", str(tmp_path / "r"))
    assert rc == 0, err
    rc, out, err = _import(capsys, str(good), "--name", "taken", "--out", str(tmp_path / "r"))
    assert rc == 2 and "already exists" in err
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["taken"]


def test_pickled_model_with_trust_code(student, tmp_path, capsys, monkeypatch):
    """A whole pickled model (torch.save(model)) loads only with --trust-code."""
    import importlib
    import sys

    tmp, code_file, net = student
    monkeypatch.syspath_prepend(str(tmp))  # the pickle names the student's module, as in their project
    mod = importlib.import_module("student")
    net2 = mod.StudentCNN()
    net2.load_state_dict(net.state_dict())
    f = tmp_path / "whole.pt"
    torch.save(net2.eval(), f)
    rc, out, err = _import(capsys, str(f), "--name", "whole", "--out", str(tmp_path), "--trust-code",
                           "--data", DATA)
    assert rc == 0, err
    idx, got = _eval_probs(Path(out.strip().splitlines()[-1]))
    np.testing.assert_allclose(got, _ref_probs(net, idx), atol=1e-5)
    sys.modules.pop("student", None)


def test_predictions_only_run(tmp_path, capsys):
    """A CSV of predictions gives the Errors page's data with no model; model pages say why."""
    from fer_core.data.spec import open_dataset
    from fer_core.model import LoadedRun, ModelUnavailable
    from fer_core.rundata import RunData

    faces = open_dataset(DATA, val_fraction=0.1, seed=0)
    test = np.flatnonzero(faces.split == "test")
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(7), size=len(test))
    import pandas as pd

    df = pd.DataFrame(p, columns=list(EMOTIONS))
    df.insert(0, "row", faces.row[test])
    df.insert(1, "label", [EMOTIONS[int(v)] for v in faces.y[test]])
    csv = tmp_path / "preds.csv"
    df.to_csv(csv, index=False)
    rc, out, err = _import(capsys, "--predictions", str(csv), "--name", "preds", "--out", str(tmp_path),
                           "--data", DATA)
    assert rc == 0, err
    run = Path(out.strip().splitlines()[-1])
    pred = RunData(run, "").stored_predictions("test")
    assert pred is not None and len(pred) == len(test)
    np.testing.assert_allclose(pred.probs, p, atol=1e-6)
    assert pred.metrics["accuracy"] == pytest.approx(float((p.argmax(1) == faces.y[test].numpy()).mean()))
    with pytest.raises(ModelUnavailable, match="predictions only"):
        LoadedRun(run)


# --------------------------------------------------------------------------- every page
@pytest.fixture(scope="module")
def imported_runs(student, tmp_path_factory):
    """A runs root with the student's CNN as torch.export and a Keras-like NHWC ONNX graph."""
    tmp, code_file, net = student
    root = tmp_path_factory.mktemp("imported")
    f = tmp / "student.pt2"
    ep = torch.export.export(net, (torch.zeros(2, 1, 48, 48),),
                             dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=4096)}})
    torch.export.save(ep, f)
    assert main(["import", str(f), "--name", "student-export", "--out", str(root), "--data", DATA]) == 0
    ts = tmp / "student_ts.pt"
    torch.jit.save(torch.jit.script(net), ts)
    assert main(["import", str(ts), "--name", "student-ts", "--out", str(root), "--data", DATA]) == 0
    torch.manual_seed(2)
    g = _keras_like_onnx(NHWCProbs().eval(), tmp / "keras.onnx")
    assert main(["import", str(g), "--name", "keras-onnx", "--out", str(root), "--classes", FERPLUS,
                 "--data", DATA]) == 0
    return root


@pytest.mark.slow
@pytest.mark.parametrize("name", ["student-export", "keras-onnx", "student-ts"])
def test_every_page_renders_an_imported_run(imported_runs, name, monkeypatch):
    from conftest import every_page

    run = str(imported_runs / name)
    for page, at in every_page(imported_runs, name, monkeypatch):
        if page == "filters":
            if name == "student-ts":   # TorchScript layers cannot be hooked: the page says why
                assert any("TorchScript modules cannot be hooked" in m.value for m in at.info)
            else:
                assert at.selectbox(key="fv_layer").value.startswith("net.")
        if page == "model":
            at.radio(key="model_src").set_value("run").run()
            if at.selectbox(key="model_run").value != run:
                at.selectbox(key="model_run").set_value(run).run()
            assert not at.exception, [e.value for e in at.exception]
            assert at.container(key="model_layers_box").dataframe[0].value["layer"].size >= 3


def test_live_upload_classifies_with_an_imported_onnx_model(imported_runs):
    """The Live page's upload path (decode, detect, classify) on an imported ONNX graph."""
    from PIL import Image

    from fer_core.data.synthetic import generate
    from fer_core.model import LoadedRun

    m = LoadedRun(imported_runs / "keras-onnx")
    face = generate(n=1, seed=5)[0][0]
    big = np.asarray(Image.fromarray(face).resize((192, 192)))
    import io

    buf = io.BytesIO()
    Image.fromarray(big).save(buf, format="PNG")
    pred = m.predict(buf.getvalue(), whole_image=True)
    assert len(pred.faces) == 1 and pred.faces[0].probs.shape == (7,)
    np.testing.assert_allclose(pred.faces[0].probs.sum(), 1.0, atol=1e-5)
    assert m.live_backend == "onnx"
    x, _ = m.model_inputs([big])
    np.testing.assert_allclose(m.classify(x, "onnx"), m.classify(x, "torch"), atol=1e-4)


@pytest.mark.parametrize("route", ["export", "onnx"])
def test_export_and_predict_an_imported_run(route, student, imported_runs, tmp_path, capsys):
    """`export` writes one ONNX graph taking our standardised faces; `predict` classifies a picture."""
    import onnxruntime as ort

    from fer_core.model import LoadedRun

    run = imported_runs / ("student-export" if route == "export" else "keras-onnx")
    capsys.readouterr()
    out = tmp_path / f"{route}.onnx"
    assert main(["export", str(run), str(out)]) == 0, capsys.readouterr().err
    m = LoadedRun(run)
    faces = _faces(5)[0].numpy()
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: m.inputs(faces).numpy()})[0]
    np.testing.assert_allclose(got, m.probs(faces), atol=1e-4)
    from PIL import Image

    img = tmp_path / "face.png"
    Image.fromarray(faces[0]).resize((96, 96)).save(img)
    capsys.readouterr()
    assert main(["predict", str(run), str(img), "--whole-image"]) == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(rec["probs"]) == set(EMOTIONS)


def test_export_of_a_torchscript_run_says_why(student, tmp_path, capsys):
    tmp, code_file, net = student
    f = tmp_path / "ts.pt"
    torch.jit.save(torch.jit.script(net), f)
    assert main(["import", str(f), "--name", "ts", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["export", str(tmp_path / "ts"), str(tmp_path / "ts.onnx")]) == 2
    assert "TorchScript module" in capsys.readouterr().err and not (tmp_path / "ts.onnx").exists()


# --------------------------------------------------------------------------- every model, every route
def _save(net: nn.Module, route: str, example: torch.Tensor, tmp: Path, code: Path | None) -> tuple[Path, list[str]]:
    """Save ``net`` the way a user would for ``route``; returns the file and extra import options."""
    if route == "torchscript":
        f = tmp / "m_ts.pt"
        torch.jit.save(torch.jit.trace(net, example), f)
        return f, []
    if route == "export":
        f = tmp / "m.pt2"
        torch.export.save(torch.export.export(net, (example,), dynamic_shapes=({0: torch.export.Dim("b", min=1,
                                                                                                     max=4096)},)), f)
        return f, []
    if route == "onnx":
        f = tmp / "m.onnx"
        torch.onnx.export(net, (example,), str(f), dynamo=False, input_names=["input_1"],
                          dynamic_axes={"input_1": {0: "batch"}}, opset_version=15)
        return f, []
    f = tmp / "m.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(f))
    return f, ["--code", f"{code}:{type(net).__name__}", "--trust-code"]


@pytest.mark.parametrize("route", ["torchscript", "export", "onnx", "state_dict"])
@pytest.mark.parametrize("which", ["rgb64", "nhwc_probs"])
def test_every_model_through_every_route(which, route, tmp_path, capsys):
    """The 3-channel 64×64 [0,255] model and the NHWC probability model, saved by each route
    (state_dict as .safetensors + the class's file), give the original's predictions."""
    torch.manual_seed(5)
    code = tmp_path / "models.py"
    code.write_text(Path(__file__).read_text())  # the classes' own file, as a user's project has
    if which == "rgb64":
        net, example, extra = RGB64().eval(), torch.zeros(2, 3, 64, 64), ["--input", "3x64x64", "--range", "255"]
        ref = lambda idx: _ref_probs(net, idx, channels=3, scale=255.0, size=64)  # noqa: E731
    else:
        net, example, extra = NHWCProbs().eval(), torch.zeros(2, 48, 48, 1), ["--classes", FERPLUS, "--layout", "nhwc"]
        keep = [FERPLUS.split(",").index(n) for n in ("anger", "disgust", "fear", "happiness", "sadness",
                                                        "surprise", "neutral")]

        def ref(idx):
            p8 = _ref_probs(net, idx, nhwc=True, probs_out=True)
            return p8[:, keep] / p8[:, keep].sum(1, keepdims=True)
    f, opts = _save(net, route, example, tmp_path, code)
    if which == "nhwc_probs" and route != "onnx":
        extra = extra + ["--input", "1x48x48"]
    rc, out, err = _import(capsys, str(f), "--name", f"{which}-{route}", "--out", str(tmp_path / "runs"),
                           "--data", DATA, *extra, *opts)
    assert rc == 0, err
    assert ("outputs probabilities" if which == "nhwc_probs" else "outputs logits") in err
    idx, got = _eval_probs(Path(out.strip().splitlines()[-1]))
    np.testing.assert_allclose(got, ref(idx), atol=1e-4 if route == "onnx" else 1e-5)


@pytest.fixture(scope="module")
def predictions_run(tmp_path_factory):
    from fer_core.data.spec import open_dataset

    root = tmp_path_factory.mktemp("preds")
    faces = open_dataset(DATA, val_fraction=0.1, seed=0)
    test = np.flatnonzero(faces.split == "test")
    import pandas as pd

    p = np.random.default_rng(1).dirichlet(np.ones(7) * 0.3, size=len(test))
    df = pd.DataFrame({"row": faces.row[test], "pred": [EMOTIONS[int(i)] for i in p.argmax(1)]})
    csv = root / "preds.csv"
    df.to_csv(csv, index=False)   # no label column: the labels are read from --data by row id
    assert main(["import", "--predictions", str(csv), "--name", "preds-only", "--out", str(root / "runs"),
                 "--data", DATA]) == 0
    return root / "runs"


@pytest.mark.slow
def test_predictions_only_run_on_every_page(predictions_run, monkeypatch):
    """The Errors page shows the cell's faces; the model pages say in one sentence why they can't."""
    from streamlit.testing.v1 import AppTest

    root = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("FER_RUNS", str(predictions_run))
    monkeypatch.setenv("FER_RUNS_ONLY", "1")
    at = AppTest.from_file(str(root / "dashboard" / "app.py"), default_timeout=240)
    at.query_params["run"] = "preds-only"
    at.run()
    for page in ("runs", "errors", "dataset", "explain", "filters", "live", "model"):
        at.switch_page(str(root / "dashboard" / "views" / f"{page}.py")).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        text = " ".join(str(m.value) for m in [*at.info, *at.warning, *at.error, *at.markdown, *at.caption])
        if page == "errors":
            assert at.image and at.image[0].captions, "the confusion cell's faces"
        elif page == "dataset":  # no model, no features: the map of the imported probabilities, saying why
            assert at.get("plotly_chart"), "the map"
            assert "class probabilities" in text and "predictions only" in text, text[:500]
            assert (predictions_run / "preds-only" / "eval" / "test_embedding.npz").exists()
        elif page in ("explain", "filters", "live"):
            assert "predictions only" in text or "None of the runs" in text, (page, text[:500])


def test_live_page_classifies_an_upload_with_an_imported_onnx_model(imported_runs, monkeypatch):
    """The Live page, with the imported Keras-like ONNX run selected, classifies an uploaded picture."""
    from PIL import Image
    from streamlit.testing.v1 import AppTest

    from fer_core.data.synthetic import sample_picture

    root = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("FER_RUNS", str(imported_runs))
    monkeypatch.setenv("FER_RUNS_ONLY", "1")
    at = AppTest.from_file(str(root / "dashboard" / "views" / "live.py"), default_timeout=240)
    at.run()
    at.selectbox(key="live_run").set_value(str(imported_runs / "keras-onnx")).run()
    import io

    rgb, _ = sample_picture()
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    at.file_uploader(key="live_upload").set_value([("photo.png", buf.getvalue(), "image/png")]).run()
    assert not at.exception, [e.value for e in at.exception]
    caps = [c for im in at.image for c in im.captions if c.startswith("photo.png")]
    assert caps and "3 face(s)" in caps[0], caps
