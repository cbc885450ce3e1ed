"""Ensemble runs: two tiny SynthFER CNNs served as one model by every command and page."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fer_core.__main__ import main
from fer_core.data.spec import open_dataset
from fer_core.model import LoadedRun, ModelUnavailable
from fer_core.runs import read_config, write_config
from fer_core.train import TrainConfig, fit

DATA = "synthetic:n=800,seed=0"
WEIGHTS = (0.3, 0.7)


def _member(root: Path, name: str, seed: int, normalize: bool) -> Path:
    cfg = TrainConfig(data=DATA, model="cnn3", model_kwargs={"channels": [8, 16, 32]}, epochs=1, batch_size=64,
                      seed=seed, split_seed=0, normalize=normalize, threads=2)
    return fit(cfg, run_dir=root / name)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """m0 ([0,1] pixels) and m1 (standardised), and their ensemble ``ens`` with fixed weights."""
    root = tmp_path_factory.mktemp("ens")
    _member(root, "m0", 0, normalize=False)
    _member(root, "m1", 1, normalize=True)
    assert main(["ensemble", str(root / "m0"), str(root / "m1"), "--name", "ens", "--out", str(root),
                 "--weights", ",".join(map(str, WEIGHTS))]) == 0
    return root


@pytest.fixture(scope="module")
def faces():
    return open_dataset(DATA, val_fraction=0.1, seed=0)


def _members_mean(root: Path, x: torch.Tensor) -> np.ndarray:
    p0, p1 = (LoadedRun(root / m).probs(x) for m in ("m0", "m1"))
    return WEIGHTS[0] * p0 + WEIGHTS[1] * p1


def test_ensemble_run_loads_and_evaluates_as_the_weighted_mean(root, faces, capsys):
    cfg = read_config(root / "ens")
    assert cfg["kind"] == "ensemble" and cfg["ensemble"]["members"] == ["../m0", "../m1"]
    assert cfg["ensemble"]["weights"] == list(WEIGHTS)
    assert cfg["preprocess"]["normalize"] is False and cfg["train"]["split_seed"] == 0
    assert "eval_tta" in cfg and set(cfg["eval_tta_val"]) == {"none", "flip", "tencrop"}
    lm = LoadedRun(root / "ens")
    assert lm.model.member_names == ["m0", "m1"]
    test = faces.select("test")
    np.testing.assert_allclose(lm.probs(test.x), _members_mean(root, test.x), atol=1e-5)
    stored = np.load(root / "ens" / "eval" / "test.npz")
    np.testing.assert_allclose(stored["probs"], _members_mean(root, test.x), atol=1e-5)
    assert main(["evaluate", str(root / "ens"), "--split", "test", "--tta", "none"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    want = float((_members_mean(root, test.x).argmax(1) == test.y.numpy()).mean())
    assert out["accuracy"] == pytest.approx(want)


def test_export_writes_one_onnx_graph_of_the_average(root, faces, tmp_path, capsys):
    import onnx
    import onnxruntime as ort

    f = tmp_path / "ens.onnx"
    assert main(["export", str(root / "ens"), str(f)]) == 0
    proto = onnx.load(str(f))
    assert sum(n.op_type == "Conv" for n in proto.graph.node) == 6, "both members' convs in one graph"
    lm = LoadedRun(root / "ens")
    x = lm.inputs(faces.select("test").x[:32])
    sess = ort.InferenceSession(str(f), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, _members_mean(root, faces.select("test").x[:32]), atol=1e-4)
    assert lm.live_backend == "onnx"
    np.testing.assert_allclose(lm.classify(x, "onnx"), lm.classify(x, "torch"), atol=1e-4)


def test_explain_and_filters_name_member_layers(root, faces):
    lm = LoadedRun(root / "ens")
    faces_u8 = faces.select("test").x[:3].numpy()
    cams = [li.name for li in lm.gradcam_layers()]
    assert "members.0.features.relu3" in cams and "members.1.features.relu3" in cams
    assert lm.default_gradcam_layer() == "members.1.features.relu3", "the heaviest member's layer"
    assert lm.model.layer_label("members.1.features.conv3") == "member m1 (members.1.features.conv3)"
    for layer in ("members.0.features.relu3", "members.1.features.relu3"):
        m = lm.attribute_faces(faces_u8, [3, 3, 3], "gradcam", layer=layer)
        assert m.shape == (3, 48, 48) and np.isfinite(m).all()
    ig = lm.attribute_faces(faces_u8, [1, 2, 3], "integrated_gradients", n_steps=8)
    assert np.abs(ig).sum() > 0
    assert [li.name for li in lm.feature_layers()][:1] == ["members.0.features.conv1"]
    assert len(lm.feature_layers()) == 6
    imgs = lm.filter_images("members.1.features.conv2", mode="naive", filters=[0, 1], steps=4, lr=0.05)
    assert imgs is not None
    assert lm.activations("members.0.features.conv2", faces_u8[0]).shape == (16, 24, 24)


def test_auto_weights_are_chosen_on_validation_only(root, faces, tmp_path, monkeypatch, capsys):
    import fer_core.ensemble as ens
    from fer_core.data.faceset import FaceSet

    events: list[str] = []
    select, choose = FaceSet.select, ens.choose_weights
    monkeypatch.setattr(FaceSet, "select", lambda self, split: events.append(split) or select(self, split))

    def spy(probs, labels, *a, **k):
        events.append("choose")
        spy.labels = labels
        return choose(probs, labels, *a, **k)

    monkeypatch.setattr(ens, "choose_weights", spy)
    assert main(["ensemble", str(root / "m0"), str(root / "m1"), "--name", "auto", "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out.strip().splitlines()[-1] == str(tmp_path / "auto")
    assert "val: member m0 accuracy" in err and "val: ensemble" in err
    before = events[:events.index("choose")]
    assert "test" not in before and "val" in before, events
    np.testing.assert_array_equal(spy.labels, faces.select("val").y.numpy())
    cfg = read_config(tmp_path / "auto")
    assert cfg["ensemble"]["weights_chosen"].startswith("auto") and abs(sum(cfg["ensemble"]["weights"]) - 1) < 1e-6
    assert (tmp_path / "auto" / "eval" / "test.json").is_file()


def test_choose_weights_grid():
    from fer_core.ensemble import choose_weights, simplex_grid

    labels = np.array([0, 1, 1])
    good = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]])
    bad = np.array([[0.1, 0.9], [0.9, 0.1], [0.9, 0.1]])
    assert choose_weights([good, bad], labels) == ([1.0, 0.0], 1.0), "ties on accuracy go to the lower NLL"
    assert simplex_grid(3).shape == (66, 3) and np.allclose(simplex_grid(3).sum(1), 1)
    w, _ = choose_weights([good] * 4, labels)
    assert w == [0.25] * 4, "more than 3 members: equal weights"


def _variant(root: Path, tmp: Path, name: str, edit) -> Path:
    dst = tmp / name
    shutil.copytree(root / "m1", dst)
    cfg = read_config(dst)
    edit(cfg)
    write_config(dst, cfg)
    return dst


@pytest.mark.parametrize("case", ["classes", "size", "split", "missing", "one", "weights"])
def test_refusals_leave_nothing_on_disk(root, tmp_path, capsys, case):
    other = {
        "classes": lambda: _variant(root, tmp_path, "c", lambda c: c.update(classes=[f"k{i}" for i in range(7)])),
        "size": lambda: _variant(root, tmp_path, "s", lambda c: c["preprocess"].update(size=40)),
        "split": lambda: _variant(root, tmp_path, "v", lambda c: c["train"].update(split_seed=5)),
        "missing": lambda: tmp_path / "nope",
    }
    members = [str(root / "m0")] + ([] if case == "one" else [str(other.get(case, lambda: root / "m1")())])
    extra = ["--weights", "1,2,3"] if case == "weights" else []
    out = tmp_path / "out"
    assert main(["ensemble", *members, "--name", "bad", "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and {"classes": "classes", "size": "input sizes", "split": "validation",
                                          "missing": "not a run", "one": "at least two",
                                          "weights": "--weights"}[case] in err
    assert not (out / "bad").exists()


def test_a_failure_after_creation_removes_the_run(root, tmp_path, monkeypatch):
    import fer_core.evaluate as ev

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ev, "choose_tta", boom)
    assert main(["ensemble", str(root / "m0"), str(root / "m1"), "--name", "x", "--out", str(tmp_path),
                 "--weights", "equal"]) == 2
    assert not (tmp_path / "x").exists()


def test_a_missing_member_later_is_a_readable_error(root, tmp_path):
    shutil.copytree(root / "ens", tmp_path / "ens")
    with pytest.raises(ModelUnavailable, match="member run .* is missing"):
        LoadedRun(tmp_path / "ens")


def test_every_page_renders_an_ensemble(root, monkeypatch):
    from conftest import every_page

    for page, at in every_page(root, "ens", monkeypatch):
        if page == "filters":
            assert at.selectbox(key="fv_layer").value.startswith("members.")
