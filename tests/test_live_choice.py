"""The Live page's two defaults (fer_core/live/choice.py): strongest model for pictures, and a fast
model for the webcam stream only on a bench record that meets both figures for the current weights."""

from __future__ import annotations

import json

import pytest

from fer_core.live.choice import (FAST_MIN_ACC, RECORD, meets_fast_target, read_record, stream_run,
                                  strongest_run, weights_digest, write_record)
from fer_core.runs import RunInfo, list_runs
from test_faces_predictor import make_run


def test_strongest_run_prefers_the_best_real_run_then_synth_cnn4(tmp_path):
    mk = lambda name, **cfg: RunInfo(path=tmp_path / name, name=name, config=cfg)  # noqa: E731
    runs = [mk("a-vgg", model="vgg", data="synthetic"),
            mk("synth-cnn4-aug", model="cnn4", data="synthetic:n=9"),
            mk("fer2013-cnn4-aug", model="cnn4", data="x.npz", best_val_acc=0.58),
            mk("fer2013-vgg", model="vgg", data="x.npz", best_val_acc=0.71)]
    assert strongest_run(runs).endswith("fer2013-vgg")            # best validation accuracy
    assert strongest_run(runs[:3]).endswith("fer2013-cnn4-aug")
    assert strongest_run(runs[:2]).endswith("synth-cnn4-aug")
    assert strongest_run(runs[:1]).endswith("a-vgg")
    broken = RunInfo(path=tmp_path / "fer2013-x", name="fer2013-x", error="no checkpoint")
    assert strongest_run([broken, runs[1]]).endswith("synth-cnn4-aug")
    assert strongest_run([]) is None


def _bench(ours_ms: float, acc: float, peer_ms: float = 0.37, split: str = "test") -> dict:
    return {"ours_ms": ours_ms, "peer_ms": peer_ms, "ours_acc": acc, "peer_acc": 0.65, "split": split,
            "n": 3589, "peer": "fer==25.10.3", "backend": "onnx"}


@pytest.mark.parametrize("rec, ok, words", [
    (_bench(0.30, 0.69), True, "0.300 ms/face"),
    (_bench(0.37, FAST_MIN_ACC), True, "68.0%"),              # equal on both counts is enough
    (_bench(0.40, 0.70), False, "slower than the peer"),
    (_bench(0.20, 0.67), False, "below 68%"),
    (_bench(0.20, 0.70, split="val"), False, "not measured on PublicTest"),
])
def test_meets_fast_target_needs_both_figures_on_publictest(rec, ok, words):
    got, why = meets_fast_target(rec)
    assert got is ok and words in why


def test_record_counts_only_for_the_weights_it_measured(tmp_path):
    run = make_run(tmp_path, "fast", data="x.npz")
    assert read_record(run) == (None, "no bench record (bench/fast_vs_fer.py --record)")
    write_record(run, _bench(0.3, 0.7))
    rec, why = read_record(run)
    assert rec is not None and why == "" and rec["weights_sha256"] == weights_digest(run)
    # re-exported / retrained weights: the old figures no longer describe the run
    (run / "best.pt").write_bytes((run / "best.pt").read_bytes() + b"\0")
    rec, why = read_record(run)
    assert rec is None and "other weights" in why
    (run / RECORD).write_text("{not json")
    assert read_record(run)[0] is None and "unreadable" in read_record(run)[1]
    (run / RECORD).write_text(json.dumps({"ours_ms": 1}))
    assert read_record(run)[0] is None and "lacks" in read_record(run)[1]
    with pytest.raises(ValueError, match="ours_acc"):
        write_record(run, {"ours_ms": 0.1, "peer_ms": 0.2, "split": "test"})


def test_stream_default_is_the_fast_run_only_when_it_qualifies(tmp_path):
    strong = make_run(tmp_path, "strong", data="x.npz")
    fast = make_run(tmp_path, "fast", data="x.npz", seed=1)
    for run, acc in ((strong, 0.71), (fast, 0.69)):
        cfg = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps({**cfg, "best_val_acc": acc}))
    runs = list_runs([tmp_path])
    path, why = stream_run(runs)
    assert path == str(strong) and "strongest model" in why            # no record: the strongest
    write_record(fast, _bench(0.45, 0.69))
    assert stream_run(runs)[0] == str(strong)                           # slower than the peer
    write_record(fast, _bench(0.30, 0.69))
    path, why = stream_run(runs)
    assert path == str(fast) and "fast model for the stream" in why and "0.300 ms/face" in why
    assert strongest_run(runs) == str(strong)                           # uploads keep the strongest


def test_digest_follows_the_weights_file_of_each_run_kind(tmp_path):
    """Imported runs hash their model file (not files the tool adds beside it, like the int8 graph);
    an ensemble hashes its members; a run whose member is gone has no valid record."""
    import shutil

    from fer_core.runs import write_config

    a, b = make_run(tmp_path, "a", data="x.npz"), make_run(tmp_path, "b", data="x.npz", seed=1)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "model.onnx").write_bytes(b"graph bytes")
    write_config(foreign, {"kind": "foreign", "model": "imported onnx: m.onnx", "foreign": {"file": "model.onnx"}})
    d = weights_digest(foreign)
    (foreign / "live_int8.onnx").write_bytes(b"derived")               # added beside: same weights
    assert weights_digest(foreign) == d
    (foreign / "model.onnx").write_bytes(b"other graph")
    assert weights_digest(foreign) != d
    ens = tmp_path / "ens"                      # an ensemble's config, as create_ensemble writes it
    ens.mkdir()
    write_config(ens, {"kind": "ensemble", "model": "ensemble", "ensemble": {"members": ["../a", "../b"],
                                                                           "weights": [0.5, 0.5]}})
    d = weights_digest(ens)
    (a / "best.pt").write_bytes((a / "best.pt").read_bytes() + b"\0")   # a member changed
    assert weights_digest(ens) != d
    write_record(ens, _bench(0.3, 0.7))
    assert read_record(ens)[0] is not None
    shutil.rmtree(b)
    rec, why = read_record(ens)
    assert rec is None and "cannot hash" in why
