"""Predictions made elsewhere (a CSV) -> a run's ``eval/<split>.{npz,json}``: the Errors page with no model.

The CSV has one row per face: ``row`` (the FER2013 row id) or ``index``, the true ``label`` (a class
name or index; taken from ``--data`` by row id when absent), and either one probability column per
class (named as the classes) or a ``pred`` column (name or index; shown as probability 1).
Parsed with pandas; a fault names the file, the line and what is wrong.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fer_core.checkpoint import atomic_write_bytes, atomic_write_text
from fer_core.foreign.adapter import canonical_class
from fer_core.runs import eval_path


def _class_index(values: pd.Series, classes: list[str], what: str, path: Path) -> np.ndarray:
    canon = [canonical_class(c) for c in classes]
    out = np.empty(len(values), np.int64)
    for i, v in enumerate(values.tolist()):
        s = str(v).strip()
        if s.lstrip("-").isdigit() and 0 <= int(s) < len(classes):
            out[i] = int(s)
        elif canonical_class(s) in canon:
            out[i] = canon.index(canonical_class(s))
        else:
            raise ValueError(f"{path}, line {i + 2}: {what} {s!r} is not one of {', '.join(classes)} "
                             f"(or 0–{len(classes) - 1})")
    return out


def import_predictions(path: Path, run: Path, config: dict[str, Any], *, split: str = "test") -> str:
    """Write ``eval/<split>.*`` of ``run`` from ``path``; returns a one-line note of what was read."""
    from fer_core.evaluate import compute_metrics

    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise ValueError(f"{path} is not a readable CSV ({exc})") from None
    df.columns = [str(c).strip() for c in df.columns]
    classes = list(config["classes"])
    canon_cols = {canonical_class(c): c for c in df.columns}
    prob_cols = [canon_cols.get(canonical_class(c)) for c in classes]
    id_col = "row" if "row" in df.columns else ("index" if "index" in df.columns else None)
    if id_col is None:
        raise ValueError(f"{path} needs a 'row' (dataset row id) or 'index' column")
    ids = pd.to_numeric(df[id_col], errors="coerce")
    if ids.isna().any():
        raise ValueError(f"{path}, line {int(np.flatnonzero(ids.isna())[0]) + 2}: {id_col} is not a number")
    rows = ids.to_numpy().astype(np.int64)
    if all(c is not None for c in prob_cols):
        probs = df[prob_cols].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(probs).all(1)
        if bad.any():
            raise ValueError(f"{path}, line {int(np.flatnonzero(bad)[0]) + 2}: a probability is not a number")
        s = probs.sum(1, keepdims=True)
        probs = np.divide(probs, s, out=np.full_like(probs, 1.0 / len(classes)), where=s > 0)
        what = "probabilities"
    elif "pred" in df.columns:
        pred = _class_index(df["pred"], classes, "pred", path)
        probs = np.eye(len(classes))[pred]
        what = "predicted classes"
    else:
        raise ValueError(f"{path} needs one probability column per class ({', '.join(classes)}) or a 'pred' column")
    index = rows.copy()
    if "label" in df.columns:
        labels = _class_index(df["label"], classes, "label", path)
    else:
        labels, index = _labels_from_data(config, rows, split, path)
    arrays = {"index": index, "row": rows, "label": labels, "probs": probs.astype(np.float32),
              "pred": probs.argmax(1).astype(np.int64)}
    result = compute_metrics(labels, arrays["probs"], classes)
    result.update({"split": split, "data": config.get("data", ""), "tta": "none", "checkpoint": path.name, "epoch": 0})
    atomic_write_text(eval_path(run, split, ".json"), json.dumps(result, indent=1) + "\n")
    atomic_write_bytes(eval_path(run, split, ".npz"), lambda f: np.savez_compressed(f, **arrays))
    return f"predictions: {len(rows)} faces ({what}) as the {split} split, accuracy {result['accuracy']:.4f}"


def _labels_from_data(config: dict[str, Any], rows: np.ndarray, split: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    from fer_core.gallery import align_rows
    from fer_core.rundata import DataUnavailable, open_faces, resolve_data

    spec = config.get("data")
    if not spec:
        raise ValueError(f"{path} has no 'label' column: give the true labels, or --data SPEC to read them by row id")
    try:
        faces = open_faces(resolve_data(config, ""))
    except DataUnavailable as exc:
        raise ValueError(f"cannot read the labels of {path} from --data: {exc}") from None
    pos = align_rows(rows, faces.row)
    if pos is None:
        raise ValueError(f"{path}: some row ids are not in {spec}")
    return faces.y.numpy()[pos].astype(np.int64), pos.astype(np.int64)
