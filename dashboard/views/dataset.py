"""Dataset page: a 2-D map of what the model sees, label issues on it, and label triage.

Why it is built this way: the Errors page browses one confusion cell at a time; this page shows a
whole split at once, the way FiftyOne's embeddings panel does, but on a run's own faces, row ids
and FER+ votes. Each face is placed by its penultimate-layer features (UMAP, see
:mod:`fer_core.dataset.embedding`; class probabilities, with the reason, when a run has no
hookable layer), and can be coloured by its label, the prediction, correctness, the FER+ crowd
majority or a confident-learning label-issue score (:mod:`fer_core.dataset.label_issues`). A
box or lasso drag on the map (``st.plotly_chart(on_select="rerun")``, one trace per colour group;
:func:`fer_core.gallery.selection_positions` turns the selection into faces) opens the same
gallery component as the Errors page, with triage controls; "Inspect" under a face shows its
probabilities and saliency map and the buttons that mark it ("wrong label → X", "not a face",
"ambiguous"). Marks are saved in the run (:class:`fer_core.dataset.triage.TriageStore`) and
export as CSV keyed by dataset row for ``python -m fer_core train --relabel``.

The map, its features and the label-issue ranking are computed by :mod:`dashboard.resources`
(cached, the map also in the run folder); the figure is memoised so a selection rerun draws the
very same chart (a changed figure would be a new widget and drop the selection).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from dashboard import components, resources
from dashboard.resources import DataUnavailable, Predictions, RunData
from fer_core.data.ferplus import FERPLUS_VOTE_NAMES
from fer_core.evaluate import ferplus_top_vote
from fer_core.gallery import selection_positions, top_probs
from fer_core.runs import RunInfo

MAP_KEY = "ds_map"
PICK_KEY = "ds_pick"
GALLERY_KEY = "ds_gal"
INSPECT_KEY = "ds_face"
MAP_HEIGHT = 620
WEBGL_ABOVE = 5000  # points: beyond this an SVG scatter gets sluggish in the browser; WebGL keeps up
COLOURS = {"true": "true label", "pred": "predicted label", "correct": "correct / wrong",
           "ferplus": "FER+ crowd majority", "issue": "label-issue score"}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#393b79", "#637939")
GREY = "#b0b0b0"


# --------------------------------------------------------------------------- colour groups
def colour_groups(kind: str, pred: Predictions, classes: Sequence[str],
                  score: np.ndarray | None) -> list[tuple[str, np.ndarray, str]]:
    """The map's traces for a colouring: ``(name, positions, colour)``; empty groups dropped.

    ``issue`` gives one trace of the scored faces (coloured by ``score``, see
    :func:`map_figure`) and one of the unscored ones (unlabeled faces); the others one trace per
    category, in a fixed order so the figure (and the selection) stays the same across reruns.
    """
    if kind == "issue":
        s = np.asarray(score, dtype=np.float64)
        groups = [("label-issue score", np.flatnonzero(np.isfinite(s)), ""),
                  ("no label", np.flatnonzero(~np.isfinite(s)), GREY)]
    elif kind == "correct":
        ok = pred.pred == pred.label
        groups = [("correct", np.flatnonzero(ok), "#2ca02c"), ("wrong", np.flatnonzero(~ok), "#d62728")]
    elif kind == "ferplus" and pred.ferplus_votes is not None:
        major = ferplus_top_vote(pred.ferplus_votes)
        groups = [(name, np.flatnonzero(major == i), PALETTE[i % len(PALETTE)])
                  for i, name in enumerate(FERPLUS_VOTE_NAMES)]
        groups.append(("no majority (tie)", np.flatnonzero(major < 0), GREY))
    else:
        codes = pred.pred if kind == "pred" else pred.label
        groups = [(c, np.flatnonzero(codes == i), PALETTE[i % len(PALETTE)]) for i, c in enumerate(classes)]
        other = np.flatnonzero((codes < 0) | (codes >= len(classes)))
        groups.append(("unlabeled", other, GREY))
    groups = [(name, pos.astype(np.int64), col) for name, pos, col in groups if len(pos)]
    if not groups:  # no faces at all: one empty trace, so the figure is still a figure
        groups = [("faces", np.zeros(0, np.int64), GREY)]
    return groups


def hover_text(pred: Predictions, classes: Sequence[str], score: np.ndarray | None) -> np.ndarray:
    """One hover line per face: its true label and top-3 probabilities (and label-issue score)."""
    out = []
    for pos in range(len(pred)):
        t = int(pred.label[pos])
        true = classes[t] if 0 <= t < len(classes) else "unlabeled"
        top = ", ".join(f"{c} {v:.2f}" for c, v in top_probs(pred.probs[pos], classes, 3))
        line = f"true {true} · {top}"
        if score is not None and np.isfinite(score[pos]):
            line += f" · issue {score[pos]:.2f}"
        out.append(line)
    return np.asarray(out, dtype=object)


def map_figure(xy: np.ndarray, pred: Predictions, groups: list[tuple[str, np.ndarray, str]],
               hover: np.ndarray, score: np.ndarray | None, title: str) -> go.Figure:
    """The scatter: one trace per group (``groups[c]`` is trace ``c``), ``customdata`` =
    ``[position, row id, hover line]``, drag = box select (lasso in the mode bar)."""
    scatter = go.Scattergl if len(xy) > WEBGL_ABOVE else go.Scatter
    traces = []
    for name, pos, colour in groups:
        custom = np.empty((len(pos), 3), dtype=object)
        custom[:, 0], custom[:, 1], custom[:, 2] = pos, pred.row[pos], hover[pos]
        if colour:
            marker: dict[str, Any] = dict(color=colour, size=6, opacity=0.8)
        else:
            marker = dict(color=np.asarray(score)[pos], colorscale="Reds", cmin=0.0, cmax=1.0, size=6,
                          opacity=0.85, colorbar=dict(title=dict(text="issue"), thickness=12))
        traces.append(scatter(
            x=xy[pos, 0], y=xy[pos, 1], mode="markers", name=f"{name} ({len(pos)})", customdata=custom,
            marker=marker, hovertemplate="row %{customdata[1]}<br>%{customdata[2]}<extra>%{fullData.name}</extra>"))
    fig = go.Figure(traces)
    fig.update_layout(
        title=dict(text=title, font=dict(size=14)), height=MAP_HEIGHT, dragmode="select",
        margin=dict(l=10, r=10, t=40, b=10), hovermode="closest", clickmode="event+select",
        legend=dict(itemsizing="constant"), xaxis=dict(showticklabels=False, title=None),
        yaxis=dict(showticklabels=False, title=None))
    return fig


# --------------------------------------------------------------------------- helpers
def selected(curves: Sequence[np.ndarray]) -> np.ndarray:
    """Positions of the faces box/lasso-selected on the map (from the chart's selection state)."""
    return selection_positions(components.chart_selection(MAP_KEY), curves)


def _token(run: str, split: str, positions: np.ndarray) -> tuple[str, str, int, int]:
    """What the gallery's page resets on: the run, the split and the set of faces."""
    return run, split, len(positions), hash(np.asarray(positions, dtype=np.int64).tobytes())


def ferplus_section(pred: Predictions, classes: Sequence[str], issues: Any, seed: int) -> None:
    """Precision at k of the ranking against the FER+ crowd (when the faces have FER+ votes)."""
    from fer_core.dataset.label_issues import baseline_orders, ferplus_disagrees, precision_at_k

    if pred.ferplus_votes is None:
        return
    truth = ferplus_disagrees(pred.label, pred.ferplus_votes, classes)
    if not truth.any():
        return
    ks = tuple(k for k in (50, 200, 1000) if k <= len(pred)) or (len(pred),)
    rows = {"label issues (cleanlab)": precision_at_k(issues.order, truth, ks)}
    for name, order in baseline_orders(pred.label, pred.probs, seed).items():
        rows[name] = precision_at_k(order, truth, ks)
    st.caption(f"Of the top-k faces of each ranking, the share whose FER+ crowd majority disagrees with "
               f"the label ({int(truth.sum())} of {len(pred)} faces here disagree):")
    st.dataframe({"ranking": list(rows), **{f"precision@{k}": [rows[r][k] for r in rows] for k in ks}},
                 hide_index=True, key="ds_ferplus_pk")


def triage_panel(info: RunInfo, rd: RunData, pred: Predictions, store: Any) -> None:
    """Counts of the run's marks, the table, undo, and the CSV download (FER+ votes when known)."""
    st.subheader("Triage marks")
    try:
        marks = store.marks()
        counts = store.counts()
    except ValueError as exc:  # a corrupt marks file: name it, never overwrite it
        st.error(str(exc))
        return
    m = st.columns(4)
    m[0].metric("marked faces", len(marks))
    m[1].metric("wrong label", counts.get("wrong_label", 0))
    m[2].metric("not a face", counts.get("not_face", 0))
    m[3].metric("ambiguous", counts.get("ambiguous", 0))
    st.caption(f"Saved in `{store.path}` (every change is written at once). Apply an export to the "
               f"training data with `python -m fer_core train … --relabel FILE.csv`.")
    if st.button("Undo last change", key="ds_undo", disabled=not store.can_undo()):
        done = store.undo()
        st.session_state["ds_undo_msg"] = f"Undid: {done}." if done else "Nothing to undo."
        st.rerun()
    msg = st.session_state.pop("ds_undo_msg", None)
    if msg:
        st.success(msg)
    if not marks:
        st.caption("No marks yet: inspect a face in the gallery and mark it.")
        return
    preds = [pred]
    for split in sorted({mk["split"] for mk in marks} - {pred.split}):
        try:
            preds.append(resources.predictions(rd, split, compute=False))
        except DataUnavailable:
            pass  # no stored predictions of that split: its marks are exported without FER+ votes
    from fer_core.dataset.triage import ferplus_votes_of

    votes = ferplus_votes_of(*preds)
    with st.container(key="ds_marks_box"):
        st.dataframe(store.to_frame(votes), hide_index=True, key="ds_marks")
    st.download_button("Download marks (CSV, by dataset row)", store.export_csv(ferplus_votes=votes),
                       file_name=f"{info.path.name}_triage.csv", mime="text/csv", key="ds_export")


# --------------------------------------------------------------------------- page
def main() -> None:
    st.title("Dataset")
    c1, c2, c3 = st.columns([3, 1, 2])
    with c1:  # any run with predictions: one without a model (imported predictions) maps its probabilities
        info = components.pick_model_run("ds_run", needs_model=False)
    if info is None:
        return
    rd = resources.run_data(info, components.data_path())
    with c2:
        split = components.pick_option("Split", rd.available_splits(), key="ds_split")
    with c3:
        colour = components.pick_option("Colour by", list(COLOURS), key="ds_colour", format_func=COLOURS.get)
    components.run_problem(info)
    model, no_model = None, None
    try:
        model = resources.loaded_run(info.path)
    except components.MODEL_ERRORS as exc:  # e.g. imported predictions: the map of their probabilities
        no_model = str(exc)
    classes = rd.classes
    run = str(info.path)
    try:
        pred = resources.predictions(rd, split)
        faces, face_index = resources.aligned_faces(rd, pred)
    except DataUnavailable as exc:
        st.info(f"No map for the {split} split of {info.label}: {exc}.")
        return

    slot = st.empty()

    def progress(frac: float, text: str) -> None:
        slot.progress(min(max(float(frac), 0.0), 1.0), text=f"Computing the map (once per run, split and "
                                                            f"data version): {text}")

    try:
        emb = (resources.embedding(rd, model, pred, progress=progress) if model is not None
               else resources.probability_embedding(rd, pred, no_model, progress=progress))
    except (DataUnavailable, *components.MODEL_ERRORS) as exc:  # incl. ModelUnavailable: no features, no probs
        slot.empty()
        st.info(f"No map for {info.label}: {exc}")
        return
    slot.empty()
    st.caption(f"{len(emb)} faces of the {split} split · {emb.method.upper()} of the {emb.source} · "
               f"predictions: {pred.source}" + (" · SynthFER (synthetic faces)" if rd.synthetic else ""))
    if emb.source.startswith("class probabilities"):
        st.info(f"This map places faces by the model's class probabilities, not by features: "
                f"{emb.source.removeprefix('class probabilities ')}.")

    kfold = st.toggle("Label issues from k-fold predictions (logistic regression on the map's features)",
                      key="ds_kfold",
                      help="Off: the run's own predictions for this split. On: out-of-sample probabilities "
                           "from 5-fold cross-validation of a linear model on the features (use it for the "
                           "training split, which the model has seen).")
    issues = None
    try:
        issues = resources.label_issues(rd, pred, emb, kfold=kfold)
    except ValueError as exc:
        st.warning(f"No label-issue ranking: {exc}")
    if issues is not None:
        n_flag = int(np.asarray(issues.flagged).sum())
        st.caption(f"Label issues ({issues.method}): {n_flag} of {len(pred)} faces flagged by "
                   f"cleanlab. {issues.note}")
        if not issues.out_of_sample:
            st.warning("These probabilities are not out-of-sample for this split, so the ranking "
                       "under-reports label issues; switch on k-fold predictions above.")
        if pred.ferplus_votes is not None:
            with st.expander("Ranking vs the FER+ crowd", expanded=False):
                ferplus_section(pred, classes, issues, int(info.config.get("seed", 0) or 0))
    score = None if issues is None else np.asarray(issues.score, dtype=np.float64)
    if colour == "issue" and score is None:
        st.info("No label-issue scores to colour by (see above); colouring by true label.")
        colour = "true"
    if colour == "ferplus" and pred.ferplus_votes is None:
        st.info("These faces have no FER+ votes (a FER2013 run trained with `--ferplus` has them); "
                "colouring by true label.")
        colour = "true"

    title = f"{split} split · coloured by {COLOURS[colour]}"

    def build() -> tuple[go.Figure, list[np.ndarray]]:
        groups = colour_groups(colour, pred, classes, score)
        fig = map_figure(emb.xy, pred, groups, hover_text(pred, classes, score), score, title)
        return fig, [g[1] for g in groups]

    # the ranking (hence the scores) is a function of the predictions, the map's features and kfold
    fig, curves = resources.memo_figure("dataset_map", (emb.key, pred.key, colour, kfold, title), build)
    map_col, face_col = st.columns([3, 2])
    with map_col:
        st.caption("Drag a box to select faces (the lasso is in the chart's tool bar); double-click clears. "
                   "Changing the colouring clears the selection.")
        st.plotly_chart(fig, on_select="rerun", selection_mode=("box", "lasso"), key=MAP_KEY, width="stretch",
                        config={"displaylogo": False})
    try:
        store = resources.triage_store(run, classes)
        marks = {int(mk["index"]): mk for mk in store.marks(split)}
    except ValueError as exc:
        st.error(str(exc))
        store, marks = None, {}

    chosen = selected(curves)
    if len(chosen):
        positions = chosen
        st.markdown(f"#### {len(chosen)} faces selected on the map"
                    + (" · *synthetic (SynthFER)*" if rd.synthetic else ""))
    elif issues is not None and np.asarray(issues.flagged).any():
        positions = np.asarray(issues.order)[:int(np.asarray(issues.flagged).sum())]
        st.markdown(f"#### No selection: the {len(positions)} faces flagged as likely label issues")
    else:
        positions = np.arange(len(pred))
        st.markdown(f"#### No selection: all {len(positions)} faces")

    issue_fn = None if issues is None else (lambda: (score, issues.note))
    triage = components.GalleryTriage(run=run, split=split, pick_key=PICK_KEY, marks=marks)
    shown = components.face_gallery(
        key=GALLERY_KEY, positions=positions, pred=pred, faces=faces, face_index=face_index, classes=classes,
        synthetic=rd.synthetic, reset_token=_token(run, split, positions), issue=issue_fn,
        default_sort="issue" if issues is not None else None, triage=triage if store is not None else None)

    with face_col:
        pos = components.picked_position(PICK_KEY, run, split)
        if pos is None or not 0 <= pos < len(pred):
            pos = shown[0] if shown else None
            if pos is not None:
                st.caption("The first face of the gallery; “Inspect” under any face shows it here.")
        if pos is not None and store is not None:
            components.face_inspector(key=INSPECT_KEY, run=run, pos=int(pos), pred=pred, faces=faces,
                                      face_index=face_index, classes=classes, model=model, store=store,
                                      issue_score=None if score is None else float(score[pos]))
    if store is not None:
        st.divider()
        triage_panel(info, rd, pred, store)


if __name__ == "__main__":
    main()
