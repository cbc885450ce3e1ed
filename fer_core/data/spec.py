"""Dataset spec -> :class:`~fer_core.data.faceset.FaceSet`: the entry point, and what readers share.

Why this module exists: FER2013 circulates in half a dozen layouts (Kaggle's ``fer2013.csv``, the
ICML ``icml_face_data.csv`` with spaces in its header, torchvision's ``train.csv``/``test.csv``, a
course ``label,feature`` CSV, folders of images, our own ``.npz``) and users bring their own
copies. Everything downstream (trainer, evaluator, dashboard) must not care which one it was, so
one function, :func:`open_dataset`, turns a *dataset spec* string (DESIGN.md, "Dataset specs")
into a FaceSet with the same split rule (:func:`~fer_core.data.faceset.splits_from_usage`) for
every source, and a stable ``row`` key pointing back into the user's own file.

Each layout has its reader module (:mod:`~fer_core.data.csv_formats`, :mod:`~fer_core.data.folders`,
:mod:`~fer_core.data.npz`, :mod:`~fer_core.data.ferplus`); this module picks the reader and holds
what they all use: :class:`DataError`, :class:`BadRowsWarning`, :class:`Part`, the label and Usage
rules (:func:`label_index`, :func:`labels_of`, :func:`usage_faults`) and :func:`finish_faults`.

Bad input is never skipped silently: it raises :class:`DataError`, or with ``skip_bad_rows=True``
the bad rows are dropped and their number is reported through :func:`warnings.warn`.
"""

from __future__ import annotations

import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fer_core.data.faceset import SPLITS, UNLABELED, USAGE_ALIASES, FaceSet, splits_from_usage
from fer_core.labels import EMOTIONS, NUM_CLASSES

__all__ = ["DataError", "BadRowsWarning", "Part", "open_dataset", "parse_spec", "label_index",
           "labels_of", "usage_faults", "finish_faults", "warn_user", "name_key", "find_named",
           "EMOTION_ALIASES", "SIZE", "NPIX"]

SIZE = 48
NPIX = SIZE * SIZE

# Emotion names (labels in CSV/npz, folder names in image layouts) -> class index.
EMOTION_ALIASES: dict[str, int] = {name: i for i, name in enumerate(EMOTIONS)}
EMOTION_ALIASES.update({
    "anger": 0, "disgusted": 1, "fearful": 2, "scared": 2, "afraid": 2, "happiness": 3, "joy": 3,
    "sadness": 4, "surprised": 5, "suprise": 5, "neutrality": 6,
})
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


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the first caller outside ``fer_core.data`` (the user's line)."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("fer_core.data."):
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
# labels, Usage, faults: the rules every reader applies


def name_key(name: str) -> str:
    """A label/folder name compared loosely: stripped, lower-case, no spaces, dashes, underscores."""
    return name.strip().lower().replace(" ", "").replace("-", "").replace("_", "")


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
    key = name_key(text)
    if key in EMOTION_ALIASES:
        return EMOTION_ALIASES[key]
    raise ValueError(f"unknown label {text!r} (expected 0..{NUM_CLASSES - 1} or one of "
                     f"{', '.join(EMOTIONS)})")


def labels_of(values: list[str]) -> tuple[np.ndarray, dict[int, str]]:
    """Labels as text -> ``(class indices, {position: fault})``; each distinct text is
    interpreted once, so a 35,887-row column costs a handful of :func:`label_index` calls."""
    y = np.full(len(values), UNLABELED, dtype=np.int64)
    faults: dict[int, str] = {}
    if not len(values):
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


def usage_faults(values: list[str]) -> dict[int, str]:
    """``{position: fault}`` for Usage values that are not FER2013's (or train/val/test)."""
    faults: dict[int, str] = {}
    bad = {u for u in set(values)
           if str(u).strip().lower().replace("_", "").replace(" ", "") not in USAGE_ALIASES}
    if bad:
        for i, u in enumerate(values):
            if u in bad:
                faults[i] = (f"unknown Usage {u.strip()!r} (expected Training, PublicTest, "
                             "PrivateTest or train/val/test)" if u.strip() else "missing Usage")
    return faults


@dataclass
class Part:
    """Faces decoded from one file by a reader, before the split rule runs."""

    x: np.ndarray          # (n, 48, 48) uint8
    y: np.ndarray          # (n,) int64
    usage: np.ndarray      # (n,) str: Usage values / split names
    row: np.ndarray        # (n,) int64
    votes: np.ndarray | None = None
    records: int = 0       # data rows in the file, bad ones included (row-key offset for pairs)


def finish_faults(path: Path, faults: dict[int, str], total: int, skip: bool,
                  where: Callable[[int], dict]) -> None:
    """Raise :class:`DataError` for the first fault, or (``skip``) warn with the count.
    ``where(i)`` gives the location keywords of record ``i`` (``line=`` or ``where=``)."""
    if not faults:
        return
    i = min(faults)
    if not skip:
        raise DataError(path, faults[i], **where(i))
    loc = where(i)
    first = f"line {loc['line']}" if loc.get("line") is not None else loc.get("where", "")
    warn_user(f"{path}: skipped {len(faults)} bad row(s) of {total} (first: {first}: {faults[i]})",
              BadRowsWarning)


def find_named(folder: Path, name: str) -> Path | None:
    """The file in ``folder`` called ``name`` (lower-case), compared case-insensitively."""
    for f in folder.iterdir():
        if f.is_file() and f.name.lower() == name:
            return f
    return None


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


def _load_path(path: Path, *, skip: bool) -> list[Part]:
    # The readers import the shared names above from this module, hence imported here.
    from fer_core.data import csv_formats, folders, npz

    if not path.exists():
        raise DataError(path, "no such file or directory")
    if path.is_dir():
        for name in ("fer2013.csv", "icml_face_data.csv"):
            f = find_named(path, name)
            if f is not None:
                return [csv_formats.load_csv(f, skip=skip)]
        if find_named(path, "train.csv") or find_named(path, "test.csv"):
            return csv_formats.load_torchvision_pair(path, skip=skip)
        sub = path / "fer2013"
        if sub.is_dir():
            return _load_path(sub, skip=skip)
        if folders.is_image_layout(path):
            return [folders.load_image_dir(path, skip=skip)]
        raise DataError(path, "no dataset found in this folder (expected fer2013.csv, "
                              "icml_face_data.csv, train.csv + test.csv, or image folders "
                              "train/<emotion>/ and test/<emotion>/)")
    with open(path, "rb") as fh:
        magic = fh.read(8)
    if magic.startswith(b"PK") or path.suffix.lower() == ".npz":
        return [npz.load_npz(path, skip=skip)]
    if magic.startswith((b"\x89PNG", b"\xff\xd8\xff", b"BM", b"RIFF", b"GIF8")):
        raise DataError(path, "is a single image; pass the folder of images instead")
    if csv_formats.is_torchvision_member(path):
        return csv_formats.load_torchvision_pair(path.parent, skip=skip)
    return [csv_formats.load_csv(path, skip=skip)]


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
        from fer_core.data.ferplus import attach_ferplus

        fs = attach_ferplus(fs, Path(ferplus).expanduser())
    return fs
