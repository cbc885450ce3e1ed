"""fer_core.rundata without Streamlit: where a run's faces are, its predictions, their alignment.

These are the rules every page and the CLI share (see the module docstring), so they are pinned
here on tiny hand-made runs and face sets: no training, no dashboard.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fer_core.data.faceset import FaceSet
from fer_core.evaluate import confusion_matrix
from fer_core.rundata import (DATA_ENV, DataUnavailable, Predictions, RunData, align_faces, mean_face,
                              resolve_data)

FILE = "fer2013_train_publictest.npz"


def _config(data: str, **extra: object) -> dict[str, object]:
    return {"model": "cnn4", "data": data, "train": {"val_fraction": 0.2, "seed": 3}, **extra}


def _faces(n: int = 30, seed: int = 0) -> FaceSet:
    g = np.random.default_rng(seed)
    split = np.array(["train"] * (n - 10) + ["test"] * 10)
    return FaceSet(x=torch.from_numpy(g.integers(0, 256, (n, 48, 48), dtype=np.uint8)),
                   y=torch.from_numpy(np.arange(n) % 7), split=split, row=np.arange(100, 100 + n))


def _pred(faces: FaceSet, index: np.ndarray) -> Predictions:
    probs = np.full((len(index), 7), 0.1, np.float32)
    probs[np.arange(len(index)), (faces.y.numpy()[index] + 1) % 7] = 0.4
    return Predictions.from_arrays({"index": index, "row": faces.row[index], "label": faces.y.numpy()[index],
                                    "probs": probs}, tuple("abcdefg"), "test", "test")


# --------------------------------------------------------------------------- resolve_data
def test_synthetic_spec_resolves_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_ENV, raising=False)
    d = resolve_data(_config("synthetic:n=100,seed=1"))
    assert d.spec == "synthetic:n=100,seed=1" and d.synthetic and d.note is None
    assert (d.val_fraction, d.seed) == (0.2, 3)


def test_existing_file_is_used_as_written(tmp_path: Path) -> None:
    f = tmp_path / FILE
    f.write_bytes(b"")
    d = resolve_data(_config(f"{f}:split=test"), "/somewhere/else.csv")
    assert d.spec == f"{f}:split=test" and not d.synthetic and d.note is None


def test_missing_file_note_names_the_file_and_where_to_put_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_ENV, raising=False)
    d = resolve_data(_config(f"/machine/that/trained/{FILE}", data_ref={"file": FILE}))
    assert d.spec is None
    assert FILE in d.note and "not on this machine" in d.note
    assert "FER_DATA" in d.note and "FER2013 data path" in d.note
    assert "/machine/that/trained" not in d.note  # a portable reference: no foreign path


def test_user_path_as_file(tmp_path: Path) -> None:
    copy = tmp_path / "my_copy.csv"
    copy.write_text("emotion,pixels,Usage\n")
    d = resolve_data(_config(f"/gone/{FILE}:split=test", data_ref={"file": FILE}), str(copy))
    assert d.spec == f"{copy}:split=test"  # the spec's options are kept
    assert FILE in d.note and str(copy) in d.note and "row id" in d.note


def test_user_path_as_folder_holding_the_file_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "other.npz").write_bytes(b"")
    (tmp_path / FILE).write_bytes(b"")
    cfg = _config(f"/gone/{FILE}", data_ref={"file": FILE})
    assert resolve_data(cfg, str(tmp_path)).spec == str(tmp_path / FILE)
    monkeypatch.setenv(DATA_ENV, str(tmp_path))  # None = use FER_DATA
    assert resolve_data(cfg, None).spec == str(tmp_path / FILE)
    empty = tmp_path / "empty"
    empty.mkdir()
    d = resolve_data(cfg, str(empty))
    assert d.spec is None and FILE in d.note and str(empty) in d.note and "no such file" in d.note


def test_explicit_user_path_that_does_not_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / FILE).write_bytes(b"")
    monkeypatch.setenv(DATA_ENV, str(tmp_path))  # an explicit path wins over FER_DATA
    d = resolve_data(_config(f"/gone/{FILE}", data_ref={"file": FILE}), "/also/missing.csv")
    assert d.spec is None and "/also/missing.csv" in d.note and "does not exist" in d.note


def test_config_without_or_with_invalid_spec() -> None:
    assert "names no data spec" in resolve_data({"model": "cnn4"}).note
    assert resolve_data(_config("synthetic:nonsense")).spec is None


# --------------------------------------------------------------------------- Predictions
def test_predictions_from_arrays_metrics_and_cm() -> None:
    label = np.array([0, 0, 1, 2, 2, 2])
    probs = np.eye(3, dtype=np.float32)[[0, 1, 1, 2, 0, 2]] * 0.8 + 0.2 / 3
    p = Predictions.from_arrays({"index": np.arange(6), "label": label, "probs": probs}, ("a", "b", "c"),
                                "test", "stored eval/test.npz")
    np.testing.assert_array_equal(p.pred, [0, 1, 1, 2, 0, 2])  # argmax when no pred is stored
    np.testing.assert_array_equal(p.row, p.index)  # old files without row ids: row = index
    np.testing.assert_array_equal(p.cm, confusion_matrix(label, p.pred, 3))
    assert p.metrics["accuracy"] == pytest.approx(4 / 6)
    assert len(p) == 6 and p.source == "stored eval/test.npz" and p.ferplus_votes is None


# --------------------------------------------------------------------------- alignment
def test_align_same_index() -> None:
    faces = _faces()
    index = np.flatnonzero(faces.split == "test")
    np.testing.assert_array_equal(align_faces(_pred(faces, index), faces, "x"), index)


def test_align_permuted_copy_by_row_id() -> None:
    faces = _faces()
    index = np.flatnonzero(faces.split == "test")
    pred = _pred(faces, index)
    perm = np.random.default_rng(1).permutation(len(faces))
    copy = faces.subset(perm)
    pos = align_faces(pred, copy, "copy.csv")
    assert not np.array_equal(pos, index)
    np.testing.assert_array_equal(copy.x.numpy()[pos], faces.x.numpy()[index])
    np.testing.assert_array_equal(copy.row[pos], pred.row)


def test_align_refuses_different_data() -> None:
    faces = _faces()
    index = np.flatnonzero(faces.split == "test")
    pred = _pred(faces, index)
    relabeled = FaceSet(x=faces.x, y=(faces.y + 1) % 7, split=faces.split, row=faces.row)
    with pytest.raises(DataUnavailable, match=r"other.csv .*10 of 10 labels differ"):
        align_faces(pred, relabeled, "other.csv")
    other_rows = FaceSet(x=faces.x, y=faces.y, split=faces.split, row=faces.row + 1000)
    with pytest.raises(DataUnavailable, match="does not contain the rows"):
        align_faces(pred, other_rows, "other.csv")


# --------------------------------------------------------------------------- RunData
def _run(tmp_path: Path, **config: object) -> Path:
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(_config("synthetic:n=100", **config)))
    return run


def test_available_splits(tmp_path: Path) -> None:
    run = _run(tmp_path)
    assert RunData(run).available_splits() == ["test"]  # nothing known: test
    run = _run(tmp_path / "b", data_summary={"train": 80, "val": 20})
    assert RunData(run).available_splits() == ["val", "train"]
    np.savez(run / "eval" / "test.npz", index=np.arange(2), label=np.zeros(2), probs=np.ones((2, 7)) / 7)
    assert RunData(run).available_splits() == ["test", "val", "train"]


def test_stored_predictions(tmp_path: Path) -> None:
    run = _run(tmp_path, classes=list("abcdefg"))
    rd = RunData(run, None)
    assert rd.stored_predictions("test") is None and rd.classes == tuple("abcdefg") and rd.synthetic
    np.savez(run / "eval" / "test.npz", index=np.array([4, 2]), row=np.array([40, 20]), label=np.array([1, 2]),
             probs=np.eye(7, dtype=np.float32)[[1, 3]])
    p = rd.stored_predictions("test")
    assert p is not None and p.source == "stored eval/test.npz" and p.key
    np.testing.assert_array_equal(p.row, [40, 20])
    assert p.metrics["accuracy"] == 0.5
    (run / "eval" / "val.npz").write_bytes(b"not an npz")
    with pytest.raises(DataUnavailable, match="unreadable"):
        rd.stored_predictions("val")


def test_mean_face() -> None:
    faces = _faces()
    train = faces.x.numpy()[faces.split == "train"].astype(np.float64)
    np.testing.assert_allclose(mean_face(faces), train.mean(0) / 255.0, atol=1e-6)
    test_only = faces.subset(np.flatnonzero(faces.split == "test"))  # no train split: all faces
    np.testing.assert_allclose(mean_face(test_only), test_only.x.numpy().astype(np.float64).mean(0) / 255.0,
                               atol=1e-6)
