"""The int8 live classifier (fer_core/live/quantize.py): made by ``python -m fer_core quantize``,
served by ``LoadedRun`` as the ``onnx-int8`` backend, refused when it no longer matches the weights."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quantized_run(tmp_path_factory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("q") / "synth-cnn4-aug"
    shutil.copytree(ROOT / "checkpoints" / "synth-cnn4-aug", run, ignore=shutil.ignore_patterns("eval"))
    out = subprocess.run([sys.executable, "-m", "fer_core", "quantize", str(run), "--n-calib", "256",
                          "--n-check", "400"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return run, json.loads(out.stdout.strip().splitlines()[-1])


def test_quantize_writes_an_int8_graph_that_agrees_with_fp32(quantized_run):
    import onnx

    run, info = quantized_run
    graph = onnx.load(str(run / "live_int8.onnx"))
    ops = {n.op_type for n in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops           # really int8 (QDQ), not a copy
    assert info["calibration_faces"] == 256 and info["check_faces"] == 400
    assert info["top1_agreement"] >= 0.95 and 0 < info["mean_abs_diff"] < 0.05


def test_loaded_run_serves_int8_for_live(quantized_run):
    from fer_core.data import open_dataset
    from fer_core.model import LoadedRun

    run, info = quantized_run
    lm = LoadedRun(run)
    assert lm.backend_status()["onnx-int8"] is None
    assert lm.live_backend == "onnx-int8"
    assert lm.int8_info == {k: info[k] for k in ("calibration_faces", "check_faces", "top1_agreement",
                                                  "mean_abs_diff", "max_abs_diff")}
    faces = open_dataset("synthetic:n=12000,seed=0").select("test").x.numpy()[:300]
    x = lm.inputs(faces)
    p8, p32 = lm.classify(x, "onnx-int8"), lm.classify(x, "torch")
    assert p8.shape == p32.shape == (300, 7)
    np.testing.assert_allclose(p8.sum(1), 1.0, atol=1e-4)
    assert (p8.argmax(1) == p32.argmax(1)).mean() >= 0.95
    assert np.abs(p8 - p32).max() > 1e-6                             # its own (quantized) output


def test_int8_graph_of_other_weights_is_refused(quantized_run, tmp_path):
    from fer_core.checkpoint import load_checkpoint, save_checkpoint
    from fer_core.model import LoadedRun

    run, _ = quantized_run
    stale = tmp_path / "stale"
    shutil.copytree(run, stale)
    ck = load_checkpoint(stale / "best.pt")
    ck["state_dict"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in ck["state_dict"].items()}
    save_checkpoint(stale / "best.pt", ck)                            # "retrained" after quantizing
    lm = LoadedRun(stale)
    why = lm.backend_status()["onnx-int8"]
    assert why and "other weights" in why
    assert lm.live_backend == "onnx"
    with pytest.raises(RuntimeError, match="int8 backend is not available"):
        lm.classify(torch.zeros(1, 1, 48, 48), "onnx-int8")
    (stale / "live_int8.onnx").write_bytes(b"not onnx")
    assert "does not load" in LoadedRun(stale).backend_status()["onnx-int8"]
    (stale / "live_int8.onnx").unlink()
    assert "fer_core quantize" in LoadedRun(stale).backend_status()["onnx-int8"]


def test_shipped_int8_graphs_match_their_weights():
    """A shipped run's int8 graph was made from exactly its shipped weights, so the live stream uses it."""
    from fer_core.model import LoadedRun

    shipped = sorted(p.parent for p in (ROOT / "checkpoints").glob("*/live_int8.onnx"))
    assert shipped, "fer2013-vgg ships its int8 live graph"
    for run in shipped:
        lm = LoadedRun(run)
        assert lm.backend_status()["onnx-int8"] is None, run.name
        assert lm.live_backend == "onnx-int8" and lm.int8_info["top1_agreement"] >= 0.95
