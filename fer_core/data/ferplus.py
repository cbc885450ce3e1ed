"""FER+ (``fer2013new.csv``): ten annotators' votes per FER2013 face, joined by row.

Why this module exists: FER+ relabels FER2013 with vote counts (neutral ... contempt, unknown,
NF = not a face), which the evaluator and the dashboard use to show how ambiguous a face is. The
file has no pixels; its N-th data row belongs to the N-th row of the original ``fer2013.csv``,
so the votes are attached through the FaceSet's ``row`` key (:func:`attach_ferplus`).

Read with pandas (C engine); a file with anything wrong in it is re-read with :mod:`csv` so the
:class:`~fer_core.data.spec.DataError` names the line and the fault.
"""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from fer_core.data.faceset import FaceSet
from fer_core.data.spec import DataError

__all__ = ["FERPLUS_VOTE_NAMES", "read_ferplus", "attach_ferplus"]

FERPLUS_VOTE_NAMES: tuple[str, ...] = ("neutral", "happiness", "surprise", "sadness", "anger",
                                       "disgust", "fear", "contempt", "unknown", "NF")


def _read_fast(path: Path) -> np.ndarray | None:
    """Votes via pandas, or ``None`` when the file needs the exact (line-numbered) pass."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(path, dtype=object, engine="c", na_filter=False,
                             skip_blank_lines=False, index_col=False, encoding="utf-8",
                             low_memory=False)
    except (ValueError, pd.errors.ParserWarning):
        return None
    cols = {str(c).strip().lower(): c for c in df.columns}
    if len(df) == 0 or any(v.lower() not in cols for v in FERPLUS_VOTE_NAMES) or \
            (df == "").to_numpy().any():
        return None
    try:
        votes = df[[cols[v.lower()] for v in FERPLUS_VOTE_NAMES]].to_numpy().astype(np.int64)
    except (ValueError, OverflowError):
        return None
    return None if (votes < 0).any() else votes


def _read_exact(path: Path) -> np.ndarray:
    """Votes via :mod:`csv`, raising for the first bad line."""
    text = path.read_bytes().decode("utf-8-sig", "replace")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip().lower() for h in next(reader)]
    missing = [v for v in FERPLUS_VOTE_NAMES if v.lower() not in header]
    if missing:
        raise DataError(path, f"missing FER+ vote column(s) {', '.join(missing)}; expected "
                                "Usage,Image name,neutral,happiness,...,NF", line=1)
    cols = [header.index(v.lower()) for v in FERPLUS_VOTE_NAMES]
    rows: list[list[int]] = []
    recs = list(reader)
    while recs and not recs[-1]:
        recs.pop()
    for i, rec in enumerate(recs):
        line = i + 2
        if len(rec) != len(header):
            raise DataError(path, "empty line" if not rec else
                              f"has {len(rec)} fields, expected {len(header)}", line=line)
        try:
            v = [int(rec[c]) for c in cols]
        except ValueError:
            bad = next(rec[c] for c in cols if not rec[c].strip().isdigit())
            raise DataError(path, f"vote count is not an integer: {bad!r}", line=line) from None
        if min(v) < 0:
            raise DataError(path, "negative vote count", line=line)
        rows.append(v)
    if not rows:
        raise DataError(path, "FER+ file has only a header line", line=1)
    return np.asarray(rows, dtype=np.int64)


def read_ferplus(path: Path) -> np.ndarray:
    """``fer2013new.csv`` -> votes ``(rows, 10)`` int64 in :data:`FERPLUS_VOTE_NAMES` order."""
    try:
        with open(path, "rb") as fh:
            blank = not fh.read(1 << 16).removeprefix(b"\xef\xbb\xbf").strip()
    except OSError as exc:
        raise DataError(path, f"cannot read FER+ file: {exc.strerror or exc}") from None
    if blank and not path.read_bytes().strip():
        raise DataError(path, "FER+ file is empty", line=1)
    votes = _read_fast(path)
    return votes if votes is not None else _read_exact(path)


def attach_ferplus(fs: FaceSet, path: Path) -> FaceSet:
    """``fs`` with ``ferplus_votes`` set from the FER+ file, by each face's ``row`` key."""
    votes = read_ferplus(path)
    if len(fs.row) and (fs.row.min() < 0 or fs.row.max() >= len(votes)):
        raise DataError(path, f"has {len(votes)} rows but {fs.source} has faces with row keys "
                                f"{fs.row.min()}..{fs.row.max()}; FER+ rows must follow the "
                                "original fer2013.csv order")
    fs.ferplus_votes = votes[fs.row]
    return fs
