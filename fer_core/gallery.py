"""Pure helpers behind the dashboard's error gallery and run comparison (no Streamlit here).

Why a separate module: the page code should only wire widgets to results. Everything that decides
*which* faces are shown -- a confusion-matrix cell turned into face positions, the sort orders,
pagination, the difference matrix of two runs, the faces that flipped between them, which config
keys differ between runs, curve smoothing -- is plain numpy/pandas here, so it is unit-testable,
benchmarkable without a browser, and reusable by a notebook or the CLI.

Positions below are positions in a run's :class:`~fer_core.rundata.Predictions` (the order of its
``eval/<split>.npz`` arrays), not dataset row ids; its ``index`` maps a position to the FaceSet and
``row`` to the user's file.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "SORT_KEYS",
    "align_rows",
    "cell_from_selection",
    "cell_positions",
    "comparable",
    "default_cell",
    "difference_matrix",
    "differing_keys",
    "ema",
    "flatten_config",
    "flip_positions",
    "order_positions",
    "page_bounds",
    "row_normalize",
    "selection_positions",
    "top_probs",
    "upscale",
]

SORT_KEYS: dict[str, str] = {
    "confidence": "most confident first",
    "mislabel": "likely mislabeled first",
    "row": "dataset row id",
    "issue": "label-issue score (cleanlab) first",
}
"""Gallery sort orders: key -> label shown in the UI. ``issue`` needs per-face scores (see
:func:`order_positions`), so galleries offer it only when they have them."""


# --------------------------------------------------------------------------- confusion cells
def cell_positions(labels: np.ndarray, preds: np.ndarray, true: int, pred: int) -> np.ndarray:
    """Positions of the faces in confusion cell (true, pred); diagonal cells are the correct ones."""
    return np.flatnonzero((np.asarray(labels) == true) & (np.asarray(preds) == pred))


def row_normalize(cm: np.ndarray) -> np.ndarray:
    """Each row of a confusion matrix as % of its support (rows with no faces stay 0)."""
    cm = np.asarray(cm, dtype=np.float64)
    support = cm.sum(1, keepdims=True)
    return np.divide(100.0 * cm, support, out=np.zeros_like(cm), where=support > 0)


def default_cell(cm: np.ndarray) -> tuple[int, int]:
    """The most frequent confusion (largest off-diagonal count); the top-left cell if none."""
    cm = np.asarray(cm).copy()
    if cm.size == 0:
        return 0, 0
    np.fill_diagonal(cm, -1)
    i, j = np.unravel_index(int(np.argmax(cm)), cm.shape)
    if cm[i, j] <= 0:
        return 0, 0
    return int(i), int(j)


def cell_from_selection(selection: Mapping[str, Any] | None, classes: Sequence[str],
                        curve_number: int | None = None) -> tuple[int, int] | None:
    """The (true, pred) cell of a Plotly point selection on the confusion matrix.

    The matrix is drawn as a heatmap with one invisible square marker per cell on top (a plain
    ``go.Heatmap`` cell returns no selection in Streamlit); the markers are laid out row-major, so
    ``point_index = true * k + pred``. The category names ``x`` (predicted) / ``y`` (true) are
    preferred when present, the point index is the fallback. ``curve_number`` restricts to the
    marker trace. The last selected point wins. Returns ``None`` for an empty selection.
    """
    if not selection:
        return None
    points = list(selection.get("points") or [])
    if curve_number is not None:
        points = [p for p in points if p.get("curve_number", curve_number) == curve_number]
    if not points:
        return None
    p = points[-1]
    k = len(classes)
    names = list(classes)
    x, y = p.get("x"), p.get("y")
    if x in names and y in names:
        return names.index(y), names.index(x)
    idx = p.get("point_index", p.get("point_number"))
    if isinstance(idx, (int, np.integer)) and 0 <= int(idx) < k * k:
        i, j = divmod(int(idx), k)
        return i, j
    return None


def selection_positions(selection: Mapping[str, Any] | None,
                        curve_positions: Sequence[np.ndarray]) -> np.ndarray:
    """Positions (in the Predictions) of the points of a Plotly box/lasso selection on a scatter.

    A map drawn as one trace per colour group holds, in trace ``c``, the faces at positions
    ``curve_positions[c]`` in that order, so a selected point ``(curve_number=c, point_index=i)``
    is the face at ``curve_positions[c][i]``. Points of other traces or out of range are ignored.
    Returns the unique positions, ascending (empty for no selection).
    """
    if not selection:
        return np.zeros(0, dtype=np.int64)
    found: list[int] = []
    for p in selection.get("points") or []:
        c = p.get("curve_number", 0)
        i = p.get("point_index", p.get("point_number"))
        if not isinstance(c, (int, np.integer)) or not isinstance(i, (int, np.integer)):
            continue
        if 0 <= c < len(curve_positions) and 0 <= i < len(curve_positions[c]):
            found.append(int(curve_positions[c][i]))
    return np.unique(np.asarray(found, dtype=np.int64))


# --------------------------------------------------------------------------- sorting / paging
def order_positions(positions: np.ndarray, probs: np.ndarray, labels: np.ndarray,
                    rows: np.ndarray | None, key: str, scores: np.ndarray | None = None) -> np.ndarray:
    """``positions`` sorted for the gallery.

    * ``confidence``: highest predicted-class probability first;
    * ``mislabel``: "likely mislabeled" first -- lowest self-confidence (the model's probability
      of the given label, as in confident learning), ties broken by higher mistakenness;
    * ``row``: ascending dataset row id (``rows`` or, without it, position);
    * ``issue``: highest ``scores[pos]`` first (a label-issue score, higher = label more likely
      wrong, see :mod:`fer_core.dataset.label_issues`); NaN scores (unlabeled faces) go last.
    The sort is stable, so equal keys keep dataset order.
    """
    positions = np.asarray(positions, dtype=np.int64)
    if len(positions) == 0:
        return positions
    p = np.asarray(probs)[positions]
    if key == "confidence":
        return positions[np.argsort(-p.max(1), kind="stable")]
    if key == "mislabel":
        lab = np.asarray(labels)[positions]
        self_conf = p[np.arange(len(positions)), lab]
        mistaken = np.where(p.argmax(1) != lab, p.max(1), 0.0)
        return positions[np.lexsort((-mistaken, self_conf))]
    if key == "row":
        r = np.asarray(rows)[positions] if rows is not None else positions
        return positions[np.argsort(r, kind="stable")]
    if key == "issue":
        if scores is None:
            raise ValueError("sort key 'issue' needs per-face label-issue scores")
        sc = np.asarray(scores, dtype=np.float64)[positions]
        return positions[np.argsort(np.where(np.isnan(sc), np.inf, -sc), kind="stable")]
    raise ValueError(f"unknown sort key {key!r}; choose one of {', '.join(SORT_KEYS)}")


def page_bounds(n: int, page: int, per_page: int) -> tuple[int, int, int]:
    """``(start, stop, n_pages)`` of 1-based ``page`` (clamped into range) over ``n`` items."""
    per_page = max(1, int(per_page))
    n_pages = max(1, -(-int(n) // per_page))
    page = min(max(1, int(page)), n_pages)
    start = (page - 1) * per_page
    return start, min(start + per_page, int(n)), n_pages


# --------------------------------------------------------------------------- two runs
def difference_matrix(cm_a: np.ndarray, cm_b: np.ndarray) -> np.ndarray:
    """B − A, cell by cell (positive on the diagonal = B gets more of that class right)."""
    a, b = np.asarray(cm_a), np.asarray(cm_b)
    if a.shape != b.shape:
        raise ValueError(f"confusion matrices differ in shape: {a.shape} vs {b.shape}")
    return b.astype(np.int64) - a.astype(np.int64)


def flip_positions(labels: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> dict[str, np.ndarray]:
    """Faces whose correctness flips between run A and run B (same faces, same order).

    ``a_right_b_wrong``: A classified correctly, B did not; ``a_wrong_b_right``: the reverse.
    """
    labels, pred_a, pred_b = np.asarray(labels), np.asarray(pred_a), np.asarray(pred_b)
    if not (len(labels) == len(pred_a) == len(pred_b)):
        raise ValueError("the two runs' predictions cover different numbers of faces")
    ra, rb = pred_a == labels, pred_b == labels
    return {"a_right_b_wrong": np.flatnonzero(ra & ~rb), "a_wrong_b_right": np.flatnonzero(~ra & rb)}


def comparable(cfg_a: Mapping[str, Any], cfg_b: Mapping[str, Any], split: str) -> str | None:
    """``None`` if two runs' ``split`` holds the same faces, else the reason why not.

    The faces are the same when the data spec is the same; the ``val`` split (a seeded slice of
    train for most sources) also needs the same ``val_fraction`` and seed.
    """
    da, db = str(cfg_a.get("data", "")), str(cfg_b.get("data", ""))
    if da != db:
        return f"the runs use different data ({da or '?'} vs {db or '?'})"
    ta, tb = cfg_a.get("train", {}) or {}, cfg_b.get("train", {}) or {}
    if split in ("train", "val"):
        for key, default in (("val_fraction", 0.1), ("seed", 0)):
            va, vb = ta.get(key, default), tb.get(key, default)
            if va != vb:
                return (f"the runs split {da} differently ({key} {va} vs {vb}), so their "
                        f"{split} splits hold different faces")
    return None


def align_rows(stored_rows: np.ndarray, faceset_rows: np.ndarray) -> np.ndarray | None:
    """FaceSet positions of the faces with the given dataset row ids, or None if any is missing.

    Row ids are the join key between a run's stored predictions and a *different* copy or layout
    of the same data (e.g. a run evaluated on an npz of FER2013 Training+PublicTest, browsed with
    the user's full ``fer2013.csv``, whose split positions differ but whose rows do not).
    """
    stored = np.asarray(stored_rows, dtype=np.int64)
    have = np.asarray(faceset_rows, dtype=np.int64)
    if len(have) == 0:
        return None if len(stored) else np.zeros(0, dtype=np.int64)
    order = np.argsort(have, kind="stable")
    at = np.searchsorted(have[order], stored)
    at = np.clip(at, 0, len(have) - 1)
    pos = order[at]
    if not np.array_equal(have[pos], stored):
        return None
    return pos.astype(np.int64)


# --------------------------------------------------------------------------- configs / curves
def flatten_config(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> ``{"train.lr": 0.001, ...}``; lists become their string form."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten_config(v, name + "."))
        elif isinstance(v, (list, tuple, Mapping)):
            out[name] = str(list(v) if not isinstance(v, Mapping) else dict(v))
        else:
            out[name] = v
    return out


def differing_keys(configs: Iterable[Mapping[str, Any]]) -> list[str]:
    """Flattened keys whose value is not the same in every config (a missing key counts as differing)."""
    flats = [flatten_config(c) for c in configs]
    if len(flats) < 2:
        return []
    keys = sorted(set().union(*flats))
    missing = object()
    return [k for k in keys if len({repr(f.get(k, missing)) for f in flats}) > 1]


def ema(values: Sequence[float] | np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard-style exponential moving average with bias correction (weight 0 = raw).

    ``s_t = w·s_{t−1} + (1−w)·x_t``, divided by ``1 − w^t`` so the first points are not pulled
    towards zero. NaNs are skipped (carried over).
    """
    x = np.asarray(values, dtype=np.float64)
    if weight <= 0 or len(x) == 0:
        return x.copy()
    if not 0 <= weight < 1:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    out = np.empty_like(x)
    s, t = 0.0, 0
    for i, v in enumerate(x):
        if np.isfinite(v):
            t += 1
            s = weight * s + (1 - weight) * v
        out[i] = s / (1 - weight**t) if t else np.nan
    return out


# --------------------------------------------------------------------------- display
def upscale(faces: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscale of ``N×H×W`` (or ``H×W``) uint8 faces by an integer ``factor``.

    Done once on the server so the browser shows crisp pixels instead of blurring 48×48 images.
    """
    a = np.asarray(faces)
    if factor <= 1:
        return a
    return a.repeat(factor, axis=-2).repeat(factor, axis=-1)


def top_probs(probs: np.ndarray, classes: Sequence[str], k: int = 3) -> list[tuple[str, float]]:
    """The ``k`` most probable classes of one probability vector, best first."""
    p = np.asarray(probs)
    idx = np.argsort(-p, kind="stable")[:k]
    return [(classes[i], float(p[i])) for i in idx]
