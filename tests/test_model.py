"""The one loaded-model object (fer_core.model.LoadedRun) and the portability of shipped runs."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from fer_core.model import LoadedRun, ModelSource, ModelUnavailable, register_kind

ROOT = Path(__file__).resolve().parents[1]
SYNTH = ROOT / "checkpoints" / "synth-cnn4-aug"


@pytest.fixture(scope="module")
def synth_faces():
    from fer_core.data.spec import open_dataset

    cfg = json.loads((SYNTH / "config.json").read_text())
    return open_dataset(cfg["data"], val_fraction=cfg["train"]["val_fraction"], seed=cfg["train"]["seed"])


def test_probs_match_the_stored_evaluation(synth_faces) -> None:
    """The object's probabilities are the ones `evaluate` stored for the shipped run."""
    m = LoadedRun(SYNTH)
    with np.load(SYNTH / "eval" / "test.npz") as z:
        idx, stored = z["index"][:300], z["probs"][:300]
    got = m.probs(synth_faces.x[idx].numpy())
    np.testing.assert_allclose(got, stored, atol=1e-5)
    assert m.classes == tuple(json.loads((SYNTH / "config.json").read_text())["classes"])
    assert m.preprocess.mean == pytest.approx(json.loads((SYNTH / "config.json").read_text())["preprocess"]["mean"])
    assert m.gradient_reason is None and m.kind == "registry"


def test_key_changes_with_the_checkpoint_file(tmp_path: Path) -> None:
    run = tmp_path / "r"
    shutil.copytree(SYNTH, run)
    k1 = LoadedRun(run).key
    import os
    import time

    st = (run / "best.pt").stat()
    os.utime(run / "best.pt", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    time.sleep(0.01)
    assert LoadedRun(run).key != k1


def test_attribute_faces_repeats_for_contrastive_targets(synth_faces) -> None:
    m = LoadedRun(SYNTH)
    faces = synth_faces.x[:3].numpy()
    one = m.attribute_faces(faces, [0, 1, 2], "saliency")
    two = m.attribute_faces(faces, [0, 1, 2, 3, 3, 3], "saliency")
    assert one.shape == (3, 48, 48) and two.shape == (6, 48, 48)
    np.testing.assert_allclose(two[:3], one, atol=1e-6)
    assert not np.allclose(two[3:], one)


def test_concurrent_use_is_serialised(synth_faces) -> None:
    """Attribution (hooks) and inference from several threads give the single-thread results."""
    m = LoadedRun(SYNTH)
    faces = synth_faces.x[:8].numpy()
    ref_p, ref_m = m.probs(faces), m.attribute_faces(faces, [3] * 8, "gradcam")
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(3):
                np.testing.assert_allclose(m.probs(faces), ref_p, atol=1e-6)
                np.testing.assert_allclose(m.attribute_faces(faces, [3] * 8, "gradcam"), ref_m, atol=1e-5)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_default_feature_layer_is_not_the_first_conv() -> None:
    m = LoadedRun(SYNTH)
    layers = [li.name for li in m.feature_layers()]
    assert m.default_feature_layer() in layers and m.default_feature_layer() != layers[0]


def test_unknown_kind_is_a_clear_error(tmp_path: Path) -> None:
    run = tmp_path / "r"
    shutil.copytree(SYNTH, run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["kind"] = "martian"
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelUnavailable, match="unknown run kind 'martian'"):
        LoadedRun(run)


def test_a_kind_without_a_torch_module_serves_probabilities_and_says_why(tmp_path: Path, synth_faces) -> None:
    """The seam foreign models plug into: inference through ``forward``, gradients refused with the reason."""
    ref = LoadedRun(SYNTH)
    module = ref.model

    @register_kind("test-inference-only")
    def _load(run, config, which, device):  # noqa: ANN001
        return ModelSource(module=None, checkpoint=run / "config.json", reason="this graph cannot be converted",
                           forward=lambda x: torch.log_softmax(module(x), 1).detach())

    run = tmp_path / "r"
    run.mkdir()
    cfg = json.loads((SYNTH / "config.json").read_text())
    cfg["kind"] = "test-inference-only"
    (run / "config.json").write_text(json.dumps(cfg))
    m = LoadedRun(run)
    faces = synth_faces.x[:5].numpy()
    np.testing.assert_allclose(m.probs(faces), ref.probs(faces), atol=1e-5)
    np.testing.assert_allclose(m.classify(m.inputs(faces)), ref.probs(faces), atol=1e-5)
    assert m.gradient_reason == "this graph cannot be converted"
    with pytest.raises(ModelUnavailable, match="cannot be converted"):
        m.attribute_faces(faces, [0] * 5, "saliency")
    assert m.backend_status()["torch"] == "this graph cannot be converted"


def test_shipped_runs_hold_no_machine_path() -> None:
    """Shipped configs, eval files and checkpoints name their data portably (file name + data_ref)."""
    for run in sorted((ROOT / "checkpoints").iterdir()):
        texts = [p.read_text() for p in [run / "config.json", *sorted((run / "eval").glob("*.json"))]]
        for t in texts:
            assert "/work/" not in t and "/home/" not in t and "/tmp/" not in t, run.name
        for graph in run.glob("*.onnx"):      # e.g. live_int8.onnx: no exporter stack traces
            blob = graph.read_bytes()
            assert b"/work/" not in blob and b"/home/" not in blob and b"stack_trace" not in blob, graph
        cfg = json.loads(texts[0])
        if not cfg["data"].startswith("synthetic"):
            assert cfg["data"] == Path(cfg["data"]).name and cfg["data_ref"]["file"] == cfg["data"]
        ck = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
        assert not str(ck.get("config", {}).get("data", "")).startswith("/"), run.name
