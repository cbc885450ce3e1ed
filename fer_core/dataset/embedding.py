"""A 2-D map of what a run's model sees: penultimate features laid out with UMAP, cached in the run.

Why UMAP (``umap-learn``): the issue asks for it when it installs and runs with our pins, and it
does (umap-learn 0.5.12 with numba, on our numpy and torch). Compared with t-SNE it keeps more of
the global arrangement (which expression clusters neighbour which) while still separating local
groups, and it is reproducible: ``UMAP(n_components=2, random_state=seed, n_jobs=1)`` gives the
same map for the same features. The features are first reduced by PCA to at most 50 dimensions
(the usual practice: faster neighbour search, less noise). UMAP needs neighbours, so a handful of
faces (fewer than :data:`UMAP_MIN_N`) is laid out by PCA alone; ``method="tsne"`` (scikit-learn)
and ``"pca"`` are there to compare.

Why a cache file per run and split (``eval/<split>_embedding.npz``): the features take one pass
of the model over the split and the layout a numba-compiled optimisation, too slow for every
page view. The file holds the map, the features (label-issue k-fold reuses them) and a JSON meta
record; it is reused only when the meta matches -- format version, the checkpoint file's version
(``loaded.key``: which checkpoint, its mtime), the data key the caller passes (file version and
split identity) and the number of faces -- and is otherwise recomputed and rewritten atomically.
It is plain ``np.savez`` (strings as unicode arrays) read with ``allow_pickle=False``. A read-only
run folder just means the map is recomputed in memory.

Why probabilities as a fallback: a run with no hookable torch module (TorchScript, an ONNX graph
onnx2torch cannot convert, no linear layer) still has class probabilities, and a map of those
still groups faces the model confuses; ``Embedding.source`` says which it is and why.
Predictions-only runs have no model at all: :func:`probability_embedding` maps their stored
probabilities.

API: :class:`Embedding`, :func:`layout`, :func:`embedding_path`, :func:`load_or_compute_embedding`,
:func:`probability_embedding`, :func:`read_embedding`.
"""

from __future__ import annotations

import hashlib
import json
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fer_core.checkpoint import atomic_write_bytes
from fer_core.dataset.features import feature_layers_of, feature_reason, penultimate_features

__all__ = ["METHODS", "UMAP_MIN_N", "VERSION", "Embedding", "embedding_path", "layout",
           "load_or_compute_embedding", "probability_embedding", "read_embedding"]

VERSION = 1            # of the cache file's layout and of the layout settings below
METHODS = ("auto", "umap", "tsne", "pca")
UMAP_MIN_N = 10        # fewer faces than this: PCA (UMAP needs a neighbourhood per face)
PCA_DIMS = 50          # PCA before UMAP / t-SNE
UMAP_NEIGHBORS = 15    # umap-learn's default
FEATURE_SHARE = 0.8    # progress: the share of the bar the feature pass takes

Progress = Callable[[float, str], None]


@dataclass
class Embedding:
    """A split's map: ``xy`` N×2 and ``features`` N×D (float32), row i = the split's face i.

    ``method``: ``"umap"``, ``"tsne"`` or ``"pca"``; ``source``: one line saying what was mapped
    (``"penultimate layer 'classifier.fc2' (256-d)"`` or ``"class probabilities (why: …)"``);
    ``key``: identity of the map (run, split, checkpoint version, data key, N, format version),
    for callers' caches.
    """

    xy: np.ndarray
    features: np.ndarray
    method: str
    source: str
    split: str
    key: tuple

    def __len__(self) -> int:
        return len(self.xy)


# ----------------------------------------------------------------------------- layout
def _pca(f: np.ndarray, k: int, seed: int) -> np.ndarray:
    """PCA to ``k`` columns (zero-padded when the data has fewer dimensions or faces)."""
    from sklearn.decomposition import PCA

    n, d = f.shape
    out = np.zeros((n, k), np.float32)
    kk = min(k, n - 1, d)  # n - 1: the centred data has at most n - 1 directions
    if kk >= 1:
        out[:, :kk] = PCA(n_components=kk, svd_solver="full", random_state=seed).fit_transform(f)
    return out


def layout(features: Any, *, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D positions (N×2 float32) of feature rows, and the method used.

    ``"auto"`` = UMAP (after PCA to ≤50 dims when D>50), PCA when N < :data:`UMAP_MIN_N`.
    Deterministic given ``seed``. Constant features (or N<2) give all-zero positions.
    """
    if method not in METHODS:
        raise ValueError(f"layout method must be one of {', '.join(METHODS)}, not {method!r}")
    f = np.asarray(features, dtype=np.float32)
    n = len(f)
    f = np.nan_to_num(f.reshape(n, -1), nan=0.0, posinf=0.0, neginf=0.0)
    if method == "auto":
        method = "umap" if n >= UMAP_MIN_N else "pca"
    if method != "pca" and n < UMAP_MIN_N:
        raise ValueError(f"{method} needs at least {UMAP_MIN_N} faces, got {n} (use pca)")
    if n < 2 or not np.ptp(f, axis=0).any():
        return np.zeros((n, 2), np.float32), method
    from threadpoolctl import threadpool_limits

    # one BLAS thread: threaded OpenBLAS beside torch's threads on a few cores mostly spins
    with threadpool_limits(1, user_api="blas"):
        return _layout(f, method, seed), method


def _layout(f: np.ndarray, method: str, seed: int) -> np.ndarray:
    n = len(f)
    if method == "pca":
        return _pca(f, 2, seed)
    reduced = _pca(f, PCA_DIMS, seed) if f.shape[1] > PCA_DIMS else f
    if method == "umap":
        import umap  # heavy (numba): imported only when a map is drawn

        with warnings.catch_warnings():
            # "n_jobs overridden by random_state" and graph-connectivity notes: expected here
            warnings.simplefilter("ignore", UserWarning)
            xy = umap.UMAP(n_components=2, n_neighbors=min(UMAP_NEIGHBORS, n - 1), random_state=seed,
                           n_jobs=1).fit_transform(reduced)
    else:
        from sklearn.manifold import TSNE

        xy = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3.0), init="pca",
                  random_state=seed).fit_transform(reduced)
    return np.ascontiguousarray(xy, dtype=np.float32)


# ----------------------------------------------------------------------------- cache
def embedding_path(run: str | Path, split: str) -> Path:
    """``<run>/eval/<split>_embedding.npz``."""
    return Path(run) / "eval" / f"{split}_embedding.npz"


def read_embedding(path: Path, meta: dict[str, Any], *, split: str, key: tuple) -> Embedding | None:
    """The cached map at ``path`` when its meta equals ``meta``; None when absent, stale or unreadable
    (a damaged cache is recomputed, never an error)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if json.loads(str(z["meta"])) != meta:
                return None
            xy, feats = np.asarray(z["xy"], np.float32), np.asarray(z["features"], np.float32)
            method, source = str(z["method"]), str(z["source"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if xy.shape != (meta["n"], 2) or len(feats) != meta["n"]:
        return None
    return Embedding(xy=xy, features=feats, method=method, source=source, split=split, key=key)


def _write(path: Path, meta: dict[str, Any], emb: Embedding) -> None:
    arrays = {"xy": emb.xy, "features": emb.features, "method": np.array(emb.method),
              "source": np.array(emb.source), "meta": np.array(json.dumps(meta, sort_keys=True))}
    try:
        atomic_write_bytes(path, lambda f: np.savez(f, **arrays))
    except OSError:
        pass  # a read-only run folder: the map stays in memory for this caller


def _cached(run: Path, split: str, meta: dict[str, Any], compute: Callable[[Progress], tuple[np.ndarray, str]],
            progress: Progress | None) -> Embedding:
    """Reuse the cache when its meta matches, else ``compute(say) -> (features, source)``, lay it
    out and write the cache."""
    say: Progress = progress or (lambda _f, _t: None)
    path = embedding_path(run, split)
    key = (str(Path(run).resolve()), split, json.dumps(meta, sort_keys=True))
    hit = read_embedding(path, meta, split=split, key=key)
    if hit is not None:
        say(1.0, f"map loaded from eval/{path.name}")
        return hit
    feats, source = compute(say)
    n = len(feats)
    say(FEATURE_SHARE, f"{'UMAP' if n >= UMAP_MIN_N else 'PCA'} layout of {n} faces "
                       "(the first map in a session also compiles UMAP)")
    xy, method = layout(feats, seed=0)
    emb = Embedding(xy=xy, features=np.asarray(feats, np.float32), method=method, source=source, split=split,
                    key=key)
    _write(path, meta, emb)
    say(1.0, "map ready")
    return emb


def _source_line(names: list[str], dim: int) -> str:
    if len(names) == 1:
        return f"penultimate layer '{names[0]}' ({dim}-d)"
    return f"penultimate layers {', '.join(repr(n) for n in names)} ({dim}-d, concatenated per member)"


def load_or_compute_embedding(loaded: Any, faces_u8: Any, *, split: str, data_key: str,
                              progress: Progress | None = None) -> Embedding:
    """The map of ``faces_u8`` (the split's faces in prediction order) for ``loaded``'s model.

    Cached in ``eval/<split>_embedding.npz`` of the run (see the module docstring for when it is
    reused). Features are the penultimate layer's input, or the model's class probabilities when
    :func:`~fer_core.dataset.features.feature_reason` gives a reason (then ``source`` says it).
    ``progress(fraction, text)`` is called through the feature pass and the layout. Raises
    :class:`~fer_core.model.ModelUnavailable` only when the run gives neither features nor
    probabilities.
    """
    faces = np.asarray(getattr(faces_u8, "x", faces_u8), dtype=np.uint8)  # a FaceBatch is fine too
    n = len(faces)
    reason = feature_reason(loaded)
    meta = {"version": VERSION, "checkpoint": [str(v) for v in tuple(loaded.key)[1:]],
            "data_key": str(data_key), "n": n, "features": "penultimate" if reason is None else "probs"}

    def compute(say: Progress) -> tuple[np.ndarray, str]:
        if reason is None:
            feats = penultimate_features(
                loaded, faces, progress=lambda d, t: say(FEATURE_SHARE * d / max(t, 1), f"features: {d}/{t} faces"))
            return feats, _source_line(feature_layers_of(loaded), feats.shape[1])
        say(0.0, f"class probabilities of {n} faces")
        probs = loaded.probs(faces) if n else np.empty((0, len(loaded.classes)), np.float32)
        return probs, f"class probabilities (why: {reason})"

    return _cached(Path(loaded.run), split, meta, compute, progress)


def probability_embedding(run: str | Path, probs: Any, *, split: str, data_key: str, reason: str,
                          progress: Progress | None = None) -> Embedding:
    """The map of a run that has no model (predictions only): its stored class probabilities,
    cached like :func:`load_or_compute_embedding` (keyed by a digest of the probabilities)."""
    p = np.ascontiguousarray(probs, dtype=np.float32)
    meta = {"version": VERSION, "probs_sha1": hashlib.sha1(p.tobytes()).hexdigest(),
            "data_key": str(data_key), "n": len(p), "features": "probs"}
    return _cached(Path(run), split, meta, lambda _say: (p, f"class probabilities (why: {reason})"), progress)
