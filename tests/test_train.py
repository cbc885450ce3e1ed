"""Training, run directory, checkpoint safety, resume and augmentation."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fer_core.augment import build_augment
from fer_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from fer_core.preprocess import Preprocess
from fer_core.model import LoadedRun
from fer_core.runs import inspect_run, read_config, read_metrics
from fer_core.train import TrainConfig, fit

ROOT = Path(__file__).resolve().parents[1]


def _cfg(**kw) -> TrainConfig:
    base = dict(data="tiny", model="cnn4", epochs=2, batch_size=64, aug="basic", threads=2)
    base.update(kw)
    return TrainConfig(**base)


def _no_time(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=["time_s"]).reset_index(drop=True)


def test_fit_writes_run_directory(tmp_path, tiny_faces):
    run = fit(_cfg(), run_dir=tmp_path / "r", faces=tiny_faces)
    for name in ("config.json", "metrics.csv", "best.pt", "last.pt"):
        assert (run / name).is_file(), name
    m = read_metrics(run)
    assert list(m["epoch"]) == [1, 2]
    cfg = read_config(run)
    assert cfg["model"] == "cnn4" and cfg["preprocess"]["normalize"] is True
    assert cfg["classes"][0] == "angry" and cfg["finished"] is True
    for name in ("best.pt", "last.pt"):  # plain types + tensors only
        ck = torch.load(run / name, weights_only=True)
        assert ck["format"] == 1 and "state_dict" in ck
    lm = LoadedRun(run)
    assert not lm.model.training
    out = lm.model(lm.preprocess(tiny_faces.x[:4]))
    assert out.shape == (4, 7)


def test_same_seed_same_metrics(tmp_path, tiny_faces):
    a = fit(_cfg(aug="strong"), run_dir=tmp_path / "a", faces=tiny_faces)
    b = fit(_cfg(aug="strong"), run_dir=tmp_path / "b", faces=tiny_faces)
    pd.testing.assert_frame_equal(_no_time(read_metrics(a)), _no_time(read_metrics(b)))
    c = fit(_cfg(aug="strong", seed=1), run_dir=tmp_path / "c", faces=tiny_faces)
    assert not _no_time(read_metrics(a)).equals(_no_time(read_metrics(c)))


def test_resume_matches_uninterrupted(tmp_path, tiny_faces):
    full = fit(_cfg(epochs=3, ema=0.9), run_dir=tmp_path / "full", faces=tiny_faces)

    class Stop(Exception):
        pass

    def stop_after_2(ev):
        if ev["kind"] == "epoch" and ev["epoch"] == 2:
            raise Stop

    with pytest.raises(Stop):
        fit(_cfg(epochs=3, ema=0.9), run_dir=tmp_path / "cut", faces=tiny_faces, progress=stop_after_2)
    assert list(read_metrics(tmp_path / "cut")["epoch"]) == [1, 2]
    fit(resume=tmp_path / "cut", faces=tiny_faces)
    pd.testing.assert_frame_equal(_no_time(read_metrics(full)), _no_time(read_metrics(tmp_path / "cut")))


def test_resume_drops_rows_after_last_checkpoint(tmp_path, tiny_faces):
    run = fit(_cfg(epochs=2), run_dir=tmp_path / "r", faces=tiny_faces)
    # Simulate a kill after epoch 3's metrics row was written but before last.pt was replaced.
    with open(run / "metrics.csv", "a") as f:
        f.write("3,1.0,0.001,1.0,0.5,1.0,0.5\n")
    fit(resume=run, faces=tiny_faces, max_epochs=3)
    assert list(read_metrics(run)["epoch"]) == [1, 2, 3]


def test_crafted_pickle_is_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "evil.pt"
    with open(bad, "wb") as f:
        pickle.dump({"state_dict": Evil()}, f)
    torch.save({"state_dict": {}, "x": Evil()}, tmp_path / "evil2.pt")
    for p in (bad, tmp_path / "evil2.pt"):
        with pytest.raises(CheckpointError, match="refusing to load"):
            load_checkpoint(p)
    assert not marker.exists()


def test_checkpoint_errors_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "trunc.pt").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "trunc.pt")
    save_checkpoint(tmp_path / "ok.pt", {"state_dict": {"w": torch.ones(2)}})
    assert load_checkpoint(tmp_path / "ok.pt")["format"] == 1
    assert not list(tmp_path.glob(".*.tmp"))


BACKENDS = ["cv2", "torch"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("preset", ["basic", "strong"])
def test_augment_is_per_image(preset, backend):
    torch.manual_seed(0)
    face = torch.rand(1, 1, 48, 48)
    out = build_augment(preset, backend=backend)(face.repeat(64, 1, 1, 1))
    flat = out.flatten(1)
    distinct = torch.unique(flat.round(decimals=4), dim=0)
    assert len(distinct) > 16, "identical inputs must get independent random parameters"
    assert out.min() >= 0 and out.max() <= 1
    # two identical faces side by side in one batch: almost never the same augmentation
    pair = build_augment(preset, backend=backend)
    differ = sum(not torch.allclose(o[0], o[1]) for o in (pair(face.repeat(2, 1, 1, 1)) for _ in range(20)))
    assert differ >= 15, differ


@pytest.mark.parametrize("backend", BACKENDS)
def test_augment_seeded_is_deterministic(backend):
    x = torch.rand(32, 1, 48, 48)
    aug = build_augment("strong", backend=backend)
    torch.manual_seed(7)
    a = aug(x)
    torch.manual_seed(7)
    b = aug(x)
    torch.manual_seed(8)
    c = aug(x)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_augment_backends_draw_the_same_parameters():
    """Same seed -> the same flips/affines/erasing in both backends; only interpolation rounding
    differs (OpenCV uses 1/32-pixel fixed-point weights)."""
    x = torch.rand(64, 1, 48, 48)
    for preset in ("basic", "strong"):
        out = {}
        for backend in BACKENDS:
            torch.manual_seed(3)
            out[backend] = build_augment(preset, backend=backend)(x)
        diff = (out["cv2"] - out["torch"]).abs()
        assert float(diff.max()) < 0.06 and float(diff.mean()) < 0.005, (preset, float(diff.max()))
    with pytest.raises(ValueError, match="backend"):
        build_augment("basic", backend="kornia")


@pytest.mark.parametrize("backend", BACKENDS)
def test_augment_geometry_is_exact(backend):
    """The hand-written warp: no-op maps copy exactly, a forced flip is torch.flip, a pure shift
    moves a dot by the drawn amount, erasing blanks a box and colour jitter keeps [0, 1]."""
    from fer_core.augment import AugSpec, BatchAugment

    torch.manual_seed(0)
    x = torch.rand(16, 1, 48, 48)
    # OpenCV copies bit-exactly; grid_sample's normalised coordinates round at float32
    same = torch.equal if backend == "cv2" else (lambda a, b: torch.allclose(a, b, rtol=0, atol=1e-5))
    assert same(BatchAugment(AugSpec(p_flip=0, p_affine=0), backend)(x), x)
    assert same(BatchAugment(AugSpec(p_flip=1, p_affine=0), backend)(x), x.flip(-1))
    dot = torch.zeros(1, 1, 48, 48)
    dot[0, 0, 20, 10] = 1.0
    shift = BatchAugment(AugSpec(p_flip=0, p_affine=1, degrees=0, scale=(1, 1), translate=0.1), backend)
    torch.manual_seed(1)
    maps = shift.inverse_maps(1, 48, 48)
    torch.manual_seed(1)
    out = shift(dot)
    dx, dy = -maps[0, 0, 2], -maps[0, 1, 2]          # inverse map of a translation is -t
    assert abs(dx) <= 4.8 + 1e-9 and abs(dy) <= 4.8 + 1e-9
    cy, cx = (out[0, 0] * torch.arange(48.0)[:, None]).sum() / out.sum(), \
        (out[0, 0] * torch.arange(48.0)[None, :]).sum() / out.sum()
    # OpenCV interpolates with 1/32-pixel fixed-point weights: exact to ~0.02 px
    assert abs(float(cx) - (10 + dx)) < 0.02 and abs(float(cy) - (20 + dy)) < 0.02
    erase = BatchAugment(AugSpec(p_flip=0, p_affine=0, p_erase=1), backend)(torch.ones(8, 1, 48, 48))
    frac = (erase == 0).float().mean(dim=(1, 2, 3))
    assert ((frac >= 0.015) & (frac <= 0.25)).all(), frac
    jit = BatchAugment(AugSpec(p_flip=0, p_affine=0, p_color=1), backend)(x)
    assert not torch.equal(jit, x) and jit.min() >= 0 and jit.max() <= 1


def test_augment_none_is_identity():
    x = torch.rand(8, 1, 48, 48)
    assert torch.equal(build_augment("none")(x), x)


def test_normalize_and_aug_switches_change_training(tmp_path, tiny_faces):
    pre = Preprocess.fit(tiny_faces.x, normalize=True)
    assert pre.normalize and abs(pre.mean) > 0.01 and abs(pre.std - 1) > 0.01
    assert Preprocess.fit(tiny_faces.x, normalize=False) == Preprocess()
    runs = {k: fit(_cfg(epochs=1, **kw), run_dir=tmp_path / k, faces=tiny_faces)
            for k, kw in {"plain": dict(normalize=False, aug="none"), "norm": dict(aug="none"),
                          "aug": dict(aug="strong")}.items()}
    losses = {k: float(read_metrics(r)["train_loss"].iloc[0]) for k, r in runs.items()}
    assert len(set(losses.values())) == 3, losses


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="augmentation preset"):
        TrainConfig(aug="wild")
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="lbfgs")


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "fer_core", *args], capture_output=True, text=True,
                          cwd=kw.pop("cwd", ROOT), env=env, timeout=kw.pop("timeout", 300), **kw)


# A tiny training run in its own process whose progress callback SIGKILLs that process at a chosen
# event (FER_KILL_AT=kind:epoch:step, e.g. batch:2:5 or epoch:2:0): a real kill at a known point.
KILL_DRIVER = """
import json, os, signal, sys
from fer_core.train import TrainConfig, fit
kind, epoch, step = os.environ.get("FER_KILL_AT", "none:0:0").split(":")
def progress(ev):
    if ev["kind"] == kind and ev["epoch"] == int(epoch) and ev.get("step", 0) == int(step):
        os.kill(os.getpid(), signal.SIGKILL)
fit(TrainConfig(**json.loads(sys.argv[2])), run_dir=sys.argv[1], progress=progress)
"""
KILL_CFG = dict(data="synthetic:n=600", model="cnn4", model_kwargs={"channels": [8, 16, 16, 16], "fc": 32},
                epochs=3, batch_size=32, aug="strong", ema=0.9, threads=1)


def _driver(run: Path, kill_at: str | None) -> subprocess.CompletedProcess:
    import json

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("FER_KILL_AT", None)
    if kill_at:
        env["FER_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-c", KILL_DRIVER, str(run), json.dumps(KILL_CFG)],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_sigkill_leaves_a_resumable_run(tmp_path):
    """SIGKILL real training processes at chosen steps (before the first checkpoint, mid-epoch,
    right after a checkpoint); each run loads, resumes from the CLI, and ends with exactly the
    metrics of an uninterrupted run."""
    ref = _driver(tmp_path / "ref", None)
    assert ref.returncode == 0, ref.stderr[-3000:]
    expected = _no_time(read_metrics(tmp_path / "ref"))
    assert list(expected["epoch"]) == [1, 2, 3]
    for kill_at, done in (("batch:1:1", []), ("batch:2:5", [1]), ("epoch:2:0", [1, 2])):
        run = tmp_path / kill_at.replace(":", "-")
        r = _driver(run, kill_at)
        assert r.returncode == -signal.SIGKILL, (kill_at, r.returncode, r.stderr[-3000:])
        info = inspect_run(run)
        assert info.config["model"] == "cnn4" and not info.config.get("finished")
        assert list(read_metrics(run)["epoch"]) == done, kill_at  # never torn, nothing half-written
        assert (run / "last.pt").exists() == bool(done), kill_at
        if done:
            assert load_checkpoint(run / "last.pt")["epoch"] == done[-1]
        r = _cli("train", "--resume", str(run), "--quiet", "--no-eval")
        assert r.returncode == 0, (kill_at, r.stderr[-3000:])
        pd.testing.assert_frame_equal(_no_time(read_metrics(run)), expected, obj=kill_at)
        assert read_config(run)["finished"] is True
        LoadedRun(run)


def test_failed_start_leaves_no_run_directory(tmp_path, tiny_faces, monkeypatch):
    """Bad input fails before a run directory exists; a failure after this call made the
    directory (before training) removes it; a directory that already existed is kept."""
    root = tmp_path / "runs"
    with pytest.raises(ValueError, match="cnn4"):
        fit(_cfg(model="cnn5"), faces=tiny_faces, runs_root=root)
    with pytest.raises(ValueError, match="kwargs"):
        fit(_cfg(model_kwargs={"nope": 1}), faces=tiny_faces, runs_root=root)
    assert not root.exists()

    import fer_core.train as train_mod

    def disk_full(*a, **kw):
        raise OSError("No space left on device")

    monkeypatch.setattr(train_mod, "write_config", disk_full)
    with pytest.raises(OSError, match="No space"):
        fit(_cfg(), faces=tiny_faces, runs_root=root)
    assert not root.exists() or not any(root.iterdir())
    with pytest.raises(OSError, match="No space"):
        fit(_cfg(), faces=tiny_faces, run_dir=root / "named")
    assert not (root / "named").exists()
    (root / "mine").mkdir(parents=True)
    with pytest.raises(OSError, match="No space"):
        fit(_cfg(), faces=tiny_faces, run_dir=root / "mine")
    assert (root / "mine").is_dir()


def test_ferplus_majority_and_error_report():
    from fer_core.evaluate import ferplus_error_report, ferplus_majority

    votes = np.array([
        [0, 8, 2, 0, 0, 0, 0, 0, 0, 0],   # happiness -> 3
        [5, 0, 0, 5, 0, 0, 0, 0, 0, 0],   # tie -> -1
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 10],  # not a face -> -1
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],   # no votes -> -1
        [1, 0, 0, 0, 0, 0, 9, 0, 0, 0],   # fear -> 2
    ])
    np.testing.assert_array_equal(ferplus_majority(votes), [3, -1, -1, -1, 2])
    labels = np.array([6, 4, 0, 0, 5])   # FER2013 labels
    preds = np.array([3, 6, 1, 0, 2])    # face 0: crowd sides with model; 4: with model too
    rep = ferplus_error_report(labels, preds, votes)
    assert rep["errors"] == 4 and rep["with_votes"] == 4
    assert rep["ferplus_agrees_with_model"] == 2 and rep["ferplus_agrees_with_label"] == 0
