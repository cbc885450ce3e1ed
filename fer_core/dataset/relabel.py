"""Apply a triage CSV to the training data: ``python -m fer_core train --relabel FILE.csv``.

Why after the data is opened and only on the training split: the effect of cleaning is measured as a
new run against the same validation and test faces, so the split (including a seeded validation slice
drawn from the training rows by the *original* labels) must be exactly the one a run without the file
gets; only faces whose split is ``train`` change. ``wrong_label`` rows get ``new_label``, ``not_face``
rows are removed, ``ambiguous`` rows are kept (and counted). Rows are matched by the dataset ``row``
(:attr:`fer_core.data.faceset.FaceSet.row`, the FER2013 line), which is what
:meth:`fer_core.dataset.triage.TriageStore.export_csv` writes.

A run records the file's path, SHA-256 and the summary in ``config.json``; resuming re-applies the
same file and refuses when it is gone or changed, because the training labels depend on it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from fer_core.data.faceset import FaceSet
from fer_core.data.spec import DataError
from fer_core.dataset.triage import KINDS

__all__ = ["REQUIRED_COLUMNS", "RelabelSummary", "read_relabel", "apply_relabel", "relabel_training",
           "relabel_line"]

REQUIRED_COLUMNS: tuple[str, ...] = ("row", "kind", "new_label")


@dataclass(frozen=True)
class RelabelSummary:
    """What :func:`apply_relabel` did. ``changed``: training faces whose label changed; ``dropped``:
    training faces removed as not a face; ``ambiguous_kept``: ambiguous training faces (kept);
    ``unknown_rows``: rows not in the data at all (only counted with ``strict=False``);
    ``outside_train``: rows of the file in the val/test splits, left alone."""

    changed: int = 0
    dropped: int = 0
    ambiguous_kept: int = 0
    unknown_rows: int = 0
    outside_train: int = 0


def read_relabel(path: str | os.PathLike) -> pd.DataFrame:
    """The CSV as a table with columns ``row`` (int64), ``kind``, ``new_label`` (str or None) plus
    any others it has, indexed by the 1-based file ``line``; DataError naming the line of a fault."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "relabel file not found")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise DataError(path, "relabel file is empty; expected a header row,kind,new_label", line=1) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(path, f"not a readable CSV: {exc}") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(path, f"missing column(s) {', '.join(missing)}; a relabel file needs "
                              f"{', '.join(REQUIRED_COLUMNS)} (as the dashboard's triage export writes)", line=1)
    df.index = pd.RangeIndex(2, len(df) + 2, name="line")
    first: dict[int, int] = {}
    rows, labels = [], []
    for line, r, kind, new in zip(df.index, df["row"], df["kind"], df["new_label"]):
        r, kind, new = r.strip(), kind.strip(), new.strip()
        if not r.isdigit():
            raise DataError(path, f"row must be a non-negative integer (the dataset row), got {r!r}", line=line)
        if kind not in KINDS:
            raise DataError(path, f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}", line=line)
        if kind == "wrong_label" and not new:
            raise DataError(path, "a wrong_label row needs new_label (a class name)", line=line)
        if kind != "wrong_label" and new:
            raise DataError(path, f"new_label {new!r} goes only with wrong_label, not with {kind}", line=line)
        if int(r) in first:
            raise DataError(path, f"row {r} appears twice (first on line {first[int(r)]})", line=line)
        first[int(r)] = line
        rows.append(int(r))
        labels.append(new or None)
    df["row"], df["kind"] = np.asarray(rows, dtype=np.int64), df["kind"].str.strip()
    df["new_label"] = pd.Series(labels, index=df.index, dtype=object)
    return df


def _where(table: pd.DataFrame, i: int) -> str:
    return f"line {table.index[i]}" if table.index.name == "line" else f"entry {i + 1}"


def apply_relabel(faceset: FaceSet, table: pd.DataFrame, classes: Sequence[str] | None = None, *,
                  strict: bool = True) -> tuple[FaceSet, RelabelSummary]:
    """``faceset`` with the table applied to its training faces, and what changed.

    ``table`` has ``row``, ``kind``, ``new_label`` (:func:`read_relabel` or
    :meth:`~fer_core.dataset.triage.TriageStore.to_frame`); ``classes`` (default the FaceSet's) are
    the names ``new_label`` uses. A row the data does not have is a ValueError (a file made for other
    data), or only counted with ``strict=False``. The input FaceSet is not modified.
    """
    classes = tuple(classes if classes is not None else faceset.classes)
    rows = np.asarray(table["row"], dtype=np.int64)
    kinds = np.asarray(table["kind"], dtype=object)
    train_pos = np.flatnonzero(faceset.split == "train")
    train_index = pd.Index(faceset.row[train_pos])
    if not train_index.is_unique:
        raise ValueError(f"the training faces of {faceset.source or '(in memory)'} share row ids, so a "
                         "relabel file keyed by row cannot say which face it means")
    at = train_index.get_indexer(rows) if len(train_pos) else np.full(len(rows), -1)
    in_train = at >= 0
    pos = np.where(in_train, train_pos[np.maximum(at, 0)] if len(train_pos) else 0, -1)
    known = np.isin(rows, faceset.row)
    unknown = np.flatnonzero(~known)
    if len(unknown) and strict:
        ex = ", ".join(f"{rows[i]} ({_where(table, i)})" for i in unknown[:5])
        raise ValueError(f"{len(unknown)} row(s) of the relabel file are not in the data "
                         f"{faceset.source or '(in memory)'}: {ex}; was it exported for other data?")
    y = faceset.y.clone()
    changed, drop = 0, np.zeros(len(faceset), dtype=bool)
    for i in np.flatnonzero(in_train & (kinds == "wrong_label")):
        new = table["new_label"].iloc[i]
        if new not in classes:
            raise ValueError(f"relabel {_where(table, i)}: new_label {new!r} is not a class of the data "
                             f"({', '.join(classes)})")
        c = classes.index(new)
        changed += int(y[pos[i]]) != c
        y[pos[i]] = c
    drop[pos[in_train & (kinds == "not_face")]] = True
    summary = RelabelSummary(changed=changed, dropped=int(drop.sum()),
                             ambiguous_kept=int((in_train & (kinds == "ambiguous")).sum()),
                             unknown_rows=len(unknown), outside_train=int((known & ~in_train).sum()))
    out = FaceSet(x=faceset.x, y=y, split=faceset.split, row=faceset.row, source=faceset.source,
                  synthetic=faceset.synthetic, ferplus_votes=faceset.ferplus_votes, classes=faceset.classes)
    return (out.subset(np.flatnonzero(~drop)) if drop.any() else out), summary


def relabel_training(faces: FaceSet, path: str | os.PathLike,
                     stored: dict[str, Any] | None = None) -> tuple[FaceSet, dict[str, Any]]:
    """Apply the relabel file ``path`` to ``faces`` for training; returns the FaceSet and the record
    for ``config.json`` (``file`` absolute path, ``sha256``, ``summary``). ``stored`` is the record
    of the run being resumed: then the file must still exist with the same content."""
    p = Path(path).resolve()
    if stored is not None and not p.is_file():
        raise ValueError(f"this run was trained with --relabel {p}, which no longer exists; restore "
                         "that file to resume (the run's training labels depend on it)")
    try:
        sha = hashlib.sha256(p.read_bytes()).hexdigest()
    except OSError as exc:
        raise DataError(p, f"cannot read relabel file: {exc.strerror or exc}") from None
    if stored is not None and stored.get("sha256") not in (None, sha):
        raise ValueError(f"the relabel file {p} changed since this run started; restore the original "
                         "to resume, or start a new run with the new file")
    faces, summary = apply_relabel(faces, read_relabel(p), faces.classes)
    return faces, {"file": str(p), "sha256": sha, "summary": asdict(summary)}


def relabel_line(record: dict[str, Any]) -> str:
    """"relabel: changed N labels, dropped M non-faces, kept K ambiguous (FILE)" for a record."""
    s = record["summary"]
    outside = f", ignored {s['outside_train']} outside the training split" if s.get("outside_train") else ""
    return (f"relabel: changed {s['changed']} labels, dropped {s['dropped']} non-faces, kept "
            f"{s['ambiguous_kept']} ambiguous{outside} ({record['file']})")
