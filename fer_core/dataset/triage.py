"""Label triage: the marks a user puts on faces ("wrong label → X", "not a face", "ambiguous").

Why a JSON file in the run, rewritten whole on every change: marks are the user's manual work, so
they must survive a restart and a crash. The document is small (one entry per face looked at), so
each change writes all of it through :func:`fer_core.checkpoint.atomic_write_text` (temp file, fsync,
``os.replace``): a crash leaves the previous or the new document, never a torn one.

Why every call re-reads the file under a lock shared by all stores of that file: Streamlit reruns
each session's script in its own thread and may build a new store per rerun, so the file, not an
object, is the state; read-modify-write under one per-file lock means two sessions marking the same
run never lose each other's marks. The lock is per process: two processes writing one run's marks at
once are not coordinated (the last writer wins; neither leaves a torn file).

A corrupt file is an error naming it, never treated as "no marks" — the next write would destroy
the user's work. The export is keyed by the dataset ``row`` (the FER2013 line, the id that is the
same across runs and copies of the data); ``python -m fer_core train --relabel`` reads it back
(:mod:`fer_core.dataset.relabel`).
"""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from fer_core.checkpoint import atomic_write_text
from fer_core.data.faceset import SPLITS
from fer_core.data.ferplus import FERPLUS_VOTE_NAMES

__all__ = ["KINDS", "COLUMNS", "HISTORY_LIMIT", "TriageFileError", "TriageStore", "marks_path",
           "describe_mark", "ferplus_votes_of"]

KINDS: tuple[str, ...] = ("wrong_label", "not_face", "ambiguous")
COLUMNS: tuple[str, ...] = ("row", "split", "index", "kind", "label", "new_label", "time")
VERSION = 1
HISTORY_LIMIT = 1000   # undo depth kept in the file; older steps are forgotten, marks are not
_FIELDS = ("split", "index", "row", "kind", "new_label", "label", "time")

_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


class TriageFileError(ValueError):
    """The marks file exists but cannot be read as a triage document; the message names it."""


def marks_path(run: str | os.PathLike) -> Path:
    return Path(run) / "triage" / "marks.json"


def describe_mark(mark: Mapping[str, Any] | None) -> str:
    """One phrase for a mark: "wrong label → happy", "not a face", "ambiguous" ("" for None)."""
    if not mark:
        return ""
    if mark["kind"] == "wrong_label":
        return f"wrong label {mark['label']} → {mark['new_label']}"
    return "not a face" if mark["kind"] == "not_face" else "ambiguous"


def ferplus_votes_of(*predictions: Any) -> dict[tuple[str, int], np.ndarray] | None:
    """``{(split, index): votes}`` from objects with ``split``, ``index`` and ``ferplus_votes``
    (:class:`fer_core.rundata.Predictions`), for :meth:`TriageStore.to_frame`; None when none has votes."""
    out: dict[tuple[str, int], np.ndarray] = {}
    for p in predictions:
        if getattr(p, "ferplus_votes", None) is not None:
            out.update({(p.split, int(i)): v for i, v in zip(p.index, p.ferplus_votes)})
    return out or None


def _lock_for(path: Path) -> threading.RLock:
    key = os.path.abspath(path)
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.RLock())


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _count(name: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


def _check_mark(path: Path, key: str, m: Any) -> None:
    if not isinstance(m, dict) or any(f not in m for f in _FIELDS) or m["kind"] not in KINDS \
            or f"{m['split']}:{m['index']}" != key:
        raise TriageFileError(f"{path}: mark {key!r} is malformed ({m!r}); fix or move the file away "
                              "(it was not changed)")


def _load(path: Path) -> dict[str, Any]:
    """The document at ``path`` (an empty one when there is no file); TriageFileError when corrupt."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {"version": VERSION, "marks": {}, "history": []}
    except (OSError, UnicodeDecodeError) as exc:
        raise TriageFileError(f"cannot read the triage marks file {path}: {exc}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TriageFileError(f"{path} is not valid JSON ({exc}); it holds this run's triage marks — "
                              "fix or move it away (it was not changed)") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("marks"), dict) \
            or not isinstance(doc.get("history"), list) or not isinstance(doc.get("version"), int):
        raise TriageFileError(f"{path} is not a triage marks document (needs version, marks, history)")
    if doc["version"] > VERSION:
        raise TriageFileError(f"{path} has triage format {doc['version']}; this version reads up to "
                              f"{VERSION} — upgrade fer_core")
    for key, m in doc["marks"].items():
        _check_mark(path, key, m)
    for h in doc["history"]:
        if not isinstance(h, dict) or h.get("op") not in ("mark", "unmark") or not isinstance(h.get("key"), str):
            raise TriageFileError(f"{path}: history entry {h!r} is malformed")
        for side in ("before", "after"):
            if h.get(side) is not None:
                _check_mark(path, h["key"], h[side])
    return doc


class TriageStore:
    """The triage marks of one run, in ``run/triage/marks.json``.

    A mark is keyed by ``(split, index)`` (index = the face's position in the run's FaceSet, as in
    :class:`fer_core.rundata.Predictions`) and carries the dataset ``row``, the original ``label``
    and ``kind``; ``new_label`` (a class name) only for ``wrong_label``. ``classes`` (default: the
    run's ``config.json`` classes, when it has one) are the names ``label``/``new_label`` must use.
    Methods are safe to call from several threads; each change is one atomic file write.
    """

    def __init__(self, run: str | os.PathLike, classes: Sequence[str] | None = None) -> None:
        self.run = Path(run)
        self.path = marks_path(run)
        if classes is None:
            try:
                classes = json.loads((self.run / "config.json").read_text()).get("classes")
            except (OSError, ValueError, AttributeError):
                classes = None
        self.classes: tuple[str, ...] | None = tuple(classes) if classes else None
        self._lock = _lock_for(self.path)

    # -- changes ---------------------------------------------------------------------------
    def mark(self, split: str, index: int, *, row: int, label: str, kind: str,
             new_label: str | None = None) -> dict[str, Any]:
        """Mark a face (replacing its previous mark, which :meth:`undo` restores); returns the mark."""
        entry = self._validated(split, index, row, label, kind, new_label)
        key = f"{split}:{entry['index']}"
        with self._lock:
            doc = _load(self.path)
            before = doc["marks"].get(key)
            if before is not None and all(before[f] == entry[f] for f in _FIELDS if f != "time"):
                return dict(before)
            for k, m in doc["marks"].items():
                if k != key and m["row"] == entry["row"]:
                    raise ValueError(f"row {entry['row']} is already marked as {k}; one mark per dataset row")
            doc["marks"].pop(key, None)   # re-marking moves the face to the end (most recent)
            doc["marks"][key] = entry
            self._save(doc, {"op": "mark", "key": key, "before": before, "after": entry})
        return dict(entry)

    def unmark(self, split: str, index: int) -> bool:
        """Remove a face's mark (undoable); False when it had none."""
        key = f"{split}:{_count('index', index)}"
        with self._lock:
            doc = _load(self.path)
            before = doc["marks"].pop(key, None)
            if before is None:
                return False
            self._save(doc, {"op": "unmark", "key": key, "before": before, "after": None})
        return True

    def undo(self) -> str | None:
        """Revert the last mark/unmark (restoring a mark it replaced); returns what it undid, or None."""
        with self._lock:
            doc = _load(self.path)
            if not doc["history"]:
                return None
            h = doc["history"].pop()
            if h["before"] is None:
                doc["marks"].pop(h["key"], None)
            else:
                doc["marks"][h["key"]] = h["before"]
            self._save(doc, None)
        if h["op"] == "unmark":
            return f"unmark {h['key']} (row {h['before']['row']}, {describe_mark(h['before'])})"
        was = f", which replaced {describe_mark(h['before'])}" if h["before"] else ""
        return f"mark {h['key']} (row {h['after']['row']}) as {describe_mark(h['after'])}{was}"

    # -- reads -----------------------------------------------------------------------------
    def get(self, split: str, index: int) -> dict[str, Any] | None:
        with self._lock:
            m = _load(self.path)["marks"].get(f"{split}:{int(index)}")
        return dict(m) if m else None

    def marks(self, split: str | None = None) -> list[dict[str, Any]]:
        """Marks in the order they were made (a re-marked face counts as new), optionally of one split."""
        with self._lock:
            ms = list(_load(self.path)["marks"].values())
        return [dict(m) for m in ms if split is None or m["split"] == split]

    def counts(self, split: str | None = None) -> dict[str, int]:
        """``{kind: number of marks}`` for every kind in :data:`KINDS` (zeros included)."""
        out = dict.fromkeys(KINDS, 0)
        for m in self.marks(split):
            out[m["kind"]] += 1
        return out

    def can_undo(self) -> bool:
        with self._lock:
            return bool(_load(self.path)["history"])

    def to_frame(self, ferplus_votes: Mapping[tuple[str, int], Iterable[int]] | None = None) -> pd.DataFrame:
        """Marks as a table sorted by ``row``: :data:`COLUMNS`, then the FER+ vote columns
        (:data:`fer_core.data.ferplus.FERPLUS_VOTE_NAMES`, nullable ints) when ``ferplus_votes`` maps
        ``(split, index)`` to a face's 10 vote counts (see :func:`ferplus_votes_of`)."""
        ms = sorted(self.marks(), key=lambda m: m["row"])
        df = pd.DataFrame([[m[c] for c in COLUMNS] for m in ms], columns=list(COLUMNS))
        df = df.astype({"row": "int64", "index": "int64"})
        if ferplus_votes is not None:
            table = []
            for m in ms:
                v = ferplus_votes.get((m["split"], int(m["index"])))
                v = None if v is None else [int(c) for c in v]
                if v is not None and len(v) != len(FERPLUS_VOTE_NAMES):
                    raise ValueError(f"FER+ votes for {m['split']}:{m['index']} have {len(v)} counts, "
                                     f"expected {len(FERPLUS_VOTE_NAMES)} ({', '.join(FERPLUS_VOTE_NAMES)})")
                table.append(v)
            for j, name in enumerate(FERPLUS_VOTE_NAMES):
                df[name] = pd.array([None if v is None else v[j] for v in table], dtype="Int64")
        return df

    def export_csv(self, path: str | os.PathLike | None = None, *,
                   ferplus_votes: Mapping[tuple[str, int], Iterable[int]] | None = None) -> str:
        """The marks as CSV text (:meth:`to_frame`'s table; empty ``new_label`` = none), also written
        atomically to ``path`` when given. ``train --relabel`` reads it back."""
        text = self.to_frame(ferplus_votes).to_csv(index=False, lineterminator="\n")
        if path is not None:
            atomic_write_text(path, text)
        return text

    # -- internals -------------------------------------------------------------------------
    def _validated(self, split: str, index: int, row: int, label: str, kind: str,
                   new_label: str | None) -> dict[str, Any]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        if kind not in KINDS:
            raise ValueError(f"unknown triage kind {kind!r}; choose one of {', '.join(KINDS)}")
        for name, value in (("label", label), ("new_label", new_label)):
            if value is None and name == "new_label":
                continue
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a class name, got {value!r}")
            if self.classes is not None and value not in self.classes:
                raise ValueError(f"{name} {value!r} is not one of this run's classes: {', '.join(self.classes)}")
        if kind == "wrong_label" and new_label is None:
            raise ValueError("a wrong_label mark needs new_label (the class the face really shows)")
        if kind == "wrong_label" and new_label == label:
            raise ValueError(f"new_label {new_label!r} is the face's current label; a wrong_label mark "
                             "must name a different class")
        if kind != "wrong_label" and new_label is not None:
            raise ValueError(f"new_label goes only with wrong_label, not with {kind}")
        return {"split": split, "index": _count("index", index), "row": _count("row", row), "kind": kind,
                "new_label": new_label, "label": label, "time": _now()}

    def _save(self, doc: dict[str, Any], step: dict[str, Any] | None) -> None:
        if step is not None:
            doc["history"] = (doc["history"] + [{**step, "time": _now()}])[-HISTORY_LIMIT:]
        atomic_write_text(self.path, json.dumps(doc, indent=1) + "\n")
