"""Our own ``.npz`` dataset file -> a :class:`~fer_core.data.spec.Part`.

Why this module exists: a converted FER2013 (faces as one uint8 array) loads in a fraction of a
second instead of re-parsing 290 MB of CSV text, and it can carry what the CSV cannot (row keys
into the original file, FER+ votes). Arrays: ``x`` (N x 48 x 48, or N x 2304, or N x 1 x 48 x 48;
uint8 or in-range integers) and optional ``y`` (class indices, -1 = unlabeled, or emotion names),
``usage`` (FER2013 Usage values or split names), ``row`` and ``ferplus_votes`` (N x 10).
Pickled arrays are refused: an ``.npz`` from someone else must not run code when opened.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fer_core.data.faceset import UNLABELED
from fer_core.data.ferplus import FERPLUS_VOTE_NAMES
from fer_core.data.spec import NPIX, SIZE, DataError, Part, finish_faults, labels_of, usage_faults
from fer_core.labels import NUM_CLASSES

__all__ = ["load_npz"]

_ARRAYS = ("x", "y", "usage", "row", "ferplus_votes")


def _faces(path: Path, x: np.ndarray) -> np.ndarray:
    """Array ``x`` in any accepted shape/dtype -> uint8 N x 48 x 48."""
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
    return x


def load_npz(path: Path, *, skip: bool = False) -> Part:
    """An ``.npz`` file -> :class:`Part`; bad entries raise (or, with ``skip``, are dropped)."""
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k in _ARRAYS}
    except ValueError as exc:
        raise DataError(path, f"cannot load .npz without pickle ({exc})") from None
    except Exception as exc:  # zipfile.BadZipFile, OSError, EOFError ...
        raise DataError(path, f"not a readable .npz file ({type(exc).__name__}: {exc})") from None
    if "x" not in arrays:
        raise DataError(path, "missing array 'x' (faces, uint8 N x 48 x 48)")
    x = _faces(path, arrays["x"])
    n = len(x)
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
            y, f = labels_of([str(v) for v in yv.tolist()])
            faults.update(f)
    else:
        y = np.full(n, UNLABELED, dtype=np.int64)
    if "usage" in arrays:
        u = arrays["usage"]
        if u.shape != (n,):
            raise DataError(path, f"array 'usage' has shape {u.shape}; expected ({n},)")
        usage = u.astype(str)
        for i, msg in usage_faults(usage.tolist()).items():
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
    finish_faults(path, faults, n, skip, lambda i: {"where": f"entry {i}"})
    if faults:
        keep = np.ones(n, dtype=bool)
        keep[list(faults)] = False
        if not keep.any():
            raise DataError(path, "no valid faces left after skipping bad entries")
        x, y, usage, row = x[keep], y[keep], usage[keep], row[keep]
        votes = None if votes is None else votes[keep]
    return Part(np.ascontiguousarray(x), y, usage, row,
                None if votes is None else votes.astype(np.int64))
