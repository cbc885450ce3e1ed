"""The command line, end to end, in subprocesses (as a user runs it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fer_core.data import open_dataset
from fer_core.runs import read_config, read_eval, read_metrics, read_predictions

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "fer_core", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    r = cli("train", "--data", "synthetic:n=900", "--model", "cnn4", "--epochs", "1", "--out", str(out),
            "--threads", "2")
    assert r.returncode == 0, r.stderr
    run = Path(r.stdout.strip().splitlines()[-1])
    assert run.is_dir() and run.parent == out
    return run


def test_train_prints_run_dir_and_evaluates(trained_run):
    assert list(read_metrics(trained_run)["epoch"]) == [1]
    assert read_eval(trained_run, "test")["n"] > 0
    assert read_config(trained_run)["synthetic"] is True


def test_evaluate_prints_json_and_caches(trained_run):
    r = cli("evaluate", str(trained_run), "--split", "val", "--tta", "flip")
    assert r.returncode == 0, r.stderr
    line = json.loads(r.stdout.strip().splitlines()[-1])
    assert line["split"] == "val" and line["tta"] == "flip"
    assert 0.0 <= line["accuracy"] <= 1.0 and 0.0 <= line["macro_f1"] <= 1.0 and line["n"] > 0
    res = read_eval(trained_run, "val", tta="flip")
    assert res["accuracy"] == line["accuracy"]
    pred = read_predictions(trained_run, "val", tta="flip")
    assert pred["probs"].shape == (line["n"], 7)
    np.testing.assert_allclose(pred["probs"].sum(1), 1.0, atol=1e-5)


def test_choose_tta_on_validation_becomes_the_evaluate_default(trained_run, tmp_path):
    """The run's TTA is picked on val (never test) and stored; `evaluate` without --tta uses it."""
    import shutil

    from fer_core.evaluate import choose_tta

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    chosen = choose_tta(run)
    cfg = read_config(run)
    val = cfg["eval_tta_val"]
    assert chosen == cfg["eval_tta"] and set(val) == {"none", "flip", "tencrop"}
    assert val[chosen] == max(val.values())
    assert read_eval(run, "val", tta="tencrop") is not None and read_eval(run, "test", tta="tencrop") is None
    r = cli("evaluate", str(run), "--split", "test")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["tta"] == chosen
    r = cli("evaluate", str(run), "--split", "test", "--tta", "none")
    assert json.loads(r.stdout.strip().splitlines()[-1])["tta"] == "none"


@pytest.mark.slow
def test_evaluate_on_another_source_with_only_a_test_split(trained_run, tmp_path):
    faces = open_dataset("synthetic:n=300,seed=5")
    npz = tmp_path / "private.npz"
    np.savez(npz, x=faces.x.numpy(), y=faces.y.numpy(), usage=np.array(["PrivateTest"] * len(faces)))
    r = cli("evaluate", str(trained_run), "--data", str(npz), "--split", "test", "--tta", "tencrop")
    assert r.returncode == 0, r.stderr
    line = json.loads(r.stdout.strip().splitlines()[-1])
    assert line["n"] == 300 and line["data"] == str(npz)
    r = cli("evaluate", str(trained_run), "--data", str(npz), "--split", "val")
    assert r.returncode == 2 and "has no 'val' split" in r.stderr


def test_export_onnx_with_preprocessing_metadata(trained_run, tmp_path):
    """`export` writes an ONNX file that, with the preprocessing from its own metadata, gives the
    run's probabilities on real pixels; a bad run is one clear line and no file."""
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in requirements.txt; not installed here")
    import torch

    from fer_core.preprocess import Preprocess
    from fer_core.model import LoadedRun

    out = tmp_path / "deploy" / "model.onnx"
    r = cli("export", str(trained_run), str(out))
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert info["path"] == str(out) and out.stat().st_size == info["bytes"]
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    classes = json.loads(meta["fer_studio.classes"])
    pre = Preprocess(**json.loads(meta["fer_studio.preprocess"]))
    lm = LoadedRun(trained_run)
    assert classes == list(lm.classes) and pre == lm.preprocess
    faces = open_dataset("synthetic:n=40,seed=3").x[:8]          # uint8 faces, preprocessed from metadata only
    probs = sess.run(None, {"x": pre(faces).numpy()})[0]
    with torch.inference_mode():
        ref = torch.softmax(lm.model(lm.preprocess(faces)), 1).numpy()
    np.testing.assert_allclose(probs, ref, atol=1e-5)
    # no path of the exporting machine in the file (the exporter's per-node stack traces are dropped)
    blob = out.read_bytes()
    assert str(Path(__file__).resolve().parents[1]).encode() not in blob and b"stack_trace" not in blob
    bad = cli("export", str(tmp_path / "no-run"), str(tmp_path / "x.onnx"))
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_models_and_summary():
    r = cli("models")
    assert r.returncode == 0, r.stderr
    for name in ("cnn3", "cnn4", "alexnet_bn", "vgg", "resnet18", "wide_resnet50_2"):
        assert name in r.stdout
    r = cli("summary", "cnn4")
    assert r.returncode == 0, r.stderr
    assert "⌊(48 + 2·2 − 5)/1⌋ + 1 = 48" in r.stdout and "8/8 agree" in r.stdout


def test_synth_writes_an_image_folder_that_loads_back(tmp_path):
    r = cli("synth", "--n", "70", "--out", str(tmp_path / "faces"))
    assert r.returncode == 0, r.stderr
    pngs = list((tmp_path / "faces").rglob("*.png"))
    assert len(pngs) == 70
    back = open_dataset(str(tmp_path / "faces"))
    assert len(back) == 70


def test_bad_input_is_one_clear_line(tmp_path):
    out = tmp_path / "runs"
    r = cli("train", "--data", str(tmp_path / "nope.csv"), "--epochs", "1", "--out", str(out))
    assert r.returncode == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr
    r = cli("train", "--model", "cnn5", "--epochs", "1", "--data", "synthetic:n=100", "--out", str(out))
    assert r.returncode == 2 and "cnn4" in r.stderr
    assert not out.exists(), "a typo must leave no run directory"
    r = cli("evaluate", str(tmp_path))
    assert r.returncode == 2 and "config.json" in r.stderr


@pytest.mark.parametrize("bad", [["--model-kw", "nope=1"], ["--model-kw", "channels=[8,8]"]],
                         ids=["unknown-kwarg", "bad-kwarg-value"])
def test_bad_model_kwargs_leave_no_run_directory(tmp_path, bad):
    """Bad model kwargs are reported before the run directory exists: nothing under --out, nor
    --out itself (the model-name typo is checked in test_bad_input_is_one_clear_line)."""
    out = tmp_path / "runs"
    r = cli("train", *bad, "--epochs", "1", "--data", "synthetic:n=100", "--out", str(out), "--quiet")
    assert r.returncode == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr, r.stderr
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path):
    """DistributedDataParallel with gloo: 2 ranks train, only rank 0 writes the run."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                        "--master_addr=127.0.0.1", "--master_port=29533",
                        "-m", "fer_core", "train", "--data", "synthetic:n=700", "--epochs", "2",
                        "--batch-size", "32", "--out", str(tmp_path), "--name", "ddp", "--quiet",
                        "--threads", "1"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["ddp"]
    run = tmp_path / "ddp"
    assert list(read_metrics(run)["epoch"]) == [1, 2]
    assert read_eval(run, "test") is not None
    assert r.stdout.strip().splitlines()[-1] == str(run)
