"""Everything the dashboard caches, and the only module that uses ``st.cache_resource``/``st.cache_data``.

Why one module: caching decides what is recomputed when a widget changes, so it is kept in one
place where the keys can be read at a glance. The rules:

* models (``st.cache_resource``) are keyed by checkpoint path + mtime, so a retrained or replaced
  checkpoint is reloaded and an unchanged one never is;
* face sets (``st.cache_resource``: tens of MB that must not be copied on every rerun) are keyed
  by data spec + split parameters + the data file's mtime;
* predictions, metrics and tables (``st.cache_data``) are keyed by the files they come from plus
  their mtimes. Changing a gallery's sort or page therefore hits only caches.

Nothing here renders anything; functions return plain values or raise, and the pages turn
failures into messages.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import streamlit as st

from fer_core.checkpoint import CheckpointError
from fer_core.gallery import align_rows
from fer_core.labels import EMOTIONS
from fer_core.runs import (PROJECT_ROOT, LoadedModel, RunError, RunInfo, checkpoint_file, eval_path,
                           list_runs, load_model, read_eval, read_metrics, read_predictions, run_roots)

SHIPPED_ROOT: Path = (PROJECT_ROOT / "checkpoints").resolve()
DATA_ENV = "FER_DATA"


class DataUnavailable(RuntimeError):
    """The faces (or predictions) of a run cannot be produced on this machine; message says why."""


# --------------------------------------------------------------------------- runs
def dashboard_roots() -> list[Path]:
    """Run roots the dashboard lists.

    ``FER_RUNS_ONLY=1`` restricts them to the ``FER_RUNS`` folders (tests, demos) so the shipped
    ``checkpoints/`` and the user's ``runs/`` do not leak in.
    """
    if os.environ.get("FER_RUNS_ONLY", "").strip() not in ("", "0"):
        return [Path(p).resolve() for p in os.environ.get("FER_RUNS", "").split(os.pathsep) if p.strip()]
    return run_roots()


@st.cache_data(ttl=2.0, show_spinner=False, max_entries=8)
def _list_runs(roots: tuple[str, ...]) -> list[RunInfo]:
    return list_runs([Path(r) for r in roots])


def discover_runs() -> list[RunInfo]:
    """Every run under the dashboard roots (broken ones carry ``error``); re-listed every 2 s."""
    return _list_runs(tuple(str(r) for r in dashboard_roots()))


def is_shipped(info: RunInfo) -> bool:
    return info.path.resolve().parent == SHIPPED_ROOT


def clear_caches() -> None:
    """Forget every cached listing, table, prediction and model (the sidebar's reload button)."""
    st.cache_data.clear()
    st.cache_resource.clear()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime_ns / 1e9
    except OSError:
        return 0.0


@st.cache_data(show_spinner=False, max_entries=64)
def _metrics(path: str, stamp: float) -> pd.DataFrame:
    return read_metrics(path)


def run_metrics(run: Path) -> pd.DataFrame:
    """metrics.csv (cached until the file changes); raises RunError when corrupt."""
    return _metrics(str(run), _mtime(Path(run) / "metrics.csv"))


@st.cache_data(show_spinner=False, max_entries=64)
def _eval(path: str, split: str, stamp: float) -> dict[str, Any] | None:
    return read_eval(path, split)


def run_eval(run: Path, split: str) -> dict[str, Any] | None:
    """eval/<split>.json or None; raises RunError when it is corrupt."""
    return _eval(str(run), split, _mtime(eval_path(run, split)))


def classes_of(config: dict[str, Any]) -> tuple[str, ...]:
    return tuple(config.get("classes") or EMOTIONS)


# --------------------------------------------------------------------------- models
@st.cache_resource(show_spinner="Loading model…", max_entries=4)
def _model(path: str, which: str, stamp: float) -> LoadedModel:
    return load_model(path, which=which)


def run_model(run: Path, which: str = "best") -> LoadedModel:
    """The run's model in eval mode, loaded once per checkpoint file version. Shared, read-only."""
    ckpt = checkpoint_file(run, which)
    if not ckpt.exists():
        raise CheckpointError(f"checkpoint not found: {ckpt}")
    return _model(str(run), which, _mtime(ckpt))


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class DataChoice:
    """Where a run's faces come from on this machine: a spec to open, or why there is none."""

    spec: str | None
    synthetic: bool
    val_fraction: float
    seed: int
    note: str | None = None      # e.g. "using your copy at …" or why the data is missing
    ferplus: str | None = None   # the run's FER+ votes file, when it is on this machine


def resolve_data(config: dict[str, Any], user_path: str = "") -> DataChoice:
    """The run's own data spec if it can be opened here, else the user's FER2013 path, else a reason.

    SynthFER specs regenerate anywhere. A file spec is tried as written (and relative to the
    project); if it is absent, ``user_path`` (the sidebar field, default ``$FER_DATA``) replaces
    the path part and keeps any ``:split=`` option.
    """
    from fer_core.data.sources import parse_spec

    spec = str(config.get("data", "") or "")
    train = config.get("train", {}) or {}
    vf, seed = float(train.get("val_fraction", 0.1)), int(train.get("seed", config.get("seed", 0)))
    fp = train.get("ferplus")
    ferplus = str(Path(fp).expanduser()) if fp and Path(fp).expanduser().is_file() else None
    if not spec:
        return DataChoice(None, False, vf, seed, "the run's config.json names no data spec")
    try:
        name, opts = parse_spec(spec)
    except Exception as exc:  # DataError (a ValueError) with a readable message
        return DataChoice(None, False, vf, seed, f"the run's data spec {spec!r} is invalid: {exc}")
    if name == "synthetic":
        return DataChoice(spec, True, vf, seed)
    tail = spec[len(name):]  # ":split=..." or ""
    for cand in (Path(name).expanduser(), PROJECT_ROOT / name):
        if cand.exists():
            return DataChoice(str(cand) + tail, False, vf, seed, ferplus=ferplus)
    user = (user_path or "").strip()
    if user:
        up = Path(user).expanduser()
        if up.exists():
            return DataChoice(str(up) + tail, False, vf, seed,
                              f"the run was trained on {name}, which is not on this machine; "
                              f"using your copy at {up} (faces matched by dataset row id)",
                              ferplus=ferplus)
        return DataChoice(None, False, vf, seed,
                          f"the run's data {name} is not on this machine, and the FER2013 data "
                          f"path in the sidebar ({user}) does not exist either")
    return DataChoice(None, False, vf, seed,
                      f"the run's data {name} is not on this machine. Enter the path to your copy "
                      "of FER2013 (fer2013.csv or its folder) in the sidebar field "
                      "“FER2013 data path” (or set FER_DATA) to see its faces")


def _data_stamp(spec: str) -> float:
    if spec.startswith("synthetic"):
        return 0.0
    p = Path(spec.split(":split=")[0])
    if p.is_dir():
        return max([_mtime(p)] + [_mtime(c) for c in p.iterdir()])
    return _mtime(p)


@st.cache_resource(show_spinner="Loading faces…", max_entries=3)
def _faces(spec: str, val_fraction: float, seed: int, ferplus: str | None, stamp: float) -> Any:
    from fer_core.data.sources import open_dataset

    return open_dataset(spec, val_fraction=val_fraction, seed=seed, ferplus=ferplus)


def faces_for(data: DataChoice) -> Any:
    """The FaceSet for a resolved data choice (shared, read-only); raises DataUnavailable."""
    if data.spec is None:
        raise DataUnavailable(data.note or "no data")
    try:
        return _faces(data.spec, data.val_fraction, data.seed, data.ferplus, _data_stamp(data.spec))
    except (ValueError, OSError) as exc:  # DataError is a ValueError with file/line in its text
        raise DataUnavailable(f"could not open {data.spec}: {exc}") from None


def aligned_faces(bundle: dict[str, Any],
                  data: DataChoice) -> tuple[Any | None, np.ndarray | None, str | None]:
    """The FaceSet for a bundle and each prediction's position in it, or a message why not.

    The stored ``index`` is used when it still points at the same rows with the same labels;
    otherwise faces are matched by dataset row id (another copy/layout of the same data). Labels
    must agree either way, so a different data set is refused rather than shown as wrong faces.
    """
    try:
        faces = faces_for(data)
    except DataUnavailable as exc:
        return None, None, str(exc)
    idx = np.asarray(bundle["index"], dtype=np.int64)
    y = faces.y.numpy()
    if len(idx) == 0 or (idx.min() >= 0 and idx.max() < len(faces)
                         and np.array_equal(faces.row[idx], bundle["row"])
                         and np.array_equal(y[idx], bundle["label"])):
        return faces, idx, None
    pos = align_rows(bundle["row"], faces.row)
    if pos is None:
        return None, None, (f"the data at {data.spec} does not contain the rows this run was evaluated "
                            "on, so it is not the same data")
    bad = int((y[pos] != bundle["label"]).sum())
    if bad:
        return None, None, (f"the data at {data.spec} does not match the stored predictions ({bad} of "
                            f"{len(pos)} labels differ), so its faces would be the wrong ones")
    return faces, pos, None


# --------------------------------------------------------------------------- predictions
def _bundle(arrays: dict[str, np.ndarray], classes: tuple[str, ...], source: str) -> dict[str, Any]:
    from fer_core.evaluate import compute_metrics

    b: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
    b["label"] = b["label"].astype(np.int64)
    b["pred"] = b["pred"].astype(np.int64) if "pred" in b else b["probs"].argmax(1).astype(np.int64)
    if "row" not in b:
        b["row"] = b["index"].astype(np.int64)
    b["metrics"] = compute_metrics(b["label"], b["probs"], classes)
    b["cm"] = np.asarray(b["metrics"]["confusion"], dtype=np.int64)
    b["source"] = source
    return b


@st.cache_data(show_spinner=False, max_entries=16)
def _stored_predictions(path: str, split: str, classes: tuple[str, ...], stamp: float) -> dict[str, Any] | None:
    arrays = read_predictions(path, split)
    if arrays is None:
        return None
    return _bundle(arrays, classes, f"stored eval/{split}.npz")


@st.cache_data(show_spinner="Computing predictions (once)…", max_entries=8)
def _computed_predictions(path: str, split: str, spec: str, val_fraction: float, seed: int,
                          ferplus: str | None, classes: tuple[str, ...], ckpt_stamp: float,
                          data_stamp: float) -> dict[str, Any]:
    from fer_core.evaluate import evaluate_run, predict_probs

    data = DataChoice(spec, spec.startswith("synthetic"), val_fraction, seed, ferplus=ferplus)
    faces = faces_for(data)
    run = Path(path)
    own = str(read_config_safe(run).get("data", ""))
    try:
        evaluate_run(run, data=None if spec == own else spec, split=split, faces=faces, write=True)
        arrays = read_predictions(run, split)
        if arrays is not None:
            return _bundle(arrays, classes, f"computed now, saved to eval/{split}.npz")
    except OSError:
        pass  # a read-only run folder: predict in memory instead
    part_idx = np.flatnonzero(faces.split == split)
    if len(part_idx) == 0:
        raise DataUnavailable(f"{spec} has no {split!r} split")
    lm = run_model(run)
    probs = predict_probs(lm.model, faces.x[part_idx], lm.preprocess)
    arrays = {"index": part_idx, "row": faces.row[part_idx], "label": faces.y[part_idx].numpy(),
              "probs": probs, "pred": probs.argmax(1)}
    if faces.ferplus_votes is not None:
        arrays["ferplus_votes"] = faces.ferplus_votes[part_idx]
    return _bundle(arrays, classes, "computed now (in memory; the run folder is read-only)")


def read_config_safe(run: Path) -> dict[str, Any]:
    from fer_core.runs import read_config

    try:
        return read_config(run)
    except RunError:
        return {}


def predictions_for(info: RunInfo, split: str, data: DataChoice, compute: bool = True) -> dict[str, Any]:
    """Per-face predictions of a run on a split, as a bundle of arrays plus metrics.

    From ``eval/<split>.npz`` when present (position = order of the split; ``index`` = FaceSet
    index, ``row`` = dataset row id); otherwise computed once with
    :func:`fer_core.evaluate.evaluate_run` (and saved back into the run). Raises DataUnavailable
    with a readable reason when neither is possible.
    """
    classes = classes_of(info.config)
    npz = eval_path(info.path, split, ".npz")
    if npz.is_file():
        try:
            b = _stored_predictions(str(info.path), split, classes, _mtime(npz))
        except (OSError, ValueError, KeyError) as exc:
            raise DataUnavailable(f"{npz} is unreadable ({exc}); delete it to recompute") from None
        if b is not None:
            return b
    if not compute:
        raise DataUnavailable(f"no stored predictions ({npz.name}) for this run")
    if data.spec is None:
        raise DataUnavailable(f"no stored predictions for the {split} split, and they cannot be "
                              f"computed: {data.note}")
    ckpt = checkpoint_file(info.path)
    if not ckpt.exists():
        raise DataUnavailable(f"no stored predictions for the {split} split, and no checkpoint "
                              "(best.pt / last.pt) to compute them")
    try:
        return _computed_predictions(str(info.path), split, data.spec, data.val_fraction, data.seed,
                                     data.ferplus, classes, _mtime(ckpt), _data_stamp(data.spec))
    except DataUnavailable:
        raise
    except (RunError, CheckpointError, ValueError, OSError, RuntimeError) as exc:
        raise DataUnavailable(f"could not compute predictions: {exc}") from None


def reevaluate(info: RunInfo, split: str, data: DataChoice) -> None:
    """Evaluate the run again on ``data`` and overwrite its eval/<split>.{json,npz}.

    For stored predictions that no longer match the faces (e.g. SynthFER's generator changed since
    the run was evaluated). The caches notice the new file mtime by themselves.
    """
    from fer_core.evaluate import evaluate_run

    faces = faces_for(data)
    own = str(info.config.get("data", ""))
    try:
        evaluate_run(info.path, data=None if data.spec == own else data.spec, split=split,
                     faces=faces, write=True)
    except (RunError, CheckpointError, ValueError, OSError, RuntimeError) as exc:
        raise DataUnavailable(f"could not re-evaluate {info.label}: {exc}") from None


# --------------------------------------------------------------------------- figures
@st.cache_resource(show_spinner=False, max_entries=32)
def _figure(kind: str, key: tuple[Any, ...], _build: Callable[[], Any]) -> Any:
    return _build()


def memo_figure(kind: str, key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
    """A Plotly figure built once per ``(kind, key)`` and shared (read-only) across reruns.

    Building a validated ``go.Figure`` costs ~0.1 s; a confusion matrix only changes when its run,
    split or data do, not when a cell is clicked, so it is built once. ``key`` must capture every
    input of ``build`` (e.g. the matrix bytes and the class names).
    """
    return _figure(kind, key, build)


# --------------------------------------------------------------------------- model page
@st.cache_data(show_spinner=False, max_entries=32)
def layer_rows(name: str) -> list[dict[str, Any]]:
    """The layer table of a registered architecture (built with random weights)."""
    from fer_core.models.summary import summarize

    return [_row_dict(r) for r in summarize(name)]


@st.cache_data(show_spinner=False, max_entries=16)
def _run_layer_rows(path: str, stamp: float) -> list[dict[str, Any]]:
    from fer_core.models.summary import summarize

    lm = run_model(Path(path))
    size = int(lm.preprocess.size)
    return [_row_dict(r) for r in summarize(lm.model, input_size=size)]


def run_layer_rows(run: Path) -> list[dict[str, Any]]:
    return _run_layer_rows(str(run), _mtime(checkpoint_file(run)))


def _row_dict(r: Any) -> dict[str, Any]:
    return {"name": r.name, "type": r.type, "input_shape": r.input_shape, "output_shape": r.output_shape,
            "params": r.params, "predicted_shape": r.predicted_shape, "formula": r.formula, "ok": r.ok}


@st.cache_data(show_spinner=False, max_entries=64)
def batchnorm_check(n: int, d: int, seed: int, spatial: int | None) -> dict[str, float]:
    from fer_core.mathcheck import check_batchnorm

    return check_batchnorm(n=n, d=d, seed=seed, spatial=spatial)


@st.cache_data(show_spinner=False, max_entries=64)
def softmax_check(n: int, c: int, seed: int, scale: float) -> dict[str, float]:
    from fer_core.mathcheck import check_softmax_xent

    return check_softmax_xent(n=n, c=c, seed=seed, scale=scale)
