"""Widget helpers shared by the pages; each returns plain values (paths, ints, strings).

Why: every page picks runs, reads the sidebar's data path and shows the same kinds of messages;
doing it in one place keeps widget keys explicit and unique and the wording consistent. The face
gallery lives here too because the Errors page shows it twice (a confusion cell and the flips
between two runs) and the Dataset page a third time (the faces selected on its map, with triage
controls), and so does the face inspector the Dataset page opens from it and the attribution
colour bar, which the Explain page and the Errors page's "Explain faces" overlays both draw.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import resources
from fer_core.checkpoint import CheckpointError
from fer_core.explain.attribution import METHODS
from fer_core.explain.colour import color_limits, colorize
from fer_core.gallery import SORT_KEYS, order_positions, page_bounds, top_probs
from fer_core.model import LoadedRun, ModelUnavailable
from fer_core.rundata import Predictions
from fer_core.runs import RunError, RunInfo

DATA_PATH_KEY = "fer_data_path"
GALLERY_PER_PAGE = 36
GALLERY_ZOOM = 3  # 48 px faces shown at 144 px, nearest-neighbour (CSS image-rendering: pixelated)
GALLERY_COLUMNS = 6  # faces per row when each face has its own controls (triage galleries)
# The Explain page's default attribution method (the first of its picker), used by the inspector.
DEFAULT_METHOD = next(iter(METHODS))
# What loading a run's model can raise with a readable message (a missing/corrupt checkpoint, a
# broken config, a run kind without a model here, weights that do not fit the architecture).
MODEL_ERRORS: tuple[type[Exception], ...] = (CheckpointError, RunError, ModelUnavailable, RuntimeError,
                                             ValueError)


# --------------------------------------------------------------------------- sidebar
def sidebar() -> None:
    """The sidebar every page shares: the FER2013 data path and a reload button."""
    with st.sidebar:
        st.text_input(
            "FER2013 data path", value=os.environ.get(resources.DATA_ENV, ""), key=DATA_PATH_KEY,
            placeholder="/path/to/fer2013.csv",
            help="Where your copy of FER2013 lives (fer2013.csv, its folder, or an .npz). Used to "
                 "show the faces of runs trained on data that is not on this machine. Default: "
                 "the FER_DATA environment variable.")
        if st.button("Reload runs", key="sidebar_reload", help="Re-scan run folders and clear caches"):
            resources.clear_caches()
        roots = resources.dashboard_roots()
        st.caption("Run folders: " + (", ".join(f"`{r}`" for r in roots) or "none"))


def data_path() -> str:
    """The sidebar's FER2013 data path (empty string when not set)."""
    return str(st.session_state.get(DATA_PATH_KEY, os.environ.get(resources.DATA_ENV, "")) or "")


# --------------------------------------------------------------------------- runs
def run_label(info: RunInfo) -> str:
    tags = []
    if info.synthetic:
        tags.append("synthetic")
    if info.running:
        tags.append("training…")
    if not info.has_model:
        tags.append("curves only")
    if info.config.get("kind") in ("foreign", "predictions"):
        tags.append("imported")
    if info.error:
        tags.append("⚠ broken")
    return info.label + (f" ({', '.join(tags)})" if tags else "")


def no_runs_message() -> None:
    roots = resources.dashboard_roots()
    st.info(
        "No runs found yet. Runs are read from "
        + (", ".join(f"`{r}`" for r in roots) or "no folders")
        + " (plus any folders in `FER_RUNS`).\n\nTrain a small one in a couple of minutes on the "
        "built-in synthetic faces:\n\n"
        "```\npython -m fer_core train --data synthetic:n=3000 --model cnn4 --epochs 3\n```\n"
        "It appears here under `runs/`; press **Reload runs** in the sidebar.")


def runs_by_path(runs: Sequence[RunInfo]) -> dict[str, RunInfo]:
    return {str(r.path): r for r in runs}


def _sanitize(key: str, options: Sequence[str], multi: bool) -> None:
    """Drop a stored selection that is no longer among the options (a run was deleted)."""
    if key not in st.session_state:
        return
    val = st.session_state[key]
    if multi:
        kept = [v for v in (val or []) if v in options]
        if kept != list(val or []):
            st.session_state[key] = kept
    elif val not in options:
        del st.session_state[key]


def pick_runs(runs: Sequence[RunInfo], key: str, default: Sequence[str], label: str = "Runs") -> list[str]:
    """Multiselect of runs; returns their paths (strings)."""
    by = runs_by_path(runs)
    options = list(by)
    _sanitize(key, options, multi=True)
    kwargs: dict[str, Any] = {} if key in st.session_state else {"default": [d for d in default if d in by]}
    return list(st.multiselect(label, options, format_func=lambda p: run_label(by[p]), key=key, **kwargs))


def pick_run(runs: Sequence[RunInfo], key: str, label: str, *, default: str | None = None,
             none_label: str | None = None, exclude: str | None = None, help: str | None = None) -> str | None:
    """Selectbox of one run; returns its path, or None when ``none_label`` is chosen."""
    by = runs_by_path(runs)
    options: list[str] = ([""] if none_label else []) + [p for p in by if p != exclude]
    if not options:
        return None
    _sanitize(key, options, multi=False)
    index = options.index(default) if default in options else 0
    fmt = lambda p: none_label if p == "" else run_label(by[p])  # noqa: E731
    kwargs: dict[str, Any] = {} if key in st.session_state else {"index": index}
    choice = st.selectbox(label, options, format_func=fmt, key=key, help=help, **kwargs)
    return choice or None


def query_run(runs: Sequence[RunInfo]) -> str | None:
    """The run named by the page URL's ``?run=`` (a run folder's name, its label or its path), if any.

    Lets a link open a model page on a given run, e.g. ``/explain?run=synth-cnn4-aug`` (the README
    screenshots use it to show a SynthFER run rather than the default one).
    """
    want = str(st.query_params.get("run", "") or "").strip()
    if not want:
        return None
    for r in runs:
        if want in (str(r.path), r.path.name, r.label):
            return str(r.path)
    return None


def default_run(runs: Sequence[RunInfo]) -> str:
    """The run a page opens on (``runs`` must not be empty): one whose faces can be shown here.

    The URL's ``?run=`` (see :func:`query_run`) first, else a shipped run whose data resolves on
    this machine (SynthFER runs regenerate anywhere; a FER2013 run needs the user's copy in the
    sidebar's data path or ``FER_DATA``), else the first run.
    """
    return query_run(runs) or next(
        (str(r.path) for r in runs
         if resources.is_shipped(r) and resources.run_data(r, data_path()).data.spec is not None),
        str(runs[0].path))


def pick_model_run(key: str, label: str = "Run", *, needs_model: bool = True) -> RunInfo | None:
    """Pick one run that has a readable config and checkpoint (for pages that load its model;
    ``needs_model=False`` also offers runs of imported predictions, which have none).

    Renders the explanation itself when there is nothing to pick and returns None then, so every
    model page handles "no runs" and "only broken runs" the same way. The initial run is
    :func:`default_run`'s.
    """
    runs = resources.discover_runs()
    if not runs:
        no_runs_message()
        return None
    usable = [r for r in runs if r.config and not r.error and (r.has_model or not needs_model)]
    if not usable:
        for r in runs:
            run_problem(r)
        st.info("None of the runs found has a readable config and a checkpoint.")
        return None
    path = pick_run(usable, key, label, default=default_run(usable))
    return runs_by_path(usable)[path]


def pick_option(label: str, options: Sequence[str], key: str, **kwargs: Any) -> str:
    """A selectbox whose stored value is dropped when it is no longer offered (e.g. another run
    has other splits), instead of erroring."""
    _sanitize(key, list(options), multi=False)
    return str(st.selectbox(label, list(options), key=key, **kwargs))


def run_problem(info: RunInfo) -> None:
    """The one-line message for a broken run (the page keeps going)."""
    if info.error:
        st.warning(f"**{info.label}**: {info.error}", icon="⚠️")


# --------------------------------------------------------------------------- gallery
def _votes_text(votes: np.ndarray | None) -> str:
    if votes is None:
        return ""
    from fer_core.data.ferplus import FERPLUS_VOTE_NAMES

    parts = [f"{FERPLUS_VOTE_NAMES[i]} {int(v)}" for i, v in enumerate(votes) if v > 0]
    return "FER+ votes: " + (", ".join(parts) if parts else "none")


# Per-face label-issue scores for the gallery's "issue" sort, computed only when that sort is chosen:
# a callable returning (scores in Predictions order, one-line note on where the scores come from).
IssueScores = Callable[[], "tuple[np.ndarray, str]"]


@dataclass
class GalleryTriage:
    """Per-face triage controls of a gallery: each face shows its mark (``marks``: the run's marks
    of this split by FaceSet index, :meth:`fer_core.dataset.triage.TriageStore.marks`) and gets an
    "Inspect" button that puts ``(run, split, position)`` into ``st.session_state[pick_key]``,
    where :func:`picked_position` reads it and :func:`face_inspector` shows that face."""

    run: str
    split: str
    pick_key: str
    marks: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)


def picked_position(pick_key: str, run: str, split: str) -> int | None:
    """The position last inspected in a triage gallery of this run and split, if any."""
    picked = st.session_state.get(pick_key)
    if isinstance(picked, tuple) and len(picked) == 3 and picked[:2] == (run, split):
        return int(picked[2])
    return None


def _pick(pick_key: str, run: str, split: str, pos: int) -> None:
    st.session_state[pick_key] = (run, split, int(pos))


# A gallery decorator gets the page's faces (N×H×W uint8) and their positions in the Predictions and
# returns the images to show instead (same order) plus a caption suffix per face, or None to keep them.
Decorator = Callable[[np.ndarray, np.ndarray], "tuple[list[np.ndarray], list[str]] | None"]


def face_gallery(*, key: str, positions: np.ndarray, pred: Predictions, faces: Any,
                 face_index: np.ndarray | None, classes: Sequence[str], synthetic: bool, reset_token: Any,
                 extra_caption: Callable[[int], str] | None = None,
                 per_page: int = GALLERY_PER_PAGE, decorate: Decorator | None = None,
                 issue: IssueScores | None = None, default_sort: str | None = None,
                 triage: GalleryTriage | None = None) -> list[int]:
    """Sortable, paginated faces of ``positions`` (positions in ``pred``'s arrays).

    Each face is captioned with its dataset row id, predicted class and probability, the
    probability of its true class and, where the data has them, FER+ crowd votes; a table below
    lists all class probabilities of the page. Only this page's faces are touched (a cell can hold
    thousands). ``face_index[pos]`` is the face's index in ``faces``. The page resets to 1 whenever
    ``reset_token`` changes. ``decorate`` (see ``Decorator``) may replace the page's images, e.g.
    by each face with its attribution overlay under it; it is called once per page, so it can
    compute everything for the page in one batch. ``issue`` (see ``IssueScores``) adds the
    "label-issue score" sort, whose note is shown when it is chosen; ``default_sort`` is the sort
    a new gallery starts with. ``triage`` (see :class:`GalleryTriage`) lays the faces out one by
    one, each captioned with its triage mark and with an "Inspect" button. Returns the positions
    shown.
    """
    n = len(positions)
    page_key, sort_key, token_key = f"{key}_page", f"{key}_sort", f"{key}_token"
    if st.session_state.get(token_key) != reset_token:
        st.session_state[token_key] = reset_token
        st.session_state[page_key] = 1
    if n == 0:
        st.caption("No faces in this cell.")
        return []
    n_pages = page_bounds(n, 1, per_page)[2]
    c1, c2, c3 = st.columns([2, 1, 2])
    sorts = [k for k in SORT_KEYS if k != "issue" or issue is not None]
    _sanitize(sort_key, sorts, multi=False)
    first = {} if sort_key in st.session_state or default_sort not in sorts else {"index": sorts.index(default_sort)}
    with c1:
        sort = st.selectbox("Sort by", sorts, format_func=SORT_KEYS.get, key=sort_key, **first)
    with c2:
        if int(st.session_state.get(page_key, 1)) > n_pages:
            st.session_state[page_key] = n_pages
        page = int(st.number_input(f"Page (of {n_pages})", min_value=1, max_value=n_pages, step=1,
                                   key=page_key))
    probs, labels, rows = pred.probs, pred.label, pred.row
    scores = None
    if sort == "issue" and issue is not None:
        try:
            scores, note = issue()
        except (ValueError, RuntimeError) as exc:  # cleanlab cannot rank these labels: say so, sort otherwise
            st.warning(f"No label-issue scores for these faces ({exc}); sorted by “likely mislabeled” instead.")
            sort = "mislabel"
        else:
            st.caption(note)
    ordered = order_positions(positions, probs, labels, rows, sort, scores=scores)
    start, stop, _ = page_bounds(n, page, per_page)
    shown = ordered[start:stop]
    with c3:
        st.caption(f"faces {start + 1}–{stop} of {n}" + (" · SynthFER (synthetic faces)" if synthetic else ""))

    votes = pred.ferplus_votes
    captions, table = [], []
    for pos in shown:
        p, t = probs[pos], int(labels[pos])
        pr = int(p.argmax())
        cap = f"row {int(rows[pos])} · {classes[pr]} {p[pr]:.2f} · p({classes[t]})={p[t]:.2f}"
        if extra_caption is not None:
            cap += " · " + extra_caption(int(pos))
        if scores is not None:
            cap += f" · issue {scores[pos]:.2f}"
        mark = triage.marks.get(int(pred.index[pos])) if triage is not None else None
        if mark:
            cap += " · ✎ " + _mark_text(mark)
        v = _votes_text(votes[pos]) if votes is not None else ""
        if v:
            cap += " · " + v
        captions.append(cap)
        rec = {"row": int(rows[pos]), "true": classes[t], "pred": classes[pr],
               **{c: float(p[i]) for i, c in enumerate(classes)}}
        if v:
            rec["FER+ votes"] = v.removeprefix("FER+ votes: ")
        table.append(rec)

    if faces is not None and face_index is not None:
        idx = np.asarray(face_index)[shown]
        images = list(faces.x[idx].numpy())
        decorated = decorate(np.stack(images), np.asarray(shown)) if decorate is not None else None
        if decorated is not None:
            images, suffixes = decorated
            captions = [c + (" · " + x if x else "") for c, x in zip(captions, suffixes)]
        # Native 48-px PNGs (a few hundred bytes each, lossless) enlarged by the browser with
        # nearest-neighbour scaling: 9× fewer pixels to encode than upscaling on the server.
        with st.container(key=f"{key}_faces"):
            st.html(f"<style>.st-key-{key}_faces img {{image-rendering: pixelated;}}</style>")
            if triage is None:
                st.image(images, caption=captions, width=images[0].shape[1] * GALLERY_ZOOM, output_format="PNG")
            else:
                _triage_grid(key, triage, images, captions, shown)
    else:
        st.caption("Faces cannot be shown (see the message above); their predictions:")
    with st.expander("Class probabilities of the faces on this page", expanded=face_index is None):
        st.dataframe(pd.DataFrame(table), hide_index=True, key=f"{key}_table",
                     column_config={c: st.column_config.ProgressColumn(c, min_value=0.0, max_value=1.0,
                                                                       format="%.2f") for c in classes})
    return [int(p) for p in shown]


def _mark_text(mark: Mapping[str, Any]) -> str:
    from fer_core.dataset.triage import describe_mark

    return describe_mark(mark)


def _triage_grid(key: str, triage: GalleryTriage, images: list[np.ndarray], captions: list[str],
                 shown: np.ndarray) -> None:
    """The page's faces in rows of ``GALLERY_COLUMNS``, each with its "Inspect" button (Streamlit
    images cannot be clicked, so the button under a face is the click); the inspected one is
    highlighted."""
    picked = picked_position(triage.pick_key, triage.run, triage.split)
    for start in range(0, len(images), GALLERY_COLUMNS):
        cols = st.columns(GALLERY_COLUMNS)
        for col, img, cap, pos in zip(cols, images[start:start + GALLERY_COLUMNS],
                                      captions[start:start + GALLERY_COLUMNS], shown[start:start + GALLERY_COLUMNS]):
            with col:
                st.image(img, caption=cap, width=img.shape[1] * GALLERY_ZOOM, output_format="PNG")
                st.button("Inspect", key=f"{key}_inspect_{int(pos)}", on_click=_pick,
                          args=(triage.pick_key, triage.run, triage.split, int(pos)),
                          type="primary" if picked == int(pos) else "secondary",
                          help="Show this face's probabilities and saliency map, and triage it")


# --------------------------------------------------------------------------- one face
def _triage_action(run: str, classes: tuple[str, ...], split: str, index: int, row: int, label: str,
                   kind: str, new_label_key: str | None, msg_key: str) -> None:
    """Button callback: mark/unmark one face in the run's triage store (before the rerun draws)."""
    store = resources.triage_store(run, classes)
    try:
        if kind == "unmark":
            done = store.unmark(split, index)
            msg = f"Mark of row {row} removed." if done else f"Row {row} had no mark."
        else:
            new = st.session_state.get(new_label_key) if new_label_key else None
            m = store.mark(split, index, row=row, label=label, kind=kind, new_label=new)
            msg = f"Row {row} marked: {_mark_text(m)}."
        st.session_state[msg_key] = ("success", msg)
    except (ValueError, OSError) as exc:  # invalid mark, corrupt or unwritable marks file
        st.session_state[msg_key] = ("error", str(exc))


def face_inspector(*, key: str, run: str, pos: int, pred: Predictions, faces: Any, face_index: np.ndarray,
                   classes: Sequence[str], model: LoadedRun | None, store: Any,
                   issue_score: float | None = None) -> None:
    """One face of ``pred`` (position ``pos``): the face and its saliency map (the Explain page's
    default method, for the predicted class; the reason instead when the run has no gradients),
    all class probabilities, and the triage buttons ("wrong label → X", "not a face",
    "ambiguous", clear) that write to ``store`` (the run's TriageStore)."""
    classes = tuple(classes)
    row, index = int(pred.row[pos]), int(pred.index[pos])
    t, pr = int(pred.label[pos]), int(pred.pred[pos])
    p = pred.probs[pos]
    st.markdown(f"#### row {row}: labelled **{classes[t]}**, predicted **{classes[pr]}** ({p[pr]:.2f})")
    if issue_score is not None and np.isfinite(issue_score):
        st.caption(f"label-issue score {issue_score:.3f} (higher = the label is more likely wrong)")
    face = faces.x[int(face_index[pos])].numpy()[None]
    images, caps = [np.repeat(face[0][..., None], 3, -1)], ["the face"]
    reason = None if model is not None else "the run's model cannot be loaded"
    if model is not None and model.gradient_reason is not None:
        reason = model.gradient_reason
    if reason is None:
        spec = METHODS[DEFAULT_METHOD]
        try:
            maps = resources.attributions(model, resources.faces_batch(face), (pr,), DEFAULT_METHOD)
        except (RuntimeError, ValueError) as exc:  # incl. ModelUnavailable
            reason = str(exc)
        else:
            lim = color_limits(maps, shared=True, signed=spec.signed)
            images.append(colorize(maps, lim, signed=spec.signed, faces=face, alpha=0.7)[0])
            caps.append(f"{spec.label} for {classes[pr]} [{float(maps.min()):.2g}, {float(maps.max()):.2g}]")
    with st.container(key=f"{key}_faces"):
        st.html(f"<style>.st-key-{key}_faces img {{image-rendering: pixelated;}}</style>")
        st.image(images, caption=caps, width=face.shape[-1] * GALLERY_ZOOM, output_format="PNG")
    if reason is not None:
        st.info(f"No saliency map: {reason.rstrip('.')}.")
    order = np.argsort(-p, kind="stable")
    st.dataframe(pd.DataFrame({"class": [classes[i] for i in order], "probability": p[order]}),
                 hide_index=True, key=f"{key}_probs",
                 column_config={"probability": st.column_config.ProgressColumn(
                     "probability", min_value=0.0, max_value=1.0, format="%.3f")})
    if pred.ferplus_votes is not None:
        st.caption(_votes_text(pred.ferplus_votes[pos]))
    triage_buttons(key=key, run=run, split=pred.split, index=index, row=row, label=classes[t],
                   suggested=classes[pr], classes=classes, store=store)


def triage_buttons(*, key: str, run: str, split: str, index: int, row: int, label: str, suggested: str,
                   classes: tuple[str, ...], store: Any) -> None:
    """The triage controls of one face; changes go through button callbacks (see ``_triage_action``)."""
    msg_key = f"{key}_msg"
    try:
        mark = store.get(split, index)
    except ValueError as exc:  # a corrupt marks file: say which, never overwrite it
        st.error(str(exc))
        return
    st.caption(f"Triage: {'marked ' + _mark_text(mark) if mark else 'not marked'}")
    others = [c for c in classes if c != label]
    nl_key = f"{key}_new_label"
    _sanitize(nl_key, others, multi=False)
    first = {} if nl_key in st.session_state or suggested not in others else {"index": others.index(suggested)}
    c1, c2 = st.columns([1, 1])
    with c1:
        new = st.selectbox("Correct label", others, key=nl_key, **first)
    common = (run, classes, split, index, row, label)
    with c2:
        st.button(f"Wrong label → {new}", key=f"{key}_wrong", on_click=_triage_action,
                  args=(*common, "wrong_label", nl_key, msg_key), width="stretch")
    c3, c4, c5 = st.columns(3)
    c3.button("Not a face", key=f"{key}_notface", on_click=_triage_action,
              args=(*common, "not_face", None, msg_key), width="stretch")
    c4.button("Ambiguous", key=f"{key}_ambiguous", on_click=_triage_action,
              args=(*common, "ambiguous", None, msg_key), width="stretch")
    c5.button("Clear mark", key=f"{key}_unmark", on_click=_triage_action, disabled=mark is None,
              args=(*common, "unmark", None, msg_key), width="stretch")
    msg = st.session_state.pop(msg_key, None)
    if msg:
        (st.success if msg[0] == "success" else st.error)(msg[1])


def chart_selection(key: str) -> Any:
    """The selection state of the Plotly chart drawn with ``key`` (``on_select="rerun"``), or None."""
    state = st.session_state.get(key)
    if state is None:
        return None
    try:
        return state["selection"]
    except (KeyError, TypeError):
        return None


def top_text(p: np.ndarray, classes: Sequence[str], k: int = 2) -> str:
    return ", ".join(f"{c} {v:.2f}" for c, v in top_probs(p, classes, k))


# --------------------------------------------------------------------------- attribution maps
def colorbar(lo: float, hi: float, signed: bool, title: str) -> None:
    """A colour bar drawn with the same colouring as the maps (so the two can never disagree)."""
    ramp = np.linspace(lo, hi, 512)[None].repeat(14, 0)
    strip = colorize(ramp, np.array([[lo, hi]]), signed=signed)
    ticks = np.linspace(lo, hi, 5)
    st.image(strip, width="stretch", caption=f"{title}: " + "  ·  ".join(f"{t:.3g}" for t in ticks)
             + (" (white = 0, red > 0, blue < 0)" if signed else " (dark = low, bright = high)"))


def faces_over_maps(faces_u8: np.ndarray, maps: np.ndarray, limits: np.ndarray, *, signed: bool,
                    alpha: float = 0.6, gap: int = 2) -> list[np.ndarray]:
    """Each face (grey, as RGB) with its map blended over a copy of it underneath, at native size.

    Stacked vertically so a gallery keeps its column width: the face stays readable on its own and
    the overlay below shows where the attribution sits on it. ``limits`` is ``N×2`` (vmin, vmax);
    ``alpha`` is the map's weight where it is strongest (see ``colorize``).
    """
    faces_u8 = np.asarray(faces_u8, dtype=np.uint8)
    over = colorize(maps, limits, signed=signed, faces=faces_u8, alpha=alpha)
    sep = np.full((gap, faces_u8.shape[-1], 3), 255, np.uint8)
    return [np.concatenate([np.repeat(f[..., None], 3, -1), sep, o], 0) for f, o in zip(faces_u8, over)]


def model_or_error(info: RunInfo) -> LoadedRun | None:
    """The run's one shared :class:`LoadedRun`, or None after showing why it cannot be loaded (the
    model pages stop there instead of showing a traceback)."""
    try:
        return resources.loaded_run(info.path)
    except MODEL_ERRORS as exc:
        st.error(f"Cannot load the model of {info.label}: {exc}")
        return None
