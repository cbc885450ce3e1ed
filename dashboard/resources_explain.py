"""The Explain and Filters pages' cached resources (to be folded into ``dashboard/resources.py``).

Why a separate model instance for explanations: attribution and feature visualisation register
hooks on the model while they run (Captum's Grad-CAM / Guided Backprop, our capture hooks) and
switch it to eval mode. The model cached by ``resources.run_model`` is shared with every page and
session (and the Live page's frame threads); a hook fired by another thread's forward pass would
corrupt both results. So explanations get their own :class:`ExplainModel` per checkpoint file --
``st.cache_resource`` keyed by run path + which checkpoint + the checkpoint's mtime, like every
model in the dashboard -- with a lock that serialises the explanation calls on it.

Everything else here is ``st.cache_data`` keyed by plain values: run path + checkpoint mtime, the
method and its options, and a *faces key* naming which faces were passed (data spec + split +
positions, or a hash of uploaded bytes). The faces themselves (and other arrays) are passed as
``_underscored`` arguments, which Streamlit does not hash: hashing a page of faces is cheap, but
hashing a whole split on every rerun is not, and the key already identifies them.

Self-contained on purpose (no import from ``dashboard.resources``) so it can be pasted into that
module as is. Nothing here renders anything.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st
import torch

from fer_core.checkpoint import CheckpointError
from fer_core.runs import LoadedModel, checkpoint_file, load_model


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
