"""Every supported dataset format -> one :class:`~fer_core.data.faceset.FaceSet`.

Why this module exists: FER2013 circulates in half a dozen layouts (Kaggle's ``fer2013.csv``, the
ICML ``icml_face_data.csv`` with spaces in its header, torchvision's ``train.csv``/``test.csv``, a
course ``label,feature`` CSV, folders of images, our own ``.npz``) and users bring their own
copies. Everything downstream (trainer, evaluator, dashboard) must not care which one it was, so
one function, :func:`open_dataset`, turns a *dataset spec* string (DESIGN.md, "Dataset specs")
into a FaceSet with the same split rule (:func:`~fer_core.data.faceset.splits_from_usage`) for
every source, and a stable ``row`` key pointing back into the user's own file.

Why the CSV parser looks unusual: the full fer2013.csv is ~290 MB of space-separated integers
(35,887 rows x 2,304 pixels = 83 M numbers). A Python loop over the numbers takes minutes; even
``np.fromstring`` over the joined text needs extra copies. The common (unquoted) case is therefore
parsed straight from the file's bytes with numpy: find line and field boundaries, then decode the
digits of all pixels of a few hundred rows at a time. The fast path only *flags* suspicious rows
(wrong token count, odd characters, long or large numbers); each flagged row is re-checked by a
plain Python parser that yields the exact message, so validation stays exact (file, 1-based line
as an editor shows it, fault) without slowing the valid case. Quoted CSVs fall back to :mod:`csv`
for the structure and reuse the same pixel decoder.

Bad input is never skipped silently: it raises :class:`DataError`, or with ``skip_bad_rows=True``
the bad rows are dropped and their number is reported through :func:`warnings.warn`.
"""

from __future__ import annotations

import csv
import functools
import io
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fer_core.data.faceset import _USAGE_ALIASES, SPLITS, UNLABELED, FaceSet, splits_from_usage
from fer_core.labels import EMOTIONS, NUM_CLASSES

__all__ = ["DataError", "BadRowsWarning", "open_dataset", "parse_spec", "label_index",
           "FERPLUS_VOTE_NAMES"]

SIZE = 48
NPIX = SIZE * SIZE
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
FERPLUS_VOTE_NAMES: tuple[str, ...] = ("neutral", "happiness", "surprise", "sadness", "anger",
                                       "disgust", "fear", "contempt", "unknown", "NF")

# Emotion names (labels in CSV/npz, folder names in image layouts) -> class index.
_EMOTION_ALIASES: dict[str, int] = {name: i for i, name in enumerate(EMOTIONS)}
_EMOTION_ALIASES.update({
    "anger": 0, "disgusted": 1, "fearful": 2, "scared": 2, "afraid": 2, "happiness": 3, "joy": 3,
    "sadness": 4, "surprised": 5, "suprise": 5, "neutrality": 6,
})
# Column names (compared stripped, lower-case, without spaces/underscores).
_PIXEL_COLUMNS = ("pixels", "pixel", "feature", "features")
_LABEL_COLUMNS = ("emotion", "emotions", "label", "labels")
_USAGE_COLUMNS = ("usage", "split")
# Folder names of image layouts -> split (same words the Usage column accepts).
_SPLIT_DIRS = {"train": "train", "training": "train", "val": "val", "valid": "val",
               "validation": "val", "test": "test", "testing": "test",
               "publictest": "PublicTest", "privatetest": "PrivateTest"}
_SPEC_TAIL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=[^,=]*(,[A-Za-z_][A-Za-z0-9_]*=[^,=]*)*$")
_INT_TEXT = re.compile(r"^[+-]?\d+(\.0*)?$")


class DataError(ValueError):
    """Bad input data. The message names the file, where in it (1-based line as an editor shows
    it, header = line 1; or an entry/image) and the fault; the parts are kept as attributes."""

    def __init__(self, path: str | Path, fault: str, line: int | None = None,
                 where: str | None = None) -> None:
        self.path, self.fault, self.line, self.where = str(path), fault, line, where
        loc = f", line {line}" if line is not None else (f", {where}" if where else "")
        super().__init__(f"{path}{loc}: {fault}")


class BadRowsWarning(UserWarning):
    """Issued when ``skip_bad_rows=True`` dropped rows; the message gives the count."""


def _warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the first caller outside this module (the user's line)."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        level += 1
        frame = frame.f_back
    warnings.warn(message, category, stacklevel=level)


# --------------------------------------------------------------------------------------------
# spec parsing


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split a dataset spec into ``(name_or_path, options)``.

    ``"synthetic:n=12000,seed=0"`` -> ``("synthetic", {"n": "12000", "seed": "0"})``. For a path,
    options may follow a final ``:`` only if that tail looks like ``k=v(,k=v)*``
    (``"faces.npz:split=test"``), so paths containing ``:`` (``C:\\data``) stay intact.
    """
    spec = str(spec).strip()
    if spec.lower() == "synthetic" or spec.lower().startswith("synthetic:"):
        tail = spec.partition(":")[2].strip()
        if tail and not _SPEC_TAIL.match(tail):
            raise DataError(spec, "options must look like key=value,key=value "
                                  "(e.g. synthetic:n=12000,seed=0)")
        return "synthetic", _options(tail)
    head, sep, tail = spec.rpartition(":")
    if sep and head and _SPEC_TAIL.match(tail.strip()):
        return head, _options(tail.strip())
    return spec, {}


def _options(tail: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in filter(None, tail.split(",")):
        k, _, v = part.partition("=")
        out[k.strip().lower()] = v.strip()
    return out


# --------------------------------------------------------------------------------------------
# labels


def label_index(value: object) -> int:
    """A label written as ``0..6`` (``"3"``, ``3.0``) or an emotion name (``"Happy"``,
    ``"happiness"``) -> class index. Raises ``ValueError`` with the reason otherwise."""
    text = str(value).strip()
    if not text:
        raise ValueError("missing label")
    if _INT_TEXT.match(text):
        i = int(float(text))
        if 0 <= i < NUM_CLASSES:
            return i
        raise ValueError(f"label {text} is not a class index 0..{NUM_CLASSES - 1}")
    key = _dir_key(text)
    if key in _EMOTION_ALIASES:
        return _EMOTION_ALIASES[key]
    raise ValueError(f"unknown label {text!r} (expected 0..{NUM_CLASSES - 1} or one of "
                     f"{', '.join(EMOTIONS)})")


def _labels_of(values: list[str]) -> tuple[np.ndarray, dict[int, str]]:
    """Vectorised label mapping: each distinct text is interpreted once."""
    y = np.full(len(values), UNLABELED, dtype=np.int64)
    faults: dict[int, str] = {}
    if not values:
        return y, faults
    uniq, inv = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)
    codes = np.empty(len(uniq), dtype=np.int64)
    reasons: dict[int, str] = {}
    for k, text in enumerate(uniq.tolist()):
        try:
            codes[k] = label_index(text)
        except ValueError as exc:
            codes[k], reasons[k] = UNLABELED, str(exc)
    y[:] = codes[inv]
    if reasons:
        for i in np.flatnonzero(np.isin(inv, list(reasons))).tolist():
            faults[i] = reasons[int(inv[i])]
    return y, faults


def _usage_key(u: str) -> str:
    return str(u).strip().lower().replace("_", "").replace(" ", "")


def _usage_faults(values: list[str]) -> dict[int, str]:
    faults: dict[int, str] = {}
    uniq = set(values)
    bad = {u for u in uniq if _usage_key(u) not in _USAGE_ALIASES}
    if bad:
        for i, u in enumerate(values):
            if u in bad:
                faults[i] = (f"unknown Usage {u.strip()!r} (expected Training, PublicTest, "
                             "PrivateTest or train/val/test)" if u.strip() else "missing Usage")
    return faults


# --------------------------------------------------------------------------------------------
# the fast pixel decoder


def _scan_pixels(arr: np.ndarray, ps: np.ndarray, pe: np.ndarray,
                 chunk_rows: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Decode the space-separated pixels in byte spans ``arr[ps[i]:pe[i]]`` (sorted, disjoint,
    at least 4 bytes into ``arr``) -> ``(values (n, 2304) uint8, suspect (n,) bool)``.

    A row is *suspect* if it holds a character other than digits and spaces, not exactly 2,304
    numbers, a number with more than 3 digits or above 255. Suspect rows are left for the exact
    (slow) check in :func:`_pixel_fault`; their values here are meaningless.

    How: per chunk of rows, mark digit bytes, blank out the gaps between spans (other fields,
    line ends), take every digit followed by a non-digit as a token end, and read the 4 bytes
    ending there with one gather through an unaligned uint32 view.
    """
    n = len(ps)
    out = np.zeros((n, NPIX), dtype=np.uint8)
    suspect = np.zeros(n, dtype=bool)
    ar = np.arange(NPIX)
    zero = np.uint8(48)
    for i0 in range(0, n, chunk_rows):
        i1 = min(n, i0 + chunk_rows)
        base = int(ps[i0]) - 4
        seg = arr[base:int(pe[i1 - 1])]
        s, e = ps[i0:i1] - base, pe[i0:i1] - base
        isd = (seg - zero) < 10
        ok = seg == 32
        ok |= isd
        isd[:s[0]] = False
        ok[:s[0]] = True
        for a, b in zip(e[:-1].tolist(), s[1:].tolist()):   # gaps between the pixel fields
            isd[a:b] = False
            ok[a:b] = True
        sus = suspect[i0:i1]
        if not ok.all():
            sus[np.searchsorted(e, np.flatnonzero(~ok), side="right")] = True
        endm = np.empty_like(isd)
        np.greater(isd[:-1], isd[1:], out=endm[:-1])   # a digit followed by a non-digit
        endm[-1] = isd[-1]
        ends = np.flatnonzero(endm)
        lo = np.searchsorted(ends, s)
        good = (np.diff(np.append(lo, len(ends))) == NPIX) & ~sus
        if good.all():
            gi, E = np.arange(i1 - i0), ends.reshape(-1, NPIX)
        else:
            gi = np.flatnonzero(good)
            E = ends[lo[gi, None] + ar]
        if len(gi):
            w = np.ndarray((len(seg) - 3,), dtype=np.uint32, buffer=seg, strides=(1,))
            B = w[E - 3].view(np.uint8).reshape(*E.shape, 4)   # bytes e-3, e-2, e-1, e
            B -= zero
            m = B[..., 2] < 10                         # 2nd digit from the right
            v = B[..., 3].astype(np.int16)
            v += (B[..., 2] * m).astype(np.int16) * 10
            m &= B[..., 1] < 10                        # 3rd digit
            v += (B[..., 1] * m).astype(np.int16) * 100
            m &= B[..., 0] < 10                        # a 4th digit: too long for 0..255
            rowbad = (v > 255).any(axis=1) | m.any(axis=1)
            if len(gi) == i1 - i0:
                out[i0:i1] = v
            else:
                out[i0 + gi] = v
            sus[gi[rowbad]] = True
        sus[~good] = True
    return out, suspect


def _pixel_fault(raw: bytes) -> tuple[np.ndarray | None, str | None]:
    """The exact (slow) check of one row's pixel text -> ``(values, None)`` or ``(None, fault)``."""
    toks = raw.split()
    for k, t in enumerate(toks, start=1):
        if not t.isdigit():
            shown = t.decode("utf-8", "replace")
            shown = shown if len(shown) <= 20 else shown[:17] + "..."
            if re.fullmatch(rb"-\d+", t):
                return None, f"pixel {k} = {shown} is outside 0..255"
            return None, f"pixel {k} is not an integer: {shown!r}"
    if len(toks) != NPIX:
        return None, f"has {len(toks)} pixel values, expected {NPIX} (48x48)"
    vals = np.array([int(t) for t in toks], dtype=np.int64)
    if (vals > 255).any():
        k = int(np.argmax(vals > 255))
        return None, f"pixel {k + 1} = {vals[k]} is outside 0..255"
    return vals.astype(np.uint8), None


# --------------------------------------------------------------------------------------------
# CSV tables


@dataclass
class _Table:
    """A CSV file split into records; structural faults are recorded per record."""

    path: Path
    header: list[str]                  # raw header names
    n: int                             # records after the header (incl. blank/faulty ones)
    lines: np.ndarray                  # 1-based line number of each record
    faults: dict[int, str] = field(default_factory=dict)
    small: Callable[[int], list[str]] | None = None      # column -> values (faulty -> "")
    spans: Callable[[int], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] | None = None
    raw: Callable[[int, int], bytes] | None = None       # (column, record) -> bytes

    @property
    def names(self) -> list[str]:
        return [_norm_col(h) for h in self.header]

    def col(self, candidates: tuple[str, ...]) -> int | None:
        for c in candidates:
            if c in self.names:
                return self.names.index(c)
        return None


def _norm_col(name: str) -> str:
    return name.strip().strip('"').lower().replace(" ", "").replace("_", "")


def _read_table(path: Path) -> _Table:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(path, f"cannot read file: {exc.strerror or exc}") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if re.match(rb"\s*", data).end() == len(data):   # (no copy of a 300 MB buffer)
        raise DataError(path, "file is empty (expected a header line such as "
                              "'emotion,pixels,Usage' and one face per line)", line=1)
    if b'"' in data:
        return _read_table_csv(path, data)
    return _read_table_bytes(path, data)


def _find_all(data: bytes, sub: bytes, start: int = 0) -> np.ndarray:
    """Positions of a byte in ``data`` (memchr via ``bytes.find``: one Python step per hit,
    and there are only a few hits per line, so this beats a full numpy compare + nonzero)."""
    out: list[int] = []
    find, append = data.find, out.append
    i = find(sub, start)
    while i != -1:
        append(i)
        i = find(sub, i + 1)
    return np.asarray(out, dtype=np.int64)


def _read_table_bytes(path: Path, data: bytes) -> _Table:
    """Unquoted CSV: line and field boundaries found with numpy on the raw bytes."""
    arr = np.frombuffer(data, dtype=np.uint8)
    nl = _find_all(data, b"\n")
    starts = np.concatenate(([0], nl + 1))
    ends = np.concatenate((nl, [len(arr)]))
    if starts[-1] == len(arr):
        starts, ends = starts[:-1], ends[:-1]
    cr = (ends > starts) & (arr[np.maximum(ends - 1, 0)] == 13)
    ends = ends - cr
    empty = ends == starts
    last = len(starts)
    while last > 1 and empty[last - 1]:   # blank lines at the very end hold no faces
        last -= 1
    starts, ends = starts[:last], ends[:last]
    header = data[starts[0]:ends[0]].decode("utf-8", "replace").split(",")
    ncol = len(header)
    starts, ends = starts[1:], ends[1:]
    n = len(starts)
    if data.count(b",") <= 16 * (n + 1):
        commas = _find_all(data, b",", int(starts[0]) if n else len(data))
    else:   # many commas per line (not a FER layout, but decode it without a slow loop)
        commas = np.flatnonzero(arr == 44)
    first = np.searchsorted(commas, starts)
    count = np.searchsorted(commas, ends) - first
    faults: dict[int, str] = {}
    bad = np.flatnonzero((count != ncol - 1) | (ends == starts))
    for i in bad.tolist():
        faults[i] = ("empty line" if ends[i] == starts[i] else
                     f"has {count[i] + 1} fields, expected {ncol} ({','.join(header)})")
    okrows = np.ones(n, dtype=bool)
    okrows[bad] = False
    firstc = np.where(okrows, first, 0)

    @functools.lru_cache(maxsize=None)
    def bounds(j: int) -> tuple[np.ndarray, np.ndarray]:
        if len(commas) == 0:
            return starts.copy(), ends.copy()
        s = starts if j == 0 else commas[np.minimum(firstc + j - 1, len(commas) - 1)] + 1
        e = ends if j == ncol - 1 else commas[np.minimum(firstc + j, len(commas) - 1)]
        return np.where(okrows, s, starts), np.where(okrows, e, starts)

    def small(j: int) -> list[str]:
        s, e = bounds(j)
        return [data[a:b].decode("utf-8", "replace") for a, b in zip(s.tolist(), e.tolist())]

    def spans(j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        s, e = bounds(j)
        idx = np.flatnonzero(okrows)
        return arr, s[idx], e[idx], idx

    def raw(j: int, i: int) -> bytes:
        s, e = bounds(j)
        return data[int(s[i]):int(e[i])]

    return _Table(path, header, n, np.arange(n, dtype=np.int64) + 2, faults, small, spans, raw)


def _read_table_csv(path: Path, data: bytes) -> _Table:
    """Quoted CSV: :mod:`csv` finds the records; pixels still go through the fast decoder."""
    reader = csv.reader(io.StringIO(data.decode("utf-8", "replace"), newline=""))
    try:
        header = next(reader)
        records, lines, prev = [], [], reader.line_num
        for rec in reader:
            records.append(rec)
            lines.append(prev + 1)
            prev = reader.line_num
    except csv.Error as exc:
        raise DataError(path, f"malformed CSV: {exc}", line=reader.line_num) from None
    while records and not records[-1]:
        records.pop()
        lines.pop()
    ncol, n = len(header), len(records)
    faults: dict[int, str] = {}
    for i, rec in enumerate(records):
        if len(rec) != ncol:
            faults[i] = ("empty line" if not rec else
                         f"has {len(rec)} fields, expected {ncol} ({','.join(header)})")

    def small(j: int) -> list[str]:
        return [rec[j] if i not in faults else "" for i, rec in enumerate(records)]

    def spans(j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        idx = np.array([i for i in range(n) if i not in faults], dtype=np.int64)
        texts = [records[i][j] for i in idx.tolist()]
        pieces = [t.encode("ascii", "replace") for t in texts]
        lens = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=len(pieces))
        ps = np.cumsum(np.concatenate(([4], lens[:-1] + 1))) if len(lens) else lens
        buf = b"\n\n\n\n" + b"\n".join(pieces)   # spans start >= 4 bytes in
        return np.frombuffer(buf, dtype=np.uint8), ps, ps + lens, idx

    def raw(j: int, i: int) -> bytes:
        return records[i][j].encode("utf-8")

    return _Table(path, header, n, np.asarray(lines, dtype=np.int64), faults, small, spans, raw)


@dataclass
class _Part:
    """Faces decoded from one file, before the split rule runs."""

    x: np.ndarray          # (n, 48, 48) uint8
    y: np.ndarray          # (n,) int64
    usage: np.ndarray      # (n,) str: Usage values / split names
    row: np.ndarray        # (n,) int64
    votes: np.ndarray | None = None
    records: int = 0       # data rows in the file, bad ones included (row-key offset for pairs)


def _finish_faults(path: Path, faults: dict[int, str], total: int, skip: bool,
                   where: Callable[[int], dict]) -> None:
    """Raise for the first fault, or warn with the count when skipping."""
    if not faults:
        return
    i = min(faults)
    if not skip:
        raise DataError(path, faults[i], **where(i))
    loc = where(i)
    first = f"line {loc['line']}" if loc.get("line") is not None else loc.get("where", "")
    _warn(f"{path}: skipped {len(faults)} bad row(s) of {total} (first: {first}: {faults[i]})",
          BadRowsWarning)


def _load_csv(path: Path, *, skip: bool, default_split: str | None = None,
              row_offset: int = 0) -> _Part:
    """One CSV file in any of the column layouts -> a :class:`_Part`."""
    t = _read_table(path)
    pix_c, lab_c, use_c = t.col(_PIXEL_COLUMNS), t.col(_LABEL_COLUMNS), t.col(_USAGE_COLUMNS)
    if pix_c is None:
        looks_like_data = any(len(h.split()) > 100 for h in t.header)
        raise DataError(path, "missing header line; expected one such as "
                              "'emotion,pixels,Usage'" if looks_like_data else
                              f"missing pixel column ('pixels' or 'feature'); header has: "
                              f"{', '.join(h.strip() for h in t.header) or '(nothing)'}", line=1)
    if t.n == 0:
        raise DataError(path, "file has only a header line, no faces", line=1)
    faults = dict(t.faults)
    if lab_c is not None:
        y, f = _labels_of(t.small(lab_c))
        for i, msg in f.items():
            faults.setdefault(i, f"{msg} (column {t.header[lab_c].strip()!r})")
    else:
        y = np.full(t.n, UNLABELED, dtype=np.int64)
    if use_c is not None:
        usage_list = [u.strip() for u in t.small(use_c)]
        for i, msg in _usage_faults(usage_list).items():
            faults.setdefault(i, msg)
        usage = np.asarray(usage_list, dtype=object)
    else:
        split = default_split or ("train" if lab_c is not None else "test")
        usage = np.full(t.n, split, dtype=object)
    # pixels: fast decode, then the exact check for flagged rows only
    arr, ps, pe, idx = t.spans(pix_c)
    x, suspect = _scan_pixels(arr, ps, pe)
    if len(idx) != t.n:
        x, vals = np.zeros((t.n, NPIX), dtype=np.uint8), x
        x[idx] = vals
    first_other = min(faults) if faults else t.n
    pcol = t.header[pix_c].strip()
    for i in idx[suspect].tolist():
        if not skip and i > first_other:
            break
        v, msg = _pixel_fault(t.raw(pix_c, i))
        if msg is None:
            x[i] = v
            continue
        faults.setdefault(i, f"{msg} (column {pcol!r})")
        if not skip:
            break
    _finish_faults(path, faults, t.n, skip, lambda i: {"line": int(t.lines[i])})
    rows = np.arange(t.n, dtype=np.int64) + row_offset
    if faults:
        keep = np.ones(t.n, dtype=bool)
        keep[list(faults)] = False
        if not keep.any():
            raise DataError(path, "no valid faces left after skipping bad rows")
        x, y, usage, rows = x[keep], y[keep], usage[keep], rows[keep]
    return _Part(x.reshape(-1, SIZE, SIZE), y, usage.astype(str), rows, records=t.n)


# --------------------------------------------------------------------------------------------
# npz


def _load_npz(path: Path, *, skip: bool) -> _Part:
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k in ("x", "y", "usage", "row", "ferplus_votes")}
    except ValueError as exc:
        raise DataError(path, f"cannot load .npz without pickle ({exc})") from None
    except Exception as exc:  # zipfile.BadZipFile, OSError, EOFError ...
        raise DataError(path, f"not a readable .npz file ({type(exc).__name__}: {exc})") from None
    if "x" not in arrays:
        raise DataError(path, "missing array 'x' (faces, uint8 N x 48 x 48)")
    x = arrays["x"]
    n = len(x) if x.ndim else 0
    if x.ndim == 2 and x.shape[1] == NPIX:
        x = x.reshape(n, SIZE, SIZE)
    elif x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3 or x.shape[1:] != (SIZE, SIZE):
        raise DataError(path, f"array 'x' has shape {x.shape}; expected N x 48 x 48")
    if n == 0:
        raise DataError(path, "array 'x' holds no faces")
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.integer):
            raise DataError(path, f"array 'x' has dtype {x.dtype}; expected uint8 pixels 0..255")
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            k = int(np.flatnonzero(((x < 0) | (x > 255)).reshape(n, -1).any(1))[0])
            raise DataError(path, f"pixel values outside 0..255 (range {lo}..{hi})",
                            where=f"x[{k}]")
        x = x.astype(np.uint8)
    faults: dict[int, str] = {}
    if "y" in arrays:
        yv = arrays["y"]
        if yv.shape != (n,):
            raise DataError(path, f"array 'y' has shape {yv.shape}; expected ({n},)")
        if np.issubdtype(yv.dtype, np.integer):
            y = yv.astype(np.int64)
            for i in np.flatnonzero((y < UNLABELED) | (y >= NUM_CLASSES)).tolist():
                faults[i] = f"label {y[i]} is not a class index 0..{NUM_CLASSES - 1} (or -1)"
        else:
            y, f = _labels_of([str(v) for v in yv.tolist()])
            faults.update(f)
    else:
        y = np.full(n, UNLABELED, dtype=np.int64)
    if "usage" in arrays:
        u = arrays["usage"]
        if u.shape != (n,):
            raise DataError(path, f"array 'usage' has shape {u.shape}; expected ({n},)")
        usage = u.astype(str)
        for i, msg in _usage_faults(usage.tolist()).items():
            faults.setdefault(i, msg)
    else:
        usage = np.full(n, "train" if "y" in arrays else "test").astype(str)
    row = np.arange(n, dtype=np.int64)
    if "row" in arrays:
        if arrays["row"].shape != (n,) or not np.issubdtype(arrays["row"].dtype, np.integer):
            raise DataError(path, f"array 'row' must be {n} integers")
        row = arrays["row"].astype(np.int64)
    votes = arrays.get("ferplus_votes")
    if votes is not None and votes.shape != (n, len(FERPLUS_VOTE_NAMES)):
        raise DataError(path, f"array 'ferplus_votes' has shape {votes.shape}; "
                              f"expected ({n}, {len(FERPLUS_VOTE_NAMES)})")
    _finish_faults(path, faults, n, skip, lambda i: {"where": f"entry {i}"})
    if faults:
        keep = np.ones(n, dtype=bool)
        keep[list(faults)] = False
        if not keep.any():
            raise DataError(path, "no valid faces left after skipping bad entries")
        x, y, usage, row = x[keep], y[keep], usage[keep], row[keep]
        votes = None if votes is None else votes[keep]
    return _Part(np.ascontiguousarray(x), y, usage, row,
                 None if votes is None else votes.astype(np.int64))


# --------------------------------------------------------------------------------------------
# image folders


def _image_to_face(path: Path) -> np.ndarray:
    """Any image file -> 48x48 uint8 grayscale (EXIF orientation applied)."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        im.load()
        mode = im.mode
        if mode.startswith("I;16") or mode in ("I", "F"):
            a = np.asarray(im).astype(np.float64)
            if mode.startswith("I;16"):
                a = a / 257.0
            elif mode == "I" and a.max() > 255:
                a = np.clip(a, 0, 65535) / 257.0
            elif mode == "F" and a.max() <= 1.0:
                a = a * 255.0
            im = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))
        elif mode == "P":
            im = im.convert("RGBA").convert("L")
        elif mode != "L":
            im = im.convert("L")
        if im.size != (SIZE, SIZE):
            im = im.resize((SIZE, SIZE), Image.Resampling.BILINEAR)
        return np.asarray(im, dtype=np.uint8).copy()


def _is_image_layout(root: Path) -> bool:
    for d in root.iterdir():
        if d.is_dir() and (_dir_key(d.name) in _SPLIT_DIRS or _dir_key(d.name) in _EMOTION_ALIASES):
            return True
    return False


def _dir_key(name: str) -> str:
    return name.strip().lower().replace(" ", "").replace("-", "").replace("_", "")


def _folder_label(folder: Path) -> int:
    key = _dir_key(folder.name)
    if key.isdigit() and int(key) < NUM_CLASSES:
        return int(key)
    if key in _EMOTION_ALIASES:
        return _EMOTION_ALIASES[key]
    raise DataError(folder, f"unknown emotion folder {folder.name!r} (expected one of "
                            f"{', '.join(EMOTIONS)} or 0..{NUM_CLASSES - 1})")


def _visible(p: Path) -> bool:
    return not p.name.startswith((".", "_")) and p.name.lower() not in ("thumbs.db", "desktop.ini")


def _load_image_dir(root: Path, *, skip: bool) -> _Part:
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and _visible(d))
    split_dirs = [d for d in subdirs if _dir_key(d.name) in _SPLIT_DIRS]
    entries: list[tuple[str, Path, str, int]] = []   # (sort key, file, split, label)
    others: list[Path] = []

    def collect(folder: Path, split: str, label: int) -> None:
        for f in folder.iterdir():
            if f.is_file() and _visible(f):
                if f.suffix.lower() in IMAGE_EXTENSIONS:
                    entries.append((f.relative_to(root).as_posix(), f, split, label))
                else:
                    others.append(f)

    def collect_split(folder: Path, split: str) -> None:
        collect(folder, split, UNLABELED)          # images directly inside: unlabeled
        for emo in sorted(d for d in folder.iterdir() if d.is_dir() and _visible(d)):
            collect(emo, split, _folder_label(emo))

    if split_dirs:
        for d in split_dirs:
            collect_split(d, _SPLIT_DIRS[_dir_key(d.name)])
        ignored = [d.name for d in subdirs if d not in split_dirs]
        if ignored:
            _warn(f"{root}: ignored folder(s) {', '.join(ignored)} (not train/val/test)")
    else:   # flat layout: root/<emotion>/*.png -> train (+ val slice)
        for emo in subdirs:
            collect(emo, "train", _folder_label(emo))
    if others:
        _warn(f"{root}: ignored {len(others)} non-image file(s), e.g. {others[0]}")
    if not entries:
        raise DataError(root, "no image files found (expected train/<emotion>/*.png|jpg|jpeg|"
                              "bmp|webp and test/<emotion>/...)")
    entries.sort(key=lambda e: e[0])
    n = len(entries)
    x = np.zeros((n, SIZE, SIZE), dtype=np.uint8)
    faults: dict[int, str] = {}
    for i, (_, f, _, _) in enumerate(entries):
        try:
            x[i] = _image_to_face(f)
        except Exception as exc:  # PIL raises many types for corrupt files
            if not skip:
                raise DataError(f, f"cannot read image ({type(exc).__name__}: {exc})",
                                where=f"image {i + 1} of {n}") from None
            faults[i] = f"cannot read image {f.name} ({type(exc).__name__}: {exc})"
    _finish_faults(root, faults, n, skip, lambda i: {"where": str(entries[i][1])})
    keep = np.ones(n, dtype=bool)
    keep[list(faults)] = False
    if not keep.any():
        raise DataError(root, "no readable images")
    y = np.array([e[3] for e in entries], dtype=np.int64)
    usage = np.array([e[2] for e in entries]).astype(str)
    return _Part(x[keep], y[keep], usage[keep], np.arange(n, dtype=np.int64)[keep])


# --------------------------------------------------------------------------------------------
# FER+ votes


def _read_ferplus(path: Path) -> np.ndarray:
    """``fer2013new.csv`` -> votes ``(rows, 10)`` int64 in :data:`FERPLUS_VOTE_NAMES` order."""
    try:
        text = path.read_bytes().decode("utf-8-sig", "replace")
    except OSError as exc:
        raise DataError(path, f"cannot read FER+ file: {exc.strerror or exc}") from None
    if not text.strip():
        raise DataError(path, "FER+ file is empty", line=1)
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


def _attach_ferplus(fs: FaceSet, path: Path) -> FaceSet:
    votes = _read_ferplus(path)
    if len(fs.row) and (fs.row.min() < 0 or fs.row.max() >= len(votes)):
        raise DataError(path, f"has {len(votes)} rows but {fs.source} has faces with row keys "
                              f"{fs.row.min()}..{fs.row.max()}; FER+ rows must follow the "
                              "original fer2013.csv order")
    fs.ferplus_votes = votes[fs.row]
    return fs


# --------------------------------------------------------------------------------------------
# dispatch


def _synthetic(spec: str, opts: dict[str, str]) -> FaceSet:
    allowed = {"n", "seed", "label_noise"}
    unknown = set(opts) - allowed
    if unknown:
        raise DataError(spec, f"unknown option(s) {', '.join(sorted(unknown))} for synthetic; "
                              f"allowed: {', '.join(sorted(allowed))}")
    try:
        n = int(opts.get("n", 12000))
        seed = int(opts.get("seed", 0))
        noise = float(opts.get("label_noise", 0.02))
    except ValueError as exc:
        raise DataError(spec, f"bad option value: {exc}") from None
    if n < 1 or not 0.0 <= noise <= 1.0:
        raise DataError(spec, "need n >= 1 and 0 <= label_noise <= 1")
    from fer_core.data.synthetic import generate   # lazy: only when SynthFER is asked for

    x, y = generate(n=n, seed=seed, label_noise=noise)
    x_t = torch.as_tensor(np.asarray(x), dtype=torch.uint8)
    y_t = torch.as_tensor(np.asarray(y), dtype=torch.int64)
    # 80/10/10 by a seeded permutation, decorrelated from the generator's own stream.
    perm = np.random.default_rng([seed, 0x5F11]).permutation(n)
    n_train, n_val = int(round(0.8 * n)), int(round(0.1 * n))
    split = np.empty(n, dtype=object)
    split[perm[:n_train]] = "train"
    split[perm[n_train:n_train + n_val]] = "val"
    split[perm[n_train + n_val:]] = "test"
    return FaceSet(x=x_t, y=y_t, split=split.astype(str), row=np.arange(n, dtype=np.int64),
                   source=spec, synthetic=True)


_TV_NAMES = ("train.csv", "test.csv")


def _find_named(folder: Path, name: str) -> Path | None:
    for f in folder.iterdir():
        if f.is_file() and f.name.lower() == name:
            return f
    return None


def _torchvision_pair(folder: Path, *, skip: bool) -> list[_Part]:
    """torchvision's layout: ``train.csv`` (emotion,pixels) + ``test.csv`` (pixels[,emotion]).
    Row keys of test.csv continue after train.csv's rows, which reproduces the original
    fer2013.csv order (Training, then PublicTest + PrivateTest) and keeps keys unique."""
    train, test = _find_named(folder, "train.csv"), _find_named(folder, "test.csv")
    parts: list[_Part] = []
    offset = 0
    if train is not None:
        parts.append(_load_csv(train, skip=skip, default_split="train"))
        offset = parts[0].records
    if test is not None:
        parts.append(_load_csv(test, skip=skip, default_split="test", row_offset=offset))
    return parts


def _is_tv_member(path: Path) -> bool:
    """A headerless-Usage ``train.csv``/``test.csv`` whose sibling completes the pair."""
    if path.name.lower() not in _TV_NAMES:
        return False
    other = _TV_NAMES[1 - _TV_NAMES.index(path.name.lower())]
    sib = _find_named(path.parent, other)
    if sib is None:
        return False
    for f in (path, sib):
        with open(f, "rb") as fh:
            names = [_norm_col(h) for h in
                     fh.readline().decode("utf-8-sig", "replace").strip().split(",")]
        if not any(c in names for c in _PIXEL_COLUMNS) or any(c in names for c in _USAGE_COLUMNS):
            return False
    return True


def _load_path(path: Path, *, skip: bool) -> list[_Part]:
    if not path.exists():
        raise DataError(path, "no such file or directory")
    if path.is_dir():
        for name in ("fer2013.csv", "icml_face_data.csv"):
            f = _find_named(path, name)
            if f is not None:
                return [_load_csv(f, skip=skip)]
        if _find_named(path, "train.csv") or _find_named(path, "test.csv"):
            return _torchvision_pair(path, skip=skip)
        sub = path / "fer2013"
        if sub.is_dir():
            return _load_path(sub, skip=skip)
        if _is_image_layout(path):
            return [_load_image_dir(path, skip=skip)]
        raise DataError(path, "no dataset found in this folder (expected fer2013.csv, "
                              "icml_face_data.csv, train.csv + test.csv, or image folders "
                              "train/<emotion>/ and test/<emotion>/)")
    with open(path, "rb") as fh:
        magic = fh.read(8)
    if magic.startswith(b"PK") or path.suffix.lower() == ".npz":
        return [_load_npz(path, skip=skip)]
    if magic.startswith((b"\x89PNG", b"\xff\xd8\xff", b"BM", b"RIFF", b"GIF8")):
        raise DataError(path, "is a single image; pass the folder of images instead")
    if _is_tv_member(path):
        return _torchvision_pair(path.parent, skip=skip)
    return [_load_csv(path, skip=skip)]


def open_dataset(spec: str, *, val_fraction: float = 0.1, seed: int = 0,
                 skip_bad_rows: bool = False, ferplus: str | None = None) -> FaceSet:
    """Open a dataset spec (DESIGN.md "Dataset specs") as a :class:`FaceSet`.

    ``spec`` is ``synthetic[:n=..,seed=..,label_noise=..]`` or a path (file or folder) with an
    optional ``:split=train|val|test`` tail that puts every face into that one split. Splits
    follow :func:`splits_from_usage` (a seeded stratified ``val_fraction`` of train becomes val
    when the source has no val). ``ferplus`` is a FER+ ``fer2013new.csv`` whose votes are
    attached by the ``row`` key. Bad input raises :class:`DataError`; with ``skip_bad_rows``
    bad rows are dropped and counted in a :class:`BadRowsWarning`.
    """
    spec = str(spec)
    name, opts = parse_spec(spec)
    if name == "synthetic":
        if ferplus:
            raise DataError(ferplus, "FER+ votes belong to FER2013 rows, not to synthetic faces")
        return _synthetic(spec, opts)
    unknown = set(opts) - {"split"}
    if unknown:
        raise DataError(spec, f"unknown option(s) {', '.join(sorted(unknown))}; "
                              "a file spec accepts only split=train|val|test")
    forced = opts.get("split")
    if forced is not None and forced not in SPLITS:
        raise DataError(spec, f"split={forced!r}: choose one of {', '.join(SPLITS)}")
    parts = _load_path(Path(name).expanduser(), skip=skip_bad_rows)
    x = np.concatenate([p.x for p in parts]) if len(parts) > 1 else parts[0].x
    y = np.concatenate([p.y for p in parts])
    usage = np.concatenate([p.usage for p in parts])
    row = np.concatenate([p.row for p in parts])
    votes = parts[0].votes if len(parts) == 1 else None
    if forced is not None:
        split = np.full(len(y), forced).astype(str)
    else:
        split = splits_from_usage(usage, y, val_fraction=val_fraction, seed=seed)
    fs = FaceSet(x=torch.from_numpy(np.ascontiguousarray(x)), y=torch.from_numpy(y),
                 split=split, row=row, source=spec, synthetic=False, ferplus_votes=votes)
    if ferplus:
        fs = _attach_ferplus(fs, Path(ferplus).expanduser())
    return fs
