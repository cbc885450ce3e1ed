"""Label triage: the marks store (restart, undo, crash, corruption, threads), its CSV export, and
applying that CSV to training data (`apply_relabel`, `fit(relabel=...)`, `train --relabel`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import fer_core.train as train_mod
from fer_core.data import open_dataset
from fer_core.data.ferplus import FERPLUS_VOTE_NAMES
from fer_core.data.spec import DataError
from fer_core.dataset.relabel import RelabelSummary, apply_relabel, read_relabel, relabel_line
from fer_core.dataset.triage import COLUMNS, TriageFileError, TriageStore, ferplus_votes_of, marks_path
from fer_core.labels import EMOTIONS
from fer_core.runs import read_config
from fer_core.train import TrainConfig, fit

ROOT = Path(__file__).resolve().parents[1]


def _store(tmp_path: Path) -> TriageStore:
    return TriageStore(tmp_path / "run", classes=EMOTIONS)


def test_marks_survive_a_restart_and_are_read_back(tmp_path):
    s = _store(tmp_path)
    s.mark("val", 3, row=103, label="sad", kind="wrong_label", new_label="neutral")
    s.mark("val", 7, row=107, label="fear", kind="not_face")
    s.mark("test", 1, row=201, label="happy", kind="ambiguous")
    doc = json.loads(marks_path(tmp_path / "run").read_text())
    assert doc["version"] == 1 and set(doc["marks"]) == {"val:3", "val:7", "test:1"}

    again = TriageStore(tmp_path / "run", classes=EMOTIONS)   # a new process / session
    m = again.get("val", 3)
    assert (m["row"], m["label"], m["kind"], m["new_label"]) == (103, "sad", "wrong_label", "neutral")
    assert again.get("val", 4) is None
    assert [m["index"] for m in again.marks("val")] == [3, 7]
    assert again.counts() == {"wrong_label": 1, "not_face": 1, "ambiguous": 1}
    assert again.counts("val") == {"wrong_label": 1, "not_face": 1, "ambiguous": 0}
    assert again.unmark("val", 7) is True and again.unmark("val", 7) is False
    assert TriageStore(tmp_path / "run").get("val", 7) is None


def test_undo_reverts_marks_unmarks_and_restores_an_overwritten_mark(tmp_path):
    s = _store(tmp_path)
    assert s.undo() is None and not s.can_undo()
    s.mark("val", 3, row=103, label="sad", kind="wrong_label", new_label="neutral")
    s.mark("val", 3, row=103, label="sad", kind="not_face")          # overwrites the first mark
    s.mark("val", 5, row=105, label="angry", kind="ambiguous")
    s.unmark("val", 5)
    assert s.get("val", 5) is None

    undone = TriageStore(tmp_path / "run").undo()                    # history is in the file too
    assert undone.startswith("unmark val:5") and s.get("val", 5)["kind"] == "ambiguous"
    assert s.undo().startswith("mark val:5") and s.get("val", 5) is None
    undone = s.undo()
    assert "not a face" in undone and "wrong label sad → neutral" in undone
    m = s.get("val", 3)
    assert (m["kind"], m["new_label"]) == ("wrong_label", "neutral")
    assert s.undo().startswith("mark val:3") and s.marks() == []
    assert s.undo() is None


def test_a_crash_mid_write_leaves_the_previous_file(tmp_path, monkeypatch):
    s = _store(tmp_path)
    s.mark("val", 1, row=11, label="happy", kind="ambiguous")
    path = marks_path(tmp_path / "run")
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError("simulated power loss before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        s.mark("val", 2, row=12, label="sad", kind="not_face")
    with pytest.raises(OSError, match="simulated"):
        s.undo()
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["marks.json"]   # no temp file left behind
    fresh = TriageStore(tmp_path / "run")
    assert fresh.get("val", 2) is None and fresh.get("val", 1)["kind"] == "ambiguous"
    assert s.get("val", 2) is None and fresh.can_undo()


def test_a_corrupt_file_is_an_error_naming_it_and_is_not_overwritten(tmp_path):
    path = marks_path(tmp_path / "run")
    path.parent.mkdir(parents=True)
    path.write_text('{"version": 1, "marks": {')
    s = _store(tmp_path)
    with pytest.raises(TriageFileError, match=str(path)):
        s.marks()
    with pytest.raises(TriageFileError, match="not valid JSON"):
        s.mark("val", 1, row=1, label="sad", kind="ambiguous")
    assert path.read_text() == '{"version": 1, "marks": {'
    path.write_text(json.dumps({"version": 1, "marks": {"val:1": {"kind": "bogus"}}, "history": []}))
    with pytest.raises(TriageFileError, match="malformed") as exc:
        s.counts()
    assert str(path) in str(exc.value)
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(TriageFileError, match="not a triage marks document"):
        s.get("val", 1)


@pytest.mark.parametrize("kw, message", [
    (dict(kind="typo"), "unknown triage kind 'typo'"),
    (dict(kind="wrong_label"), "needs new_label"),
    (dict(kind="wrong_label", new_label="sad"), "current label"),
    (dict(kind="wrong_label", new_label="joy"), "'joy' is not one of this run's classes"),
    (dict(kind="not_face", new_label="happy"), "only with wrong_label"),
    (dict(kind="ambiguous", split="holdout"), "unknown split 'holdout'"),
    (dict(kind="ambiguous", index=-1), "index must be an integer >= 0"),
    (dict(kind="ambiguous", row=1.5), "row must be an integer >= 0"),
    (dict(kind="ambiguous", label="Sad"), "label 'Sad' is not one of"),
])
def test_marks_are_validated(tmp_path, kw, message):
    args = {**dict(split="val", index=1, row=10, label="sad"), **kw}
    with pytest.raises(ValueError, match=message):
        _store(tmp_path).mark(args.pop("split"), args.pop("index"), **args)
    assert not marks_path(tmp_path / "run").exists()


def test_one_mark_per_row_and_classes_come_from_the_run_config(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "x", "classes": ["a", "b"]}))
    s = TriageStore(run)
    assert s.classes == ("a", "b")
    s.mark("val", 1, row=10, label="a", kind="wrong_label", new_label="b")
    with pytest.raises(ValueError, match="row 10 is already marked as val:1"):
        s.mark("test", 4, row=10, label="a", kind="ambiguous")
    with pytest.raises(ValueError, match="not one of this run's classes: a, b"):
        s.mark("val", 2, row=11, label="a", kind="wrong_label", new_label="happy")


def test_concurrent_sessions_lose_no_mark(tmp_path):
    errors: list[BaseException] = []

    def session(t: int) -> None:
        try:
            s = TriageStore(tmp_path / "run", classes=EMOTIONS)   # each session its own store object
            for i in range(10):
                s.mark("val", t * 100 + i, row=t * 100 + i, label="sad", kind="ambiguous")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=session, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    s = TriageStore(tmp_path / "run")
    assert len(s.marks()) == 40 and len(json.loads(s.path.read_text())["history"]) == 40


def test_export_is_sorted_by_row_with_ferplus_votes_and_round_trips(tmp_path):
    s = _store(tmp_path)
    s.mark("val", 9, row=30, label="sad", kind="wrong_label", new_label="neutral")
    s.mark("val", 2, row=5, label="fear", kind="not_face")
    s.mark("test", 4, row=12, label="happy", kind="ambiguous")
    text = s.export_csv()
    lines = text.splitlines()
    assert lines[0] == ",".join(COLUMNS)
    assert [ln.split(",")[0] for ln in lines[1:]] == ["5", "12", "30"]
    assert lines[3].startswith("30,val,9,wrong_label,sad,neutral,")
    assert lines[1].startswith("5,val,2,not_face,fear,,")

    class Pred:  # the parts of fer_core.rundata.Predictions that carry FER+ votes
        split, index = "val", np.array([2, 9])
        ferplus_votes = np.array([[0, 0, 0, 0, 0, 0, 0, 0, 1, 9], [6, 0, 0, 4, 0, 0, 0, 0, 0, 0]])

    out = tmp_path / "triage.csv"
    s.export_csv(out, ferplus_votes=ferplus_votes_of(Pred()))
    df = pd.read_csv(out)
    assert list(df.columns) == [*COLUMNS, *FERPLUS_VOTE_NAMES]
    assert list(df["NF"].fillna(-1)) == [9, -1, 0] and list(df["neutral"].fillna(-1)) == [0, -1, 6]
    back = read_relabel(out)
    assert list(back["row"]) == [5, 12, 30] and list(back["kind"]) == ["not_face", "ambiguous", "wrong_label"]
    assert list(back["new_label"]) == [None, None, "neutral"]
    assert list(back.index) == [2, 3, 4] and back.index.name == "line"
    assert ferplus_votes_of(type("P", (), {"ferplus_votes": None})()) is None


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ("row,kind\n1,ambiguous\n", "line 1: missing column\\(s\\) new_label"),
    ("row,kind,new_label\n1,ambiguous,\n2,typo,\n", "line 3: unknown kind 'typo'"),
    ("row,kind,new_label\nabc,ambiguous,\n", "line 2: row must be a non-negative integer"),
    ("row,kind,new_label\n4,ambiguous,\n4,not_face,\n", "line 3: row 4 appears twice \\(first on line 2\\)"),
    ("row,kind,new_label\n4,wrong_label,\n", "line 2: a wrong_label row needs new_label"),
    ("row,kind,new_label\n4,not_face,happy\n", "line 2: new_label 'happy' goes only with wrong_label"),
    ("", "relabel file is empty"),
])
def test_bad_relabel_files_say_the_line_and_the_fault(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        read_relabel(_write(tmp_path / "r.csv", text))


def test_apply_relabel_changes_only_training_faces(tiny_faces):
    fs = tiny_faces
    y0 = fs.y.clone()
    tr = np.flatnonzero(fs.split == "train")
    va, te = np.flatnonzero(fs.split == "val"), np.flatnonzero(fs.split == "test")
    other = lambda i: EMOTIONS[(int(fs.y[i]) + 1) % 7]   # noqa: E731
    table = pd.DataFrame({
        "row": [fs.row[tr[0]], fs.row[tr[1]], fs.row[tr[2]], fs.row[tr[3]], fs.row[tr[4]], fs.row[va[0]],
                fs.row[te[0]], fs.row[tr[5]]],
        "kind": ["wrong_label", "wrong_label", "not_face", "not_face", "ambiguous", "wrong_label",
                 "not_face", "wrong_label"],
        "new_label": [other(tr[0]), other(tr[1]), None, None, None, other(va[0]), None,
                      EMOTIONS[int(fs.y[tr[5]])]],  # the last one already has that label: no change
    })
    out, summary = apply_relabel(fs, table, EMOTIONS)
    assert summary == RelabelSummary(changed=2, dropped=2, ambiguous_kept=1, unknown_rows=0, outside_train=2)
    assert torch.equal(fs.y, y0) and len(fs) == 420                      # the input is untouched
    assert len(out) == len(fs) - 2 and set(out.row) == set(fs.row) - {fs.row[tr[2]], fs.row[tr[3]]}
    for i in (tr[0], tr[1]):
        assert int(out.y[out.row == fs.row[i]][0]) == (int(y0[i]) + 1) % 7
    for split in ("val", "test"):
        assert torch.equal(out.select(split).y, fs.select(split).y)
        assert torch.equal(out.select(split).x, fs.select(split).x)
    assert np.array_equal(out.select("val").row, fs.select("val").row)

    bad = pd.DataFrame({"row": [fs.row[tr[0]], 99_999], "kind": ["ambiguous", "not_face"], "new_label": [None, None]})
    with pytest.raises(ValueError, match=r"1 row\(s\) of the relabel file are not in the data tiny: 99999"):
        apply_relabel(fs, bad)
    assert apply_relabel(fs, bad, strict=False)[1].unknown_rows == 1
    wrong = pd.DataFrame({"row": [fs.row[tr[0]]], "kind": ["wrong_label"], "new_label": ["joy"]})
    with pytest.raises(ValueError, match="new_label 'joy' is not a class"):
        apply_relabel(fs, wrong)


def _cfg(**kw) -> TrainConfig:
    base = dict(data="tiny", model="cnn3", model_kwargs={"channels": [8, 16, 32]}, epochs=1, batch_size=64,
                threads=2, aug="none")
    return TrainConfig(**{**base, **kw})


def test_fit_trains_on_the_relabelled_faces_and_records_it(tiny_faces, tmp_path, monkeypatch):
    fs = tiny_faces
    tr = np.flatnonzero(fs.split == "train")
    va = np.flatnonzero(fs.split == "val")
    src = TriageStore(tmp_path / "src", classes=EMOTIONS)     # marks made on a run's faces
    new = {int(fs.row[i]): EMOTIONS[(int(fs.y[i]) + 3) % 7] for i in tr[:3]}
    for i in tr[:3]:
        src.mark("train", int(i), row=int(fs.row[i]), label=EMOTIONS[int(fs.y[i])], kind="wrong_label",
                 new_label=new[int(fs.row[i])])
    for i in tr[3:5]:
        src.mark("train", int(i), row=int(fs.row[i]), label=EMOTIONS[int(fs.y[i])], kind="not_face")
    src.mark("val", int(va[0]), row=int(fs.row[va[0]]), label=EMOTIONS[int(fs.y[va[0]])], kind="not_face")
    csv = tmp_path / "triage.csv"
    src.export_csv(csv)

    seen: dict[str, torch.Tensor] = {}
    real_epoch, real_eval = train_mod.train_one_epoch, train_mod.evaluate_loss

    def spy_epoch(model, x, y, **kw):
        seen["x"], seen["y"] = x, y
        return real_epoch(model, x, y, **kw)

    def spy_eval(model, x, y, **kw):
        seen["val_x"], seen["val_y"] = x, y
        return real_eval(model, x, y, **kw)

    monkeypatch.setattr(train_mod, "train_one_epoch", spy_epoch)
    monkeypatch.setattr(train_mod, "evaluate_loss", spy_eval)
    run = fit(_cfg(relabel=str(csv)), run_dir=tmp_path / "run", faces=fs)

    train = fs.select("train")
    keep = ~np.isin(train.row, fs.row[tr[3:5]])
    y_exp = train.y.clone()
    for r, name in new.items():
        y_exp[torch.from_numpy(train.row == r)] = EMOTIONS.index(name)
    assert torch.equal(seen["y"], y_exp[torch.from_numpy(keep)])
    assert torch.equal(seen["x"], train.x[torch.from_numpy(keep)])
    assert torch.equal(seen["val_x"], fs.select("val").x) and torch.equal(seen["val_y"], fs.select("val").y)

    cfg = read_config(run)
    assert cfg["relabel"]["summary"] == {"changed": 3, "dropped": 2, "ambiguous_kept": 0,
                                         "unknown_rows": 0, "outside_train": 1}
    assert cfg["train"]["relabel"] == str(csv.resolve()) == cfg["relabel"]["file"]
    assert cfg["data_summary"]["train"] == len(train) - 2 and cfg["data_summary"]["val"] == len(va)
    assert relabel_line(cfg["relabel"]) == (f"relabel: changed 3 labels, dropped 2 non-faces, kept 0 ambiguous, "
                                            f"ignored 1 outside the training split ({csv.resolve()})")


def test_resume_reapplies_the_file_or_refuses_when_it_is_gone_or_changed(tiny_faces, tmp_path):
    fs = tiny_faces
    i = int(np.flatnonzero(fs.split == "train")[0])
    csv = _write(tmp_path / "t.csv", f"row,kind,new_label\n{fs.row[i]},wrong_label,{EMOTIONS[(int(fs.y[i]) + 1) % 7]}\n")

    def stop_after_1(ev):
        if ev["kind"] == "epoch" and ev["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(_cfg(epochs=2, relabel=str(csv)), run_dir=tmp_path / "cut", faces=fs, progress=stop_after_1)
    run = fit(resume=tmp_path / "cut", faces=fs)
    cfg = read_config(run)
    assert cfg["finished"] and cfg["relabel"]["summary"]["changed"] == 1

    csv.write_text(csv.read_text() + f"{fs.row[int(np.flatnonzero(fs.split == 'train')[1])]},not_face,\n")
    with pytest.raises(ValueError, match="changed since this run started"):
        fit(resume=run, faces=fs, max_epochs=3)
    csv.unlink()
    with pytest.raises(ValueError, match="which no longer exists; restore that file to resume"):
        fit(resume=run, faces=fs, max_epochs=3)
    assert read_config(run) == cfg


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "fer_core", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


def test_train_relabel_on_the_command_line(tmp_path, capsys):
    data = "synthetic:n=300,seed=3"
    fs = open_dataset(data)
    tr = np.flatnonzero(fs.split == "train")
    te = np.flatnonzero(fs.split == "test")
    lines = ["row,kind,new_label"]
    lines += [f"{fs.row[i]},wrong_label,{EMOTIONS[(int(fs.y[i]) + 2) % 7]}" for i in tr[:2]]
    lines += [f"{fs.row[tr[2]]},not_face,", f"{fs.row[tr[3]]},ambiguous,", f"{fs.row[te[0]]},not_face,"]
    csv = _write(tmp_path / "triage.csv", "\n".join(lines) + "\n")
    common = ["train", "--data", data, "--model", "cnn3", "--model-kw", "channels=[8,16,32]", "--epochs", "1",
              "--threads", "2", "--out", str(tmp_path / "runs"), "--no-eval", "--quiet"]
    r = _cli(*common, "--name", "clean", "--relabel", str(csv))
    assert r.returncode == 0, r.stderr
    assert (f"relabel: changed 2 labels, dropped 1 non-faces, kept 1 ambiguous, ignored 1 outside the "
            f"training split ({csv.resolve()})") in r.stderr
    cfg = read_config(Path(r.stdout.strip().splitlines()[-1]))
    assert cfg["relabel"]["summary"]["changed"] == 2 and cfg["data_summary"]["train"] == len(tr) - 1

    from fer_core.__main__ import main   # the failures in-process: same parser and error path, faster

    bad_row = _write(tmp_path / "bad_row.csv", "row,kind,new_label\n299,ambiguous,\n100000,not_face,\n")
    assert main([*common, "--name", "bad-row", "--relabel", str(bad_row)]) == 2
    err = capsys.readouterr().err
    assert "error: 1 row(s) of the relabel file are not in the data" in err and "100000 (line 3)" in err
    bad_col = _write(tmp_path / "bad_col.csv", "row,label\n1,happy\n")
    assert main([*common, "--name", "bad-col", "--relabel", str(bad_col)]) == 2
    assert f"error: {bad_col}, line 1: missing column(s) kind, new_label" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "bad-row").exists() and not (tmp_path / "runs" / "bad-col").exists()
