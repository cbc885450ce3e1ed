"""The Dataset view's core: penultimate features (registry, ensemble, imported runs), the cached
UMAP map, and the label-issue ranking measured against SynthFER's planted label noise."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fer_core.dataset.embedding as emb_mod
from fer_core.data.synthetic import clean_labels, generate
from fer_core.dataset.embedding import (Embedding, embedding_path, layout, load_or_compute_embedding,
                                        probability_embedding)
from fer_core.dataset.features import feature_layer, feature_reason, penultimate_features
from fer_core.dataset.label_issues import (baseline_orders, ferplus_disagrees, kfold_probs, out_of_sample_note,
                                           precision_at_k, rank_label_issues)
from fer_core.labels import EMOTIONS
from fer_core.model import LoadedRun, ModelUnavailable

ROOT = Path(__file__).resolve().parents[1]
SYNTH = ROOT / "checkpoints" / "synth-cnn4-aug"
NOISE_N, NOISE_SEED = 800, 123  # not the faces the shipped run was trained on (n=12000, seed=0)


@pytest.fixture(scope="module")
def synth_run(tmp_path_factory) -> Path:
    """A copy of the shipped SynthFER run (the cache is written into the run; not into checkpoints/)."""
    run = tmp_path_factory.mktemp("runs") / SYNTH.name
    run.mkdir()
    for name in ("config.json", "best.pt"):
        shutil.copy2(SYNTH / name, run / name)
    return run


@pytest.fixture(scope="module")
def loaded(synth_run) -> LoadedRun:
    return LoadedRun(synth_run)


@pytest.fixture(scope="module")
def noisy():
    x, y = generate(NOISE_N, seed=NOISE_SEED, label_noise=0.1)
    return x, y, clean_labels(NOISE_N, NOISE_SEED)


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


def _head_check(feats: np.ndarray, linear: nn.Module, logits: torch.Tensor) -> None:
    """The features are the last layer's input: applying that layer gives the model's output."""
    w, b = linear.weight.detach().numpy(), linear.bias.detach().numpy()
    np.testing.assert_allclose(feats @ w.T + b, logits.numpy(), atol=1e-4)


# ----------------------------------------------------------------------------- SynthFER labels
def test_clean_labels_are_the_labels_before_the_flips():
    _, y0 = generate(150, seed=9, label_noise=0.0)
    _, y1 = generate(150, seed=9, label_noise=0.3)
    clean = clean_labels(150, seed=9)
    assert np.array_equal(clean, y0)
    flipped = clean != y1
    assert 0.15 < flipped.mean() < 0.45 and clean.dtype == np.int64


# ----------------------------------------------------------------------------- features
def test_penultimate_features_of_a_registry_run(loaded, noisy):
    x = noisy[0][:50]
    assert feature_layer(loaded) == "classifier.fc2" and feature_reason(loaded) is None
    calls: list[tuple[int, int]] = []
    feats = penultimate_features(loaded, x, batch_size=16, progress=lambda d, t: calls.append((d, t)))
    assert feats.shape == (50, 256) and feats.dtype == np.float32
    assert calls == [(16, 50), (32, 50), (48, 50), (50, 50)]
    with torch.no_grad():
        logits = loaded.model(loaded.inputs(x))
    _head_check(feats, loaded.model.classifier.fc2, logits)
    np.testing.assert_allclose(penultimate_features(loaded, x), feats, atol=1e-5)  # batching changes nothing
    assert _no_hooks(loaded.model) and not loaded.model.training
    with pytest.raises(Exception):
        penultimate_features(loaded, np.zeros((3, 7), np.uint8))  # not faces: the forward pass fails
    assert _no_hooks(loaded.model)  # ... and the hooks are gone anyway


def test_ensemble_features_concatenate_the_members(tmp_path, noisy):
    from fer_core.preprocess import Preprocess
    from fer_core.runs import write_config

    members = [SYNTH, ROOT / "checkpoints" / "synth-cnn4-norm"]
    run = tmp_path / "ens"
    run.mkdir()
    write_config(run, {"kind": "ensemble", "model": "ensemble", "classes": list(EMOTIONS),
                       "preprocess": Preprocess(size=48).to_dict(), "data": "synthetic:n=12000,seed=0",
                       "ensemble": {"members": [str(m) for m in members], "weights": [0.5, 0.5]}})
    ens = LoadedRun(run)
    x = noisy[0][:20]
    assert feature_layer(ens) == "members.0.classifier.fc2, members.1.classifier.fc2"
    feats = penultimate_features(ens, x)
    assert feats.shape == (20, 512)
    for i, m in enumerate(members):  # each block is that member's own features (its own preprocessing)
        np.testing.assert_allclose(feats[:, 256 * i:256 * (i + 1)], penultimate_features(LoadedRun(m), x),
                                   atol=1e-4)


class TinyNet(nn.Module):
    """fc1 is registered after fc but runs first: "last" must mean last executed."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(12, 7)
        self.fc1 = nn.Linear(8, 12)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv(x)), 4).mean((2, 3))
        return self.fc(F.relu(self.fc1(x)))


@pytest.fixture(scope="module")
def foreign_runs(tmp_path_factory):
    """The same small network imported as torch.export, ONNX (onnx2torch) and TorchScript."""
    from fer_core.__main__ import main

    tmp = tmp_path_factory.mktemp("foreign")
    torch.manual_seed(0)
    net = TinyNet().eval()
    ex = torch.zeros(2, 1, 48, 48)
    files = {"export": tmp / "n.pt2", "onnx": tmp / "n.onnx", "ts": tmp / "n_ts.pt"}
    torch.export.save(torch.export.export(net, (ex,), dynamic_shapes=({0: torch.export.Dim("b", min=1,
                                                                                             max=4096)},)),
                      files["export"])
    torch.onnx.export(net, (ex,), str(files["onnx"]), dynamo=False, input_names=["input_1"],
                      dynamic_axes={"input_1": {0: "batch"}}, opset_version=15)
    torch.jit.save(torch.jit.script(net), files["ts"])
    for name, f in files.items():
        assert main(["import", str(f), "--name", name, "--out", str(tmp / "runs")]) == 0
    return tmp / "runs", net


@pytest.mark.parametrize("name,layer", [("export", "net.fc"), ("onnx", "net.fc/Gemm")])
def test_features_of_imported_models(foreign_runs, name, layer, noisy):
    root, net = foreign_runs
    m = LoadedRun(root / name)
    assert feature_layer(m) == layer and feature_reason(m) is None
    x = noisy[0][:12]
    feats = penultimate_features(m, x)
    assert feats.shape == (12, 12)
    with torch.no_grad():
        logits = net(m.inputs(x))  # the adapter hands 1×48×48 NCHW input to the network unchanged
    _head_check(feats, net.fc, logits)
    assert _no_hooks(m.model)


def test_torchscript_falls_back_to_probabilities(foreign_runs, noisy):
    root, _ = foreign_runs
    m = LoadedRun(root / "ts")
    assert "TorchScript" in (feature_reason(m) or "") and feature_layer(m) is None
    with pytest.raises(ModelUnavailable, match="TorchScript"):
        penultimate_features(m, noisy[0][:4])
    x = noisy[0][:40]
    e = load_or_compute_embedding(m, x, split="test", data_key="synthetic|40")
    assert e.source.startswith("class probabilities (why: TorchScript")
    np.testing.assert_allclose(e.features, m.probs(x), atol=1e-6)
    assert e.xy.shape == (40, 2) and np.isfinite(e.xy).all() and e.method == "umap"


def test_predictions_only_run_maps_its_probabilities(tmp_path, monkeypatch):
    import pandas as pd

    from fer_core.__main__ import main
    from fer_core.data.spec import open_dataset
    from fer_core.rundata import RunData

    data = "synthetic:n=300,seed=4"
    faces = open_dataset(data, val_fraction=0.1, seed=0)
    test = np.flatnonzero(faces.split == "test")
    p = np.random.default_rng(0).dirichlet(np.ones(7), size=len(test))
    df = pd.DataFrame(p, columns=list(EMOTIONS))
    df.insert(0, "row", faces.row[test])
    df.to_csv(tmp_path / "preds.csv", index=False)
    assert main(["import", "--predictions", str(tmp_path / "preds.csv"), "--name", "preds",
                 "--out", str(tmp_path), "--data", data]) == 0
    run = tmp_path / "preds"
    with pytest.raises(ModelUnavailable) as exc:
        LoadedRun(run)
    pred = RunData(run, "").stored_predictions("test")
    e = probability_embedding(run, pred.probs, split="test", data_key="d", reason=str(exc.value))
    assert "predictions only" in e.source and e.source.startswith("class probabilities (why: ")
    np.testing.assert_allclose(e.features, pred.probs, atol=1e-6)
    assert embedding_path(run, "test").is_file() and len(e) == len(test)
    monkeypatch.setattr(emb_mod, "layout", lambda *a, **k: pytest.fail("the cached map was recomputed"))
    again = probability_embedding(run, pred.probs, split="test", data_key="d", reason=str(exc.value))
    np.testing.assert_array_equal(again.xy, e.xy)


# ----------------------------------------------------------------------------- layout + cache
def test_layout_is_deterministic_and_keeps_clusters_apart():
    rng = np.random.default_rng(0)
    f = np.concatenate([rng.normal(0, 1, (60, 64)), rng.normal(8, 1, (60, 64))]).astype(np.float32)
    group = np.repeat([0, 1], 60)
    xy, method = layout(f, seed=3)
    assert method == "umap" and xy.shape == (120, 2) and xy.dtype == np.float32
    np.testing.assert_array_equal(layout(f, seed=3)[0], xy)
    d = ((xy[:, None] - xy[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (group[d.argmin(1)] == group).mean() > 0.95  # each point's nearest neighbour is in its cluster
    small, m = layout(f[[0, 1, 2, 60, 61]])
    assert m == "pca" and small.shape == (5, 2) and np.ptp(small[:, 0]) > 0
    assert layout(f[:1])[0].shape == (1, 2)
    with pytest.raises(ValueError, match="layout method"):
        layout(f, method="mds")


def test_embedding_cache_is_reused_and_recomputed_when_stale(synth_run, loaded, noisy, monkeypatch):
    calls: list[int] = []
    real = emb_mod.layout

    def counting(features, **kw):
        calls.append(len(features))
        return real(features, **kw)

    monkeypatch.setattr(emb_mod, "layout", counting)
    x = noisy[0][:80]
    steps: list[tuple[float, str]] = []
    e1 = load_or_compute_embedding(loaded, x, split="val", data_key="d1", progress=lambda f, t: steps.append((f, t)))
    assert isinstance(e1, Embedding) and calls == [80]
    assert e1.source == "penultimate layer 'classifier.fc2' (256-d)" and e1.method == "umap" and e1.split == "val"
    fr = [f for f, _ in steps]
    assert fr == sorted(fr) and fr[-1] == 1.0 and any("features" in t for _, t in steps)
    path = embedding_path(synth_run, "val")
    with np.load(path, allow_pickle=False) as z:  # plain arrays, no pickle
        meta = json.loads(str(z["meta"]))
        np.testing.assert_array_equal(z["xy"], e1.xy)
    assert meta["n"] == 80 and meta["data_key"] == "d1"

    e2 = load_or_compute_embedding(loaded, x, split="val", data_key="d1")
    assert calls == [80] and e2.key == e1.key  # reused
    np.testing.assert_array_equal(e2.features, e1.features)
    load_or_compute_embedding(loaded, x, split="val", data_key="d2")        # another data version
    load_or_compute_embedding(loaded, x[:70], split="val", data_key="d2")   # another number of faces
    assert calls == [80, 80, 70]

    st = (synth_run / "best.pt").stat()
    os.utime(synth_run / "best.pt", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new checkpoint version
    newer = LoadedRun(synth_run)
    load_or_compute_embedding(newer, x[:70], split="val", data_key="d2")
    load_or_compute_embedding(newer, x[:70], split="val", data_key="d2")
    assert calls == [80, 80, 70, 70]

    path.write_bytes(b"not an npz")  # a damaged cache is recomputed, not an error
    e3 = load_or_compute_embedding(newer, x[:70], split="val", data_key="d2")
    assert calls == [80, 80, 70, 70, 70] and e3.xy.shape == (70, 2)
    with np.load(path, allow_pickle=False) as z:
        assert z["xy"].shape == (70, 2)


# ----------------------------------------------------------------------------- label issues
def test_ranking_finds_synthfer_planted_label_noise(loaded, noisy):
    x, y, clean = noisy
    truth = clean != y
    base = truth.mean()
    assert 0.03 < base < 0.2
    probs = loaded.probs(x)
    issues = rank_label_issues(y, probs)
    assert sorted(issues.order) == list(range(len(y)))
    nf = int(issues.flagged.sum())
    assert set(issues.order[:nf]) == set(np.flatnonzero(issues.flagged))
    assert np.all(np.diff(issues.score[issues.order[:nf]]) <= 0)
    np.testing.assert_allclose(issues.score, 1 - probs[np.arange(len(y)), y], atol=1e-6)  # self-confidence
    ks = (50, 100)
    ours = precision_at_k(issues.order, truth, ks)
    base_orders = baseline_orders(y, probs, seed=0)
    rnd = precision_at_k(base_orders["random"], truth, ks)
    low = precision_at_k(base_orders["low confidence"], truth, ks)
    for k in ks:
        assert ours[k] > 3 * max(rnd[k], base), (k, ours, rnd, base)
        assert ours[k] > low[k] + 0.2, (k, ours, low)
    assert truth[issues.flagged].mean() > 3 * base  # flagged faces are mostly planted flips

    # the k-fold route: out-of-sample probabilities from the penultimate features
    feats = penultimate_features(loaded, x)
    kp = kfold_probs(feats, y, k=5, seed=0, num_classes=7)
    assert kp.shape == (len(y), 7)
    np.testing.assert_allclose(kp.sum(1), 1, atol=1e-5)
    kf = precision_at_k(rank_label_issues(y, kp).order, truth, ks)
    assert kf[50] > 3 * max(rnd[50], base), (kf, rnd, base)


def test_unlabeled_faces_get_no_score_and_go_last():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(7), size=40)
    y = probs.argmax(1)
    y[:5] = (y[:5] + 1) % 7  # five wrong labels
    y[[7, 9]] = -1
    r = rank_label_issues(y, probs)
    assert np.isnan(r.score[[7, 9]]).all() and not r.flagged[[7, 9]].any()
    assert set(r.order[-2:]) == {7, 9} and sorted(r.order) == list(range(40))
    assert set(r.order[:5]) == set(range(5))
    with pytest.raises(ValueError, match="labels must be"):
        rank_label_issues(np.full(40, 7), probs)


def test_precision_at_k_by_hand():
    order = [3, 1, 0, 2, 4]
    truth = np.array([False, True, False, True, True])
    assert precision_at_k(order, truth, ks=(1, 2, 3, 5, 10)) == {1: 1.0, 2: 1.0, 3: 2 / 3, 5: 0.6}


def test_ferplus_disagreement_by_hand():
    #            neutral happy surprise sad anger disgust fear contempt unknown NF
    votes = np.array([[4, 6, 0, 0, 0, 0, 0, 0, 0, 0],   # happy, labelled happy
                      [0, 6, 0, 0, 2, 0, 0, 0, 2, 0],   # happy, labelled angry -> disagrees
                      [5, 5, 0, 0, 0, 0, 0, 0, 0, 0],   # tie -> no majority
                      [0, 0, 0, 0, 0, 0, 0, 0, 2, 8],   # not a face -> excluded
                      [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],   # no votes
                      [0, 0, 0, 0, 7, 0, 0, 3, 0, 0],   # anger, labelled sad -> disagrees
                      [0, 0, 0, 0, 9, 0, 0, 0, 1, 0]])  # unlabeled face
    labels = np.array([3, 0, 3, 3, 3, 4, -1])
    want = [False, True, False, False, False, True, False]
    assert ferplus_disagrees(labels, votes, EMOTIONS).tolist() == want
    rev = tuple(reversed(EMOTIONS))  # a run with another class order: labels are indices into it
    relabel = np.array([rev.index(EMOTIONS[v]) if v >= 0 else -1 for v in labels])
    assert ferplus_disagrees(relabel, votes, rev).tolist() == want
    with pytest.raises(ValueError, match="FER\\+"):
        ferplus_disagrees(labels, None, EMOTIONS)


def test_out_of_sample_note_and_baselines():
    assert out_of_sample_note({}, "val")[0] and out_of_sample_note({}, "test")[0]
    oos, note = out_of_sample_note({}, "train")
    assert not oos and "k-fold" in note
    assert "trained elsewhere" in out_of_sample_note({"kind": "foreign"}, "test")[1]
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.5, 0.5], [0.8, 0.2]])
    y = np.array([0, 1, -1, 0])
    b = baseline_orders(y, probs, seed=2)
    assert b["low confidence"].tolist() == [1, 3, 0, 2]
    assert sorted(b["random"][:3]) == [0, 1, 3] and b["random"][3] == 2
    np.testing.assert_array_equal(baseline_orders(y, probs, seed=2)["random"], b["random"])
