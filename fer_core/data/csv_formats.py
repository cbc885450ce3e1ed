"""The CSV layouts of FER2013 -> :class:`~fer_core.data.spec.Part`.

Why this module exists: FER2013 comes as Kaggle's ``fer2013.csv`` (``emotion,pixels,Usage``), the
ICML ``icml_face_data.csv`` (``emotion, Usage, pixels``: spaces after the commas), torchvision's
``train.csv`` (``emotion,pixels``) + ``test.csv`` (``pixels`` [+ ``emotion``]) and a course
format (``label,feature``). Columns are found by name, so all of them are one reader.

How: two passes, the second only for a file with something wrong in it.

1. Fast: pandas' C parser reads the structure (quotes, CRLF, BOM); labels and Usage are checked
   per distinct value, pixels decoded by :func:`~fer_core.data.pixels.parse_pixels`.
2. Exact, when the fast pass finds any fault (or pandas reports a structural problem: a row with
   too many fields, an empty field, bad UTF-8): :mod:`csv` re-reads the file keeping the 1-based
   line number of every record (header = line 1, as an editor shows it), so the
   :class:`~fer_core.data.spec.DataError` names the file, the line and the fault, or with
   ``skip_bad_rows`` the bad records are dropped and counted.
"""

from __future__ import annotations

import csv
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fer_core.data.faceset import UNLABELED
from fer_core.data.pixels import parse_pixels, pixel_fault
from fer_core.data.spec import (SIZE, DataError, Part, find_named, finish_faults, labels_of,
                                usage_faults)

__all__ = ["load_csv", "load_torchvision_pair", "is_torchvision_member"]

# Column names (compared stripped, lower-case, without spaces/underscores).
_PIXEL_COLUMNS = ("pixels", "pixel", "feature", "features")
_LABEL_COLUMNS = ("emotion", "emotions", "label", "labels")
_USAGE_COLUMNS = ("usage", "split")
_TV_NAMES = ("train.csv", "test.csv")


def _norm_col(name: str) -> str:
    return name.strip().strip('"').lower().replace(" ", "").replace("_", "")


def _find_col(names: list[str], candidates: tuple[str, ...]) -> int | None:
    for c in candidates:
        if c in names:
            return names.index(c)
    return None


@dataclass
class _Table:
    """A CSV file as text columns; ``lines`` and structural ``faults`` only from the exact pass."""

    columns: list[list[str]]           # per column, one value per record ("" for a faulty record)
    n: int                             # records after the header (incl. blank/faulty ones)
    lines: np.ndarray | None = None    # 1-based line number of each record
    faults: dict[int, str] = field(default_factory=dict)


def _read_header(path: Path) -> list[str]:
    """The header fields; raises for an unreadable or empty (whitespace-only) file."""
    try:
        with open(path, "rb") as fh:
            first = fh.readline()
            blank = not first.removeprefix(b"\xef\xbb\xbf").strip()
            if blank:   # a blank first line: is the whole file whitespace?
                blank = not fh.read().strip()
    except OSError as exc:
        raise DataError(path, f"cannot read file: {exc.strerror or exc}") from None
    if blank:
        raise DataError(path, "file is empty (expected a header line such as "
                              "'emotion,pixels,Usage' and one face per line)", line=1)
    text = first.decode("utf-8-sig", "replace").replace("\r\n", "\n").replace("\r", "\n")
    try:
        return next(csv.reader([text.split("\n", 1)[0]]), [])
    except csv.Error as exc:
        raise DataError(path, f"malformed CSV: {exc}", line=1) from None


def _read_fast(path: Path, ncol: int) -> _Table | None:
    """pandas (C engine) -> text columns, or ``None`` when the exact pass must decide."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)   # e.g. a row too long
            df = pd.read_csv(path, dtype=object, engine="c", na_filter=False,
                             skip_blank_lines=False, index_col=False, encoding="utf-8",
                             low_memory=False)
    except (ValueError, pd.errors.ParserWarning):   # ParserError, bad UTF-8, ... are ValueErrors
        return None
    if df.shape[1] != ncol:
        return None
    columns = [df.iloc[:, j].tolist() for j in range(ncol)]
    # pandas fills missing fields and blank lines with "": the exact pass tells them apart
    if any("" in c for c in columns):
        return None
    return _Table(columns, len(df))


def _read_exact(path: Path, ncol: int) -> _Table:
    """:mod:`csv` -> text columns with the line number of each record and structural faults."""
    text = path.read_bytes().decode("utf-8-sig", "replace")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
        records, lines, prev = [], [], reader.line_num
        for rec in reader:
            records.append(rec)
            lines.append(prev + 1)
            prev = reader.line_num
    except csv.Error as exc:
        raise DataError(path, f"malformed CSV: {exc}", line=reader.line_num) from None
    while records and not records[-1]:   # blank lines at the very end hold no faces
        records.pop()
        lines.pop()
    faults: dict[int, str] = {}
    for i, rec in enumerate(records):
        if len(rec) != ncol:
            faults[i] = ("empty line" if not rec else
                         f"has {len(rec)} fields, expected {ncol} ({','.join(header)})")
    columns = [[rec[j] if i not in faults else "" for i, rec in enumerate(records)]
               for j in range(ncol)]
    return _Table(columns, len(records), np.asarray(lines, dtype=np.int64), faults)


def _decode(t: _Table, header: list[str], cols: tuple[int, int | None, int | None], *,
            exact: bool, skip: bool, default_split: str | None) -> tuple | None:
    """Table -> ``(x, y, usage, faults)``, or ``None`` in the fast pass at the first fault."""
    pix_c, lab_c, use_c = cols
    faults = dict(t.faults)
    if lab_c is not None:
        y, f = labels_of(t.columns[lab_c])
        for i, msg in f.items():
            faults.setdefault(i, f"{msg} (column {header[lab_c].strip()!r})")
    else:
        y = np.full(t.n, UNLABELED, dtype=np.int64)
    if use_c is not None:
        usage_list = [u.strip() for u in t.columns[use_c]]
        for i, msg in usage_faults(usage_list).items():
            faults.setdefault(i, msg)
        usage = np.asarray(usage_list, dtype=object)
    else:
        split = default_split or ("train" if lab_c is not None else "test")
        usage = np.full(t.n, split, dtype=object)
    if faults and not exact:
        return None
    texts = t.columns[pix_c]
    x, suspect = parse_pixels(texts)
    first_other = min(faults) if faults else t.n
    pcol = header[pix_c].strip()
    for i in np.flatnonzero(suspect).tolist():   # the exact check, for flagged rows only
        if i in faults:
            continue
        if exact and not skip and i > first_other:
            break
        v, msg = pixel_fault(texts[i])
        if msg is None:
            x[i] = v
            continue
        if not exact:
            return None
        faults.setdefault(i, f"{msg} (column {pcol!r})")
        if not skip:
            break
    return x, y, usage, faults


def load_csv(path: Path, *, skip: bool = False, default_split: str | None = None,
             row_offset: int = 0) -> Part:
    """One CSV file in any of the column layouts -> a :class:`Part` (row keys from
    ``row_offset``; ``default_split`` for a file without a Usage column)."""
    header = _read_header(path)
    names = [_norm_col(h) for h in header]
    cols = (_find_col(names, _PIXEL_COLUMNS), _find_col(names, _LABEL_COLUMNS),
            _find_col(names, _USAGE_COLUMNS))
    if cols[0] is None:
        looks_like_data = any(len(h.split()) > 100 for h in header)
        raise DataError(path, "missing header line; expected one such as "
                              "'emotion,pixels,Usage'" if looks_like_data else
                              f"missing pixel column ('pixels' or 'feature'); header has: "
                              f"{', '.join(h.strip() for h in header) or '(nothing)'}", line=1)
    t = _read_fast(path, len(header))
    res = None
    if t is not None and t.n:
        res = _decode(t, header, cols, exact=False, skip=skip, default_split=default_split)
    if res is None:   # something is wrong (or the file has no rows): find it exactly
        t = _read_exact(path, len(header))
        if t.n == 0:
            raise DataError(path, "file has only a header line, no faces", line=1)
        res = _decode(t, header, cols, exact=True, skip=skip, default_split=default_split)
    x, y, usage, faults = res
    lines = t.lines
    finish_faults(path, faults, t.n, skip, lambda i: {"line": int(lines[i])})
    rows = np.arange(t.n, dtype=np.int64) + row_offset
    if faults:
        keep = np.ones(t.n, dtype=bool)
        keep[list(faults)] = False
        if not keep.any():
            raise DataError(path, "no valid faces left after skipping bad rows")
        x, y, usage, rows = x[keep], y[keep], usage[keep], rows[keep]
    return Part(x.reshape(-1, SIZE, SIZE), y, usage.astype(str), rows, records=t.n)


# --------------------------------------------------------------------------------------------
# torchvision's train.csv + test.csv


def load_torchvision_pair(folder: Path, *, skip: bool = False) -> list[Part]:
    """torchvision's layout: ``train.csv`` (emotion,pixels) + ``test.csv`` (pixels[,emotion]).
    Row keys of test.csv continue after train.csv's rows, which reproduces the original
    fer2013.csv order (Training, then PublicTest + PrivateTest) and keeps keys unique."""
    train, test = find_named(folder, "train.csv"), find_named(folder, "test.csv")
    parts: list[Part] = []
    offset = 0
    if train is not None:
        parts.append(load_csv(train, skip=skip, default_split="train"))
        offset = parts[0].records
    if test is not None:
        parts.append(load_csv(test, skip=skip, default_split="test", row_offset=offset))
    return parts


def is_torchvision_member(path: Path) -> bool:
    """A ``train.csv``/``test.csv`` without a Usage column whose sibling completes the pair."""
    if path.name.lower() not in _TV_NAMES:
        return False
    other = _TV_NAMES[1 - _TV_NAMES.index(path.name.lower())]
    sib = find_named(path.parent, other)
    if sib is None:
        return False
    for f in (path, sib):
        with open(f, "rb") as fh:
            names = [_norm_col(h) for h in
                     fh.readline().decode("utf-8-sig", "replace").strip().split(",")]
        if not any(c in names for c in _PIXEL_COLUMNS) or any(c in names for c in _USAGE_COLUMNS):
            return False
    return True
