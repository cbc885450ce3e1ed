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
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import streamlit as st
import torch

from fer_core.checkpoint import CheckpointError
from fer_core.gallery import align_rows
from fer_core.labels import EMOTIONS
from fer_core.predictor import Predictor
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


# --------------------------------------------------------------------------- explanations
# Explain and Filters pages. Why a separate model instance for explanations: attribution and
# feature visualisation register hooks on the model while they run and switch it to eval mode;
# the model cached by ``run_model`` is shared with every page, session and the Live page's frame
# threads, so explanations get their own instance per checkpoint file, with a lock.

def _ckpt_mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime_ns / 1e9
    except OSError:
        return 0.0



@dataclass
class ExplainModel:
    """A run's model reserved for explanations, with the lock every call on it must hold."""

    loaded: LoadedModel
    lock: Any
    stamp: float

    @property
    def model(self) -> torch.nn.Module:
        return self.loaded.model

    @property
    def preprocess(self) -> Any:
        return self.loaded.preprocess


@st.cache_resource(show_spinner="Loading model for explanations…", max_entries=4)
def _explain_model(path: str, which: str, stamp: float) -> ExplainModel:
    return ExplainModel(load_model(path, which=which), threading.RLock(), stamp)


def explain_model(run: str | Path, which: str = "best") -> ExplainModel:
    """The run's explanation model (loaded once per checkpoint file version); raises
    CheckpointError / RunError with a readable message."""
    ckpt = checkpoint_file(Path(run), which)
    if not ckpt.exists():
        raise CheckpointError(f"checkpoint not found: {ckpt}")
    return _explain_model(str(run), which, _ckpt_mtime(ckpt))


def _em(run: str, stamp: float) -> ExplainModel:
    """The explanation model inside a cached function (``stamp`` is only part of the cache key)."""
    return explain_model(run)


def _x(em: ExplainModel, faces_u8: Any) -> torch.Tensor:
    return em.preprocess(torch.as_tensor(np.asarray(faces_u8, dtype=np.uint8)))


# --------------------------------------------------------------------------- attribution
@st.cache_data(show_spinner=False, max_entries=16)
def explain_layers(run: str, stamp: float) -> list[Any]:
    """Grad-CAM layer table (name, kind, channels, map size, coarse flag, note)."""
    from fer_core.explain.attribution import layer_table

    em = _em(run, stamp)
    with em.lock:
        return layer_table(em.model, input_size=int(em.preprocess.size))


@st.cache_data(show_spinner=False, max_entries=64)
def explain_notes(run: str, stamp: float, method: str, layer: str | None) -> list[str]:
    from fer_core.explain.attribution import method_notes

    em = _em(run, stamp)
    with em.lock:
        return method_notes(em.model, method, **({"layer": layer} if layer else {}))


@st.cache_data(show_spinner=False, max_entries=16)
def explain_probs(run: str, stamp: float, faces_key: str, _faces_u8: Any) -> np.ndarray:
    """Class probabilities of faces that have no stored predictions (uploads)."""
    from fer_core.evaluate import predict_probs

    em = _em(run, stamp)
    with em.lock:
        return predict_probs(em.model, torch.as_tensor(np.asarray(_faces_u8, dtype=np.uint8)), em.preprocess)


@st.cache_data(show_spinner=False, max_entries=8)
def explain_mean_face(data_key: str, _faceset: Any) -> np.ndarray:
    """Mean training face in [0,1] pixels (the Integrated Gradients / Occlusion "mean" baseline)
    of a FaceSet (all its faces when it has no train split); ``data_key`` names the data."""
    x = _faceset.x[torch.from_numpy(np.flatnonzero(_faceset.split == "train"))] \
        if "train" in _faceset.splits else _faceset.x
    return (x.float().mean(0) / 255.0).numpy()


def _opts(opts_items: tuple, mean_face: Any) -> dict[str, Any]:
    opts = dict(opts_items)
    opts.pop("mean_face_of", None)  # cache-key only: names the data the mean face came from
    if mean_face is not None and opts.get("baseline") == "mean":
        opts["mean_face"] = mean_face
    return opts


@st.cache_data(show_spinner="Computing attributions…", max_entries=32)
def explain_maps(run: str, stamp: float, method: str, opts_items: tuple, faces_key: str,
                 targets: tuple[int, ...], _faces_u8: Any, _mean_face: Any = None) -> np.ndarray:
    """Maps (len(targets)×H×W) of ``method`` for the faces, in ONE batched explain call.

    ``len(targets)`` may be a multiple of the number of faces (contrastive view: the faces are
    repeated, one block of targets per view). ``opts_items`` = sorted (name, value) pairs; a
    "mean" baseline uses ``_mean_face`` (its identity is part of ``faces_key``/``opts_items``).
    """
    from fer_core.explain.attribution import explain

    em = _em(run, stamp)
    x = _x(em, _faces_u8)
    reps = len(targets) // max(len(x), 1)
    if reps > 1:
        x = x.repeat(reps, 1, 1, 1)
    with em.lock:
        return explain(em.model, x, list(targets), method, preprocess=em.preprocess,
                       **_opts(opts_items, _mean_face))


@st.cache_data(show_spinner="Randomising the model and recomputing…", max_entries=16)
def explain_sanity(run: str, stamp: float, method: str, opts_items: tuple, faces_key: str,
                   targets: tuple[int, ...], n_layers: int, seed: int, _faces_u8: Any,
                   _mean_face: Any = None) -> dict[str, Any]:
    """Model-randomisation check: maps of a copy with the top ``n_layers`` re-initialised and
    their Spearman similarity to the original maps (per face)."""
    from fer_core.explain.attribution import sanity_check

    em = _em(run, stamp)
    with em.lock:
        r = sanity_check(em.model, _x(em, _faces_u8), list(targets), method, n_layers=n_layers, seed=seed,
                         preprocess=em.preprocess, **_opts(opts_items, _mean_face))
    return {"layers": r.layers, "original": r.original, "randomized": r.randomized,
            "similarity": r.similarity, "mean": r.mean_similarity}


@st.cache_data(show_spinner="Randomising layer by layer…", max_entries=8)
def explain_cascade(run: str, stamp: float, method: str, opts_items: tuple, faces_key: str,
                    targets: tuple[int, ...], seed: int, _faces_u8: Any,
                    _mean_face: Any = None) -> list[tuple[int, str, float]]:
    from fer_core.explain.attribution import cascading_randomization

    em = _em(run, stamp)
    with em.lock:
        return cascading_randomization(em.model, _x(em, _faces_u8), list(targets), method, seed=seed,
                                       preprocess=em.preprocess, **_opts(opts_items, _mean_face))


@st.cache_data(show_spinner="Averaging maps per confusion cell…", max_entries=16)
def explain_cell_maps(run: str, stamp: float, method: str, opts_items: tuple, data_key: str,
                      cells: tuple[tuple[int, int], ...], target: str, max_per_cell: int,
                      _faces_u8: Any, _index: Any, _labels: Any, _preds: Any,
                      _mean_face: Any = None) -> list[Any]:
    """Mean map + mean face per confusion cell. ``_faces_u8[_index]``, ``_labels`` and ``_preds``
    are aligned (a prediction bundle's split); ``data_key`` names them."""
    from fer_core.explain.attribution import cell_mean_maps

    em = _em(run, stamp)
    faces = torch.as_tensor(np.asarray(_faces_u8, dtype=np.uint8))[torch.as_tensor(np.asarray(_index))]
    with em.lock:
        return cell_mean_maps(em.model, faces, em.preprocess,
                              _labels, _preds, method, cells=list(cells), target=target,
                              max_per_cell=max_per_cell, **_opts(opts_items, _mean_face))


# --------------------------------------------------------------------------- feature visualisation
@st.cache_data(show_spinner=False, max_entries=16)
def featviz_layers(run: str, stamp: float) -> list[Any]:
    from fer_core.explain.featviz import feature_layer_table

    em = _em(run, stamp)
    with em.lock:
        return feature_layer_table(em.model, input_size=int(em.preprocess.size))


@st.cache_data(show_spinner="Optimising filter images (all filters in one batch)…", max_entries=16)
def featviz_images(run: str, stamp: float, layer: str, mode: str, filters: tuple[int, ...], steps: int,
                   lr: float, seed: int) -> Any:
    from fer_core.explain.featviz import visualize_filters

    em = _em(run, stamp)
    with em.lock:
        return visualize_filters(em.model, layer, filters=list(filters), mode=mode, steps=steps, lr=lr,
                                 seed=seed, preprocess=em.preprocess, size=int(em.preprocess.size))


@st.cache_data(show_spinner=False, max_entries=32)
def featviz_activations(run: str, stamp: float, layer: str, faces_key: str, _face_u8: Any) -> np.ndarray:
    """The layer's output maps (C×h×w) for one face."""
    from fer_core.explain.featviz import filter_activations

    em = _em(run, stamp)
    with em.lock:
        return filter_activations(em.model, layer, _x(em, np.asarray(_face_u8)[None])[0])


@st.cache_data(show_spinner=False, max_entries=16)
def featviz_weights(run: str, stamp: float, layer: str) -> np.ndarray | None:
    from fer_core.explain.featviz import filter_weights

    return filter_weights(_em(run, stamp).model, layer)


@st.cache_data(show_spinner="Scanning the faces for each filter's strongest responses…", max_entries=16)
def featviz_top_faces(run: str, stamp: float, layer: str, filters: tuple[int, ...], k: int, data_key: str,
                      _faces_u8: Any) -> Any:
    from fer_core.explain.featviz import top_activating

    em = _em(run, stamp)
    with em.lock:
        return top_activating(em.model, layer, torch.as_tensor(np.asarray(_faces_u8, dtype=np.uint8)),
                              em.preprocess, filters=list(filters), k=k)


# --------------------------------------------------------------------------- live
# One thread-safe Predictor per checkpoint file version serves every session and frame thread.

@st.cache_resource(show_spinner="Loading model…", max_entries=4)
def _live_predictor(path: str, which: str, stamp: float) -> Predictor:
    return Predictor(path, which=which)


def live_predictor(run: str | Path, which: str = "best") -> Predictor:
    """The run's shared :class:`Predictor` (loaded once per checkpoint file version)."""
    ckpt = checkpoint_file(Path(run), which)
    if not ckpt.exists():
        raise CheckpointError(f"checkpoint not found: {ckpt}")
    return _live_predictor(str(run), which, _ckpt_mtime(ckpt))
