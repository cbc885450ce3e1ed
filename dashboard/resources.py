"""Every cache of the dashboard, and the only module that uses ``st.cache_resource``/``st.cache_data``.

Why one module: caching decides what is recomputed when a widget changes, so it is kept in one
place where the keys can be read at a glance. Nothing here computes anything itself: each function
is a cache decorator over :mod:`fer_core` (``LoadedRun``, ``RunData``, the run readers). The rules:

* ONE :class:`~fer_core.model.LoadedRun` per checkpoint file version (``st.cache_resource``, keyed
  by run path + checkpoint mtime): every page, session and the Live page's frame threads share it;
  it carries its own lock and its own cache key (``LoadedRun.key``);
* face sets (``st.cache_resource``: tens of MB that must not be copied on every rerun) are keyed by
  the resolved data choice, which includes the data file's version;
* everything derived (predictions, maps, filter images, tables) is ``st.cache_data`` keyed by the
  objects passed in -- a ``LoadedRun``, a ``FaceBatch`` or ``Predictions`` hash by their own
  ``key`` (``HASH_FUNCS``), so no page ever builds a key string.

Nothing here renders anything; functions return plain values or raise, and the pages turn failures
into messages.
"""

from __future__ import annotations

import contextvars
import os
from operator import attrgetter
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import streamlit as st

from fer_core.checkpoint import CheckpointError
from fer_core.model import LoadedRun
from fer_core.rundata import (DATA_ENV, DataChoice, DataUnavailable, FaceBatch, Predictions, RunData,
                              mean_face, open_faces)
from fer_core.runs import (PROJECT_ROOT, RunInfo, checkpoint_file, eval_path, list_runs, read_eval,
                           read_metrics, run_roots)

SHIPPED_ROOT: Path = (PROJECT_ROOT / "checkpoints").resolve()
# The dataset types are named by their qualified name so this module does not import them (and, with
# them, UMAP/cleanlab/scikit-learn) when the dashboard starts; pages that never use them stay fast.
HASH_FUNCS = {LoadedRun: attrgetter("key"), FaceBatch: attrgetter("key"), Predictions: attrgetter("key"),
              DataChoice: attrgetter("key"), "fer_core.dataset.embedding.Embedding": attrgetter("key")}

__all__ = ["DATA_ENV", "DataUnavailable", "FaceBatch", "Predictions", "RunData"]


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


# --------------------------------------------------------------------------- the model
@st.cache_resource(show_spinner="Loading model…", max_entries=6)
def _loaded_run(path: str, which: str, stamp: float) -> LoadedRun:
    return LoadedRun(path, which=which)


def loaded_run(run: str | Path, which: str = "best") -> LoadedRun:
    """The run's one shared :class:`LoadedRun` (loaded once per checkpoint file version);
    raises CheckpointError / RunError / ModelUnavailable with a readable message."""
    ckpt = checkpoint_file(Path(run), which)
    if not ckpt.exists():
        raise CheckpointError(f"no checkpoint ({ckpt.name}) in {run}")
    return _loaded_run(str(run), which, _mtime(ckpt))


# --------------------------------------------------------------------------- data
def run_data(info: RunInfo, user_path: str | None) -> RunData:
    """The run's data on this machine (cheap: resolving reads only file metadata)."""
    return RunData(info.path, user_path, config=info.config)


@st.cache_resource(show_spinner="Loading faces…", max_entries=3, hash_funcs=HASH_FUNCS)
def _faceset(data: DataChoice) -> Any:
    return open_faces(data)


def faceset(rd: RunData) -> Any:
    """The run's FaceSet (shared, read-only); raises DataUnavailable with the reason."""
    return _faceset(rd.data)


@st.cache_data(show_spinner=False, max_entries=16)
def _stored(path: str, split: str, stamp: float, user_path: str | None) -> Predictions | None:
    return RunData(path, user_path).stored_predictions(split)


@st.cache_data(show_spinner="Computing predictions (once)…", max_entries=8, hash_funcs=HASH_FUNCS)
def _computed(path: str, split: str, data: DataChoice, model: LoadedRun, user_path: str | None) -> Predictions:
    rd = RunData(path, user_path)
    return rd.compute_predictions(split, _faceset(data), model=model)


def predictions(rd: RunData, split: str, compute: bool = True) -> Predictions:
    """Per-face predictions of a run on a split: stored ``eval/<split>.npz``, else computed once
    (and saved into the run). Raises DataUnavailable with a readable reason."""
    user = rd.user_path
    stored = _stored(str(rd.run), split, _mtime(eval_path(rd.run, split, ".npz")), user)
    if stored is not None:
        return stored
    if not compute:
        raise DataUnavailable(f"no stored predictions (eval/{split}.npz) for this run")
    if rd.data.spec is None:
        raise DataUnavailable(f"no stored predictions for the {split} split, and they cannot be computed: "
                              f"{rd.data.note}")
    try:
        model = loaded_run(rd.run)
    except Exception as exc:  # noqa: BLE001 - any load failure is a reason, not a traceback
        raise DataUnavailable(f"no stored predictions for the {split} split, and the run's model cannot "
                              f"compute them: {exc}") from None
    return _computed(str(rd.run), split, rd.data, model, user)


@st.cache_data(show_spinner=False, max_entries=16, hash_funcs=HASH_FUNCS)
def _aligned(pred: Predictions, data: DataChoice, path: str, user_path: str | None) -> np.ndarray:
    return RunData(path, user_path).aligned(pred, _faceset(data))


def aligned_faces(rd: RunData, pred: Predictions) -> tuple[Any, np.ndarray]:
    """(FaceSet, each prediction's position in it); raises DataUnavailable saying why not."""
    faces = faceset(rd)
    return faces, _aligned(pred, rd.data, str(rd.run), rd.user_path)


def split_faces(rd: RunData, pred: Predictions) -> FaceBatch:
    """The faces behind ``pred`` in its order, as one keyed batch (cell means, top faces)."""
    faces, index = aligned_faces(rd, pred)
    return FaceBatch(faces.x[index].numpy(), key=f"split|{pred.key}|{rd.data.key}")


def reevaluate(rd: RunData, split: str) -> None:
    """Evaluate again on this machine's data and overwrite eval/<split>.*; the caches notice the
    new file version by themselves."""
    rd.reevaluate(split, faceset(rd), model=loaded_run(rd.run))


@st.cache_data(show_spinner=False, max_entries=8, hash_funcs=HASH_FUNCS)
def _mean_face(data: DataChoice) -> np.ndarray:
    return mean_face(_faceset(data))


def data_mean_face(rd: RunData) -> np.ndarray:
    """Mean training face of the run's data in [0,1] (the "mean" attribution baseline)."""
    return _mean_face(rd.data)


# --------------------------------------------------------------------------- figures
@st.cache_resource(show_spinner=False, max_entries=32)
def _figure(kind: str, key: tuple[Any, ...], _build: Callable[[], Any]) -> Any:
    return _build()


def memo_figure(kind: str, key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
    """A Plotly figure built once per ``(kind, key)`` and shared (read-only) across reruns;
    ``key`` must capture every input of ``build`` (e.g. the matrix bytes and the class names)."""
    return _figure(kind, key, build)


# --------------------------------------------------------------------------- model page
@st.cache_data(show_spinner=False, max_entries=32)
def layer_rows(name: str) -> list[Any]:
    """The layer table of a registered architecture (built with random weights)."""
    from fer_core.models.summary import summarize

    return list(summarize(name))


@st.cache_data(show_spinner=False, max_entries=16, hash_funcs=HASH_FUNCS)
def run_layer_rows(model: LoadedRun) -> list[Any]:
    return list(model.layer_rows())


@st.cache_data(show_spinner=False, max_entries=64)
def batchnorm_check(n: int, d: int, seed: int, spatial: int | None) -> dict[str, float]:
    from fer_core.mathcheck import check_batchnorm

    return check_batchnorm(n=n, d=d, seed=seed, spatial=spatial)


@st.cache_data(show_spinner=False, max_entries=64)
def softmax_check(n: int, c: int, seed: int, scale: float) -> dict[str, float]:
    from fer_core.mathcheck import check_softmax_xent

    return check_softmax_xent(n=n, c=c, seed=seed, scale=scale)


# --------------------------------------------------------------------------- attribution
def _opts(opts_items: tuple, mean: np.ndarray | None) -> dict[str, Any]:
    opts = dict(opts_items)
    if mean is not None and opts.get("baseline") == "mean":
        opts["mean_face"] = mean
    return opts


@st.cache_data(show_spinner=False, max_entries=16, hash_funcs=HASH_FUNCS)
def gradcam_layers(model: LoadedRun) -> list[Any]:
    return model.gradcam_layers()


@st.cache_data(show_spinner=False, max_entries=64, hash_funcs=HASH_FUNCS)
def method_notes(model: LoadedRun, method: str, layer: str | None) -> list[str]:
    return model.method_notes(method, layer)


@st.cache_data(show_spinner=False, max_entries=16, hash_funcs=HASH_FUNCS)
def probs(model: LoadedRun, faces: FaceBatch) -> np.ndarray:
    """Class probabilities of faces that have no stored predictions (uploads)."""
    return model.probs(faces.x)


@st.cache_data(show_spinner="Computing attributions…", max_entries=32, hash_funcs=HASH_FUNCS)
def attributions(model: LoadedRun, faces: FaceBatch, targets: tuple[int, ...], method: str,
                 opts_items: tuple = (), mean: np.ndarray | None = None) -> np.ndarray:
    """Maps (len(targets)×H×W) of ``method`` for the faces in ONE batched call (see
    ``LoadedRun.attribute_faces``); ``opts_items`` = sorted (name, value) pairs."""
    return model.attribute_faces(faces.x, list(targets), method, **_opts(opts_items, mean))


@st.cache_data(show_spinner="Randomising the model and recomputing…", max_entries=16, hash_funcs=HASH_FUNCS)
def sanity(model: LoadedRun, faces: FaceBatch, targets: tuple[int, ...], method: str, opts_items: tuple,
           n_layers: int, seed: int, mean: np.ndarray | None = None) -> Any:
    return model.sanity(faces.x, list(targets), method, n_layers=n_layers, seed=seed, **_opts(opts_items, mean))


@st.cache_data(show_spinner="Randomising layer by layer…", max_entries=8, hash_funcs=HASH_FUNCS)
def cascade(model: LoadedRun, faces: FaceBatch, targets: tuple[int, ...], method: str, opts_items: tuple,
            seed: int, mean: np.ndarray | None = None) -> list[tuple[int, str, float]]:
    return model.cascade(faces.x, list(targets), method, seed=seed, **_opts(opts_items, mean))


@st.cache_data(show_spinner="Averaging maps per confusion cell…", max_entries=16, hash_funcs=HASH_FUNCS)
def cell_maps(model: LoadedRun, faces: FaceBatch, pred: Predictions, method: str, opts_items: tuple,
              cells: tuple[tuple[int, int], ...], target: str, max_per_cell: int,
              mean: np.ndarray | None = None) -> list[Any]:
    """Mean map + mean face per confusion cell; ``faces`` are ``pred``'s faces in its order."""
    return model.cell_maps(faces.x, pred.label, pred.pred, method, cells=list(cells), target=target,
                           max_per_cell=max_per_cell, **_opts(opts_items, mean))


# --------------------------------------------------------------------------- feature visualisation
@st.cache_data(show_spinner=False, max_entries=16, hash_funcs=HASH_FUNCS)
def feature_layers(model: LoadedRun) -> list[Any]:
    return model.feature_layers()


@st.cache_data(show_spinner="Optimising filter images (all filters in one batch)…", max_entries=16,
               hash_funcs=HASH_FUNCS)
def filter_images(model: LoadedRun, layer: str, mode: str, filters: tuple[int, ...], steps: int, lr: float,
                  seed: int) -> Any:
    return model.filter_images(layer, mode=mode, filters=filters, steps=steps, lr=lr, seed=seed)


@st.cache_data(show_spinner=False, max_entries=32, hash_funcs=HASH_FUNCS)
def activations(model: LoadedRun, layer: str, face: FaceBatch) -> np.ndarray:
    """The layer's output maps (C×h×w) for the one face in ``face``."""
    return model.activations(layer, face.x[0])


@st.cache_data(show_spinner=False, max_entries=16, hash_funcs=HASH_FUNCS)
def filter_weights(model: LoadedRun, layer: str) -> np.ndarray | None:
    return model.filter_weights(layer)


@st.cache_data(show_spinner="Scanning the faces for each filter's strongest responses…", max_entries=16,
               hash_funcs=HASH_FUNCS)
def top_faces(model: LoadedRun, layer: str, faces: FaceBatch, filters: tuple[int, ...], k: int) -> Any:
    return model.top_faces(layer, faces.x, filters=filters, k=k)


def faces_batch(x: Any) -> FaceBatch:
    """Uploaded/decoded faces as a keyed batch (key = a hash of the pixels)."""
    return FaceBatch(np.ascontiguousarray(np.asarray(x, dtype=np.uint8)))


# --------------------------------------------------------------------------- progress bars
def in_caller_context(progress: Callable[..., None] | None) -> Callable[..., None] | None:
    """``progress`` wrapped to run in the caller's context (None stays None).

    Why: Streamlit records the elements a cached function touches to replay them on a cache hit,
    and a progress bar made outside the function cannot be replayed; run outside that recording,
    updating it is just an update. Pass the result as a cached function's ``_progress`` argument
    (leading underscore: not part of the cache key).
    """
    if progress is None:
        return None
    outer = contextvars.copy_context()

    def relay(*args: Any) -> None:
        outer.run(progress, *args)

    return relay


# --------------------------------------------------------------------------- report
def _run_files(run: Path) -> tuple[tuple[str, float], ...]:
    """(name, version) of the files a report reads from a run (config, metrics, evaluations)."""
    files = [run / "config.json", run / "metrics.csv", *sorted((run / "eval").glob("*"))]
    return tuple((f.name, _mtime(f)) for f in files)


@st.cache_data(show_spinner=False, max_entries=4, hash_funcs=HASH_FUNCS)
def _report_html(run: str, model: LoadedRun | None, data: DataChoice, user_path: str | None,
                 compare: tuple[str, ...], split: str, files: tuple[Any, ...], _faces: Any, _progress: Any) -> str:
    from fer_core.report import build_report

    return build_report(model if model is not None else run, data=user_path, compare=compare, split=split,
                        faces=_faces, progress=_progress)


def report_html(info: RunInfo, user_path: str | None, compare: Sequence[RunInfo], split: str,
                progress: Callable[[float, str], None] | None = None) -> str:
    """The run's self-contained HTML report (:func:`fer_core.report.build_report`), built once per
    model version, data, compared runs, split and run-file versions, from the shared ``LoadedRun``
    and face set; ``progress(fraction, message)`` is called while it builds (not on a cache hit;
    see :func:`in_caller_context`). Raises RunError when a run is not a run directory; missing models/data are written
    into the report.
    """
    try:
        model = loaded_run(info.path)
    except Exception:  # noqa: BLE001 - a predictions-only run or a broken model: the report says why
        model = None
    rd = run_data(info, user_path)
    try:
        faces = faceset(rd)
    except DataUnavailable:
        faces = None
    relay = in_caller_context(progress)
    others = tuple(str(c.path) for c in compare)
    files = tuple(_run_files(Path(p)) for p in (str(info.path), *others))
    return _report_html(str(info.path), model, rd.data, user_path, others, split, files, faces, relay)


# --------------------------------------------------------------------------- dataset page
@st.cache_resource(show_spinner=False, max_entries=8, hash_funcs=HASH_FUNCS)
def _embedding(model: LoadedRun, faces: FaceBatch, split: str, _progress: Any) -> Any:
    from fer_core.dataset.embedding import load_or_compute_embedding

    # the data version stored with the map is the pixels' content hash (a fresh FaceBatch key), so a
    # copied or moved run keeps its cached map and changed faces never reuse a stale one
    return load_or_compute_embedding(model, faces.x, split=split, data_key=FaceBatch(faces.x).key,
                                     progress=_progress)


def embedding(rd: RunData, model: LoadedRun, pred: Predictions,
              progress: Callable[[float, str], None] | None = None) -> Any:
    """The 2-D map (:class:`fer_core.dataset.embedding.Embedding`) of ``pred``'s faces, in
    ``pred``'s order: read from the run's ``eval/<split>_embedding.npz`` when it matches this model
    and these faces, else computed and written there; kept in memory per model, faces and split
    (shared, read-only). ``progress(fraction, text)`` is called only while computing. Raises
    DataUnavailable (no faces here) or ModelUnavailable (the model cannot run)."""
    return _embedding(model, split_faces(rd, pred), pred.split, in_caller_context(progress))


@st.cache_resource(show_spinner=False, max_entries=8, hash_funcs=HASH_FUNCS)
def _probability_embedding(run: str, pred: Predictions, faces: FaceBatch, reason: str, _progress: Any) -> Any:
    from fer_core.dataset.embedding import probability_embedding

    return probability_embedding(run, pred.probs, split=pred.split, data_key=FaceBatch(faces.x).key,
                                 reason=reason, progress=_progress)


def probability_embedding(rd: RunData, pred: Predictions, reason: str,
                          progress: Callable[[float, str], None] | None = None) -> Any:
    """The map of a run without a model (imported predictions): its stored class probabilities laid
    out like :func:`embedding`'s features, cached the same way; ``reason`` says why there are no features."""
    return _probability_embedding(str(rd.run), pred, split_faces(rd, pred), reason, in_caller_context(progress))


@st.cache_data(show_spinner="Ranking label issues (cleanlab)…", max_entries=16, hash_funcs=HASH_FUNCS)
def _issues(pred: Predictions, method: str) -> Any:
    from fer_core.dataset.label_issues import rank_label_issues

    return rank_label_issues(pred.label, pred.probs, method=method)


@st.cache_data(show_spinner="k-fold predictions from the features…", max_entries=8, hash_funcs=HASH_FUNCS)
def _kfold_issues(pred: Predictions, emb: Any, method: str) -> Any:
    from fer_core.dataset.label_issues import kfold_probs, rank_label_issues

    probs = kfold_probs(emb.features, pred.label, num_classes=pred.probs.shape[1])
    return rank_label_issues(pred.label, probs, method=method)


def label_issues(rd: RunData, pred: Predictions, emb: Any = None, *, kfold: bool = False,
                 method: str = "self_confidence") -> Any:
    """Confident-learning label issues (:class:`fer_core.dataset.label_issues.LabelIssues`) of
    ``pred``'s faces, in its order. From the run's stored probabilities (out-of-sample for a split
    the model did not train on), or with ``kfold`` from k-fold probabilities of a linear model on
    ``emb.features`` (``emb`` = :func:`embedding`'s map). ``out_of_sample`` and ``note`` say which
    and whether the ranking can be trusted for this split. Raises ValueError when cleanlab or the
    k-fold model cannot rank these labels."""
    from dataclasses import replace

    from fer_core.dataset.label_issues import out_of_sample_note

    if kfold:
        if emb is None:
            raise ValueError("k-fold label issues need the map's features (the embedding)")
        res = _kfold_issues(pred, emb, method)
        return replace(res, out_of_sample=True,
                       note=("Out-of-sample probabilities from k-fold cross-validation of a logistic "
                             f"regression on the features ({emb.source}), not the run's own predictions."))
    oos, note = out_of_sample_note(rd.config, pred.split)
    note = note[:1].upper() + note[1:] + ("" if note.endswith(".") else ".")  # shown as a sentence
    return replace(_issues(pred, method), out_of_sample=oos, note=note)


def triage_store(run: str | Path, classes: Sequence[str] | None = None) -> Any:
    """The run's :class:`fer_core.dataset.triage.TriageStore` (``run/triage/marks.json``).

    Deliberately not cached: the marks file is the state (several sessions may mark the same run),
    so every read goes to the file; building the store costs nothing."""
    from fer_core.dataset.triage import TriageStore

    return TriageStore(run, classes)


# --------------------------------------------------------------------------- live page
@st.cache_data(show_spinner=False, max_entries=1)
def _example() -> tuple[bytes, list[str]]:
    import io

    from PIL import Image

    from fer_core.data.synthetic import sample_picture

    rgb, labels = sample_picture()
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue(), labels


def example_picture() -> bytes:
    """The Live page's example picture (three SynthFER faces) as PNG bytes, made once."""
    return _example()[0]


def example_labels() -> list[str]:
    return _example()[1]
