"""Errors page: a clickable confusion matrix, the faces behind each cell, and two runs compared.

Why it is built this way: the useful question about a classifier is *which* faces it gets wrong
and whether the labels themselves are wrong. The confusion matrix is the index into that: clicking
cell (true=i, pred=j) opens a gallery of exactly those faces, sortable by confidence, by a
"likely mislabeled" score or by cleanlab's label-issue score (the Dataset page's ranking). A
plain ``go.Heatmap`` returns no click selection in Streamlit (streamlit#8760), so an invisible
square ``go.Scatter`` marker sits on every cell and ``st.plotly_chart(on_select="rerun",
selection_mode="points")`` reports the marker clicked.

Where predictions and faces come from, and how they are matched, is decided by
:class:`fer_core.rundata.RunData` through :mod:`dashboard.resources` (stored ``eval/<split>.npz``
or computed once; the run's own data, SynthFER regenerated, or the user's FER2013 copy joined by
row id): this page only shows the result or the reason there is none.

"Explain faces" (opt-in, off by default so browsing a cell stays instant) puts each gallery face's
attribution map for its *predicted* class under it: the same Captum maps as the Explain page, from
the same cached helper, one batched call per page of faces, on one colour scale shared by the page
so the faces can be compared (a per-face scale would make every map look equally confident).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard import components, resources
from dashboard.resources import DataUnavailable, FaceBatch, Predictions, RunData
from fer_core.explain.attribution import METHODS
from fer_core.explain.colour import color_limits
from fer_core.gallery import (cell_from_selection, cell_positions, comparable, default_cell,
                              difference_matrix, flip_positions, row_normalize)
from fer_core.runs import RunError, RunInfo

PICK_KEY = "err_pick"
CM_KEY = "err_cm"
CM_HEIGHT = 560
CM_MARGIN = dict(l=10, r=10, t=40, b=70)
MARKER_CURVE = 1  # trace number of the invisible cell markers (the heatmap is 0)
# Overlays in the gallery: attribution maps are heavy-tailed (a few pixels carry most of the
# magnitude), so a shared scale set by the single largest value leaves almost every overlay
# invisible. The top of the scale is the 98th percentile of the page's magnitudes instead
# (Captum's visualize_image_attr default, outlier_perc=2), and the map is blended more strongly
# than the Explain page's optional overlay since the plain face is shown right above it.
OVERLAY_PERCENTILE = 98.0
OVERLAY_ALPHA = 0.85


# --------------------------------------------------------------------------- figures
def confusion_figure(cm: np.ndarray, classes: Sequence[str], title: str = "") -> go.Figure:
    """Row-normalised heatmap (count and % in each cell, support per row) + one clickable marker per cell.

    Markers are row-major (``point_index = true * k + pred``), transparent, and turn translucent
    red when selected (the cell's numbers stay readable), so the figure itself never changes on a
    click (a changed figure would get a new widget id and drop the selection).
    """
    cm = np.asarray(cm, dtype=np.int64)
    k = len(classes)
    names = list(classes)
    pct = row_normalize(cm)
    support = cm.sum(1)
    text = [[f"{cm[i, j]}<br>{pct[i, j]:.0f}%" for j in range(k)] for i in range(k)]
    heat = go.Heatmap(z=pct, x=names, y=names, zmin=0, zmax=100, colorscale="Blues", text=text,
                      texttemplate="%{text}", hoverinfo="skip",
                      colorbar=dict(title=dict(text="% of row"), thickness=12))
    xs = [names[j] for i in range(k) for j in range(k)]
    ys = [names[i] for i in range(k) for j in range(k)]
    custom = [[int(cm[i, j]), float(pct[i, j]), int(support[i])] for i in range(k) for j in range(k)]
    plot_h = CM_HEIGHT - CM_MARGIN["t"] - CM_MARGIN["b"]
    size = max(8, int(0.92 * plot_h / max(k, 1)))
    markers = go.Scatter(
        x=xs, y=ys, mode="markers", customdata=custom, showlegend=False,
        marker=dict(symbol="square", size=size, color="rgba(0,0,0,0)", line=dict(width=0)),
        selected=dict(marker=dict(color="rgba(214,39,40,0.35)", opacity=1.0)),
        unselected=dict(marker=dict(opacity=0.0)),
        hovertemplate=("true <b>%{y}</b> → predicted <b>%{x}</b><br>%{customdata[0]} faces "
                       "(%{customdata[1]:.1f}% of %{customdata[2]})<br>click to see them<extra></extra>"),
    )
    fig = go.Figure([heat, markers])
    fig.update_layout(
        title=dict(text=title, font=dict(size=14)), height=CM_HEIGHT, margin=CM_MARGIN,
        hovermode="closest", hoverdistance=-1, clickmode="event+select", dragmode=False,
        xaxis=dict(title="predicted", side="bottom", constrain="domain", fixedrange=True,
                   categoryorder="array", categoryarray=names),
        yaxis=dict(title="true", autorange="reversed", fixedrange=True, categoryorder="array",
                   categoryarray=names, tickvals=names,
                   ticktext=[f"{c} (n={int(s)})" for c, s in zip(names, support)]),
    )
    return fig


def difference_figure(diff: np.ndarray, classes: Sequence[str]) -> go.Figure:
    """B − A counts: blue = more faces in that cell for B, red = fewer (diagonal blue = B better)."""
    names = list(classes)
    lim = max(1, int(np.abs(diff).max()))
    fig = go.Figure(go.Heatmap(
        z=diff, x=names, y=names, zmid=0, zmin=-lim, zmax=lim, colorscale="RdBu",
        text=[[f"{v:+d}" if v else "0" for v in row] for row in diff], texttemplate="%{text}",
        hovertemplate="true %{y} → predicted %{x}: B − A = %{z:+d}<extra></extra>",
        colorbar=dict(title=dict(text="B − A"), thickness=12)))
    fig.update_layout(height=460, margin=dict(l=10, r=10, t=30, b=60),
                      xaxis=dict(title="predicted", fixedrange=True),
                      yaxis=dict(title="true", autorange="reversed", fixedrange=True))
    return fig


def per_class_table(metrics: dict[str, Any]) -> pd.DataFrame:
    rows = [{"class": c, "precision": v["precision"], "recall": v["recall"], "F1": v["f1"],
             "support": v["support"]} for c, v in metrics["per_class"].items()]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- helpers
def selected_cell(classes: Sequence[str]) -> tuple[int, int] | None:
    """The cell clicked in the confusion matrix (read from the chart's selection state)."""
    return cell_from_selection(components.chart_selection(CM_KEY), classes, curve_number=MARKER_CURVE)


def explain_controls(key: str) -> str | None:
    """The opt-in "Explain faces" toggle and its method picker; the chosen method, or None when off."""
    c1, c2 = st.columns([1, 2])
    with c1:
        on = st.toggle("Explain faces", key=f"{key}_xp",
                       help="Show each face's attribution map for its predicted class under it "
                            "(the Explain page's maps, one batched computation per page of faces).")
    if not on:
        return None
    with c2:
        return str(st.selectbox("Attribution method", list(METHODS), format_func=lambda m: METHODS[m].label,
                                key=f"{key}_xp_method"))


def attribution_decorator(info: RunInfo, method: str, pred: Predictions) -> components.Decorator | None:
    """A gallery decorator that puts each face's ``method`` map (predicted class) under it.

    Returns None, with a plain warning, when the run's model cannot be loaded: the gallery then
    shows the faces alone (a warning, not an error: the page itself still works). The maps come
    from :func:`dashboard.resources.attributions` on the run's one shared ``LoadedRun`` (one
    batched call per page, cached by the page's pixels and targets) with the method's default
    options; the Explain page has the knobs.
    """
    try:
        model = resources.loaded_run(info.path)
    except (*components.MODEL_ERRORS, KeyError, TypeError, OSError) as exc:  # any reason: faces still show
        st.warning(f"Cannot explain these faces: the run's model could not be loaded ({exc}). "
                   "The faces are shown without maps.")
        return None
    spec = METHODS[method]
    for note in resources.method_notes(model, method, None):
        st.caption(note)

    def decorate(faces_u8: np.ndarray, shown: np.ndarray) -> tuple[list[np.ndarray], list[str]] | None:
        targets = tuple(int(t) for t in pred.pred[shown])
        try:
            maps = resources.attributions(model, FaceBatch(np.ascontiguousarray(faces_u8)), targets, method)
        except (RuntimeError, ValueError) as exc:  # incl. ModelUnavailable: no differentiable module
            st.warning(f"{spec.label} failed on these faces ({exc}); showing the faces only.")
            return None
        lim = color_limits(maps, shared=True, signed=spec.signed, percentile=OVERLAY_PERCENTILE)
        components.colorbar(float(lim[0, 0]), float(lim[0, 1]), spec.signed,
                            f"{spec.label} for each face's predicted class, one colour scale for the "
                            f"{len(maps)} faces on this page, in raw attribution units (values range "
                            f"{float(maps.min()):.3g} … {float(maps.max()):.3g}; the top "
                            f"{100 - OVERLAY_PERCENTILE:g}% of magnitudes are drawn at full colour)")
        images = components.faces_over_maps(faces_u8, maps, lim, signed=spec.signed, alpha=OVERLAY_ALPHA)
        return images, [f"map [{float(m.min()):.2g}, {float(m.max()):.2g}]" for m in maps]

    return decorate


def cell_gallery(pred: Predictions, faces: Any, face_index: np.ndarray | None,
                 classes: Sequence[str], cell: tuple[int, int], *, synthetic: bool, run_key: str,
                 info: RunInfo | None = None) -> list[int]:
    """The gallery of one confusion cell; returns the positions shown (used by tests and bench).

    With ``info`` (the run whose model explains the faces) and the faces at hand, an "Explain
    faces" toggle adds each face's attribution overlay under it.
    """
    i, j = cell
    pos = cell_positions(pred.label, pred.pred, i, j)
    kind = "correctly classified" if i == j else "misclassified"
    st.markdown(f"#### true **{classes[i]}** → predicted **{classes[j]}**: {len(pos)} faces ({kind})"
                + (" · *synthetic (SynthFER)*" if synthetic else ""))
    decorate = None
    if info is not None and faces is not None and face_index is not None and len(pos):
        method = explain_controls("err_gal")
        if method is not None:
            decorate = attribution_decorator(info, method, pred)
    shown = components.face_gallery(key="err_gal", positions=pos, pred=pred, faces=faces,
                                    face_index=face_index, classes=classes, synthetic=synthetic,
                                    reset_token=(run_key, i, j), decorate=decorate,
                                    issue=None if info is None else issue_scores(info, pred))
    if info is not None and faces is not None and face_index is not None and shown:
        triage_picker(info, pred, faces, face_index, classes, shown)
    return shown


def triage_picker(info: RunInfo, pred: Predictions, faces: Any, face_index: np.ndarray,
                  classes: Sequence[str], shown: Sequence[int]) -> None:
    """Inspect and mark one of the gallery's faces (the Dataset page's inspector and triage buttons;
    marks are saved in the run and listed and exported there). A picker under the gallery rather
    than a button per face keeps the cell gallery one image strip, which is what makes it quick."""
    rows = {int(pred.row[p]): int(p) for p in shown}
    row = st.selectbox("Inspect or mark a face of this page (row)", list(rows), index=None, key=PICK_KEY,
                       placeholder="choose a row to see its saliency map and triage buttons")
    if row is None:
        return
    try:
        store = resources.triage_store(str(info.path), classes)
    except ValueError as exc:  # a corrupt marks file: say which, never overwrite it
        st.error(str(exc))
        return
    model = None
    try:
        model = resources.loaded_run(info.path)
    except components.MODEL_ERRORS:  # the inspector says there is no saliency map
        model = None
    with st.container(border=True):
        components.face_inspector(key="err_face", run=str(info.path), pos=rows[row], pred=pred, faces=faces,
                                  face_index=face_index, classes=classes, model=model, store=store)
        st.caption("Marks are saved in the run; the Dataset page lists and exports them.")


def issue_scores(info: RunInfo, pred: Predictions) -> components.IssueScores:
    """The gallery's "label-issue score" sort: cleanlab's ranking of the whole split from the run's
    stored probabilities (computed only when that sort is chosen), with the note on whether those
    probabilities are out-of-sample for this split (the Dataset page also offers k-fold ones)."""
    def scores() -> tuple[np.ndarray, str]:
        res = resources.label_issues(resources.run_data(info, components.data_path()), pred)
        return np.asarray(res.score, dtype=np.float64), res.note

    return scores


# --------------------------------------------------------------------------- sections
def compare_section(info_a: RunInfo, pred_a: Predictions, info_b: RunInfo, split: str,
                    faces: Any, face_index: np.ndarray | None, classes: Sequence[str],
                    synthetic: bool) -> None:
    st.subheader(f"Compared with {info_b.label}")
    components.run_problem(info_b)
    reason = comparable(info_a.config, info_b.config, split)
    if reason:
        st.info(f"No difference matrix: {reason}. Both runs must be evaluated on the same faces.")
        return
    rd_b = resources.run_data(info_b, components.data_path())
    try:
        pred_b = resources.predictions(rd_b, split)
    except DataUnavailable as exc:
        st.info(f"No predictions of {info_b.label} on the {split} split: {exc}")
        return
    if not (len(pred_a) == len(pred_b) and np.array_equal(pred_a.index, pred_b.index)
            and np.array_equal(pred_a.label, pred_b.label)):
        st.info("No difference matrix: the two runs' stored predictions cover different faces "
                "(re-evaluate both on the same data).")
        return
    if tuple(rd_b.classes) != tuple(classes):
        st.info("No difference matrix: the runs use different class lists.")
        return
    diff = difference_matrix(pred_a.cm, pred_b.cm)
    acc_a, acc_b = pred_a.metrics["accuracy"], pred_b.metrics["accuracy"]
    c1, c2 = st.columns([3, 2])
    with c1:
        st.caption(f"Difference confusion matrix B − A (A = {info_a.label}, B = {info_b.label}). "
                   "Blue on the diagonal: B gets more of that class right.")
        st.plotly_chart(difference_figure(diff, classes), key="err_diff_chart", width="stretch")
    with c2:
        st.metric("accuracy of B (change vs A)", f"{acc_b:.1%}", delta=f"{(acc_b - acc_a) * 100:+.1f} pp")
        with st.expander("B − A as a table", expanded=True):
            with st.container(key="err_diff_box"):
                st.dataframe(pd.DataFrame(diff, index=list(classes), columns=list(classes)),
                             key="err_diff_table")
    flips = flip_positions(pred_a.label, pred_a.pred, pred_b.pred)
    labels = {"a_right_b_wrong": f"A right, B wrong ({len(flips['a_right_b_wrong'])})",
              "a_wrong_b_right": f"A wrong, B right ({len(flips['a_wrong_b_right'])})"}
    kind = st.radio("Flips", list(labels), format_func=labels.get, key="err_flip_kind", horizontal=True)
    st.caption("Captions show B's prediction; A's follows."
               + (" Faces are synthetic (SynthFER)." if synthetic else ""))

    def a_caption(pos: int) -> str:
        return f"A: {components.top_text(pred_a.probs[pos], classes, 1)}"

    components.face_gallery(key="err_flip", positions=flips[kind], pred=pred_b, faces=faces,
                            face_index=face_index, classes=classes, synthetic=synthetic,
                            extra_caption=a_caption,
                            reset_token=(str(info_a.path), str(info_b.path), split, kind))


def main() -> None:
    st.title("Errors")
    runs = resources.discover_runs()
    if not runs:
        components.no_runs_message()
        return
    usable = [r for r in runs if r.config]
    if not usable:
        for r in runs:
            components.run_problem(r)
        st.info("None of the runs found has a readable config.json.")
        return
    # A healthy run whose faces can be shown here, so the first view of this page is a clickable
    # gallery even on a machine without FER2013 (a shipped SynthFER run regenerates anywhere).
    ok = [r for r in usable if not r.error]
    default = components.default_run(ok or usable)
    c1, c2, c3 = st.columns([3, 1, 3])
    with c1:
        path_a = components.pick_run(usable, "err_run", "Run (A)", default=default)
    by = components.runs_by_path(usable)
    info = by[path_a]
    rd = resources.run_data(info, components.data_path())
    with c2:
        split = components.pick_option("Split", rd.available_splits(), key="err_split")
    with c3:
        path_b = components.pick_run(usable, "err_run_b", "Compare with run (B)", none_label="— none —",
                                     exclude=path_a)
    components.run_problem(info)

    classes = rd.classes
    synthetic = rd.synthetic
    if rd.data.note and rd.data.spec is not None:
        st.caption(rd.data.note)

    pred: Predictions | None = None
    problem = None
    try:
        pred = resources.predictions(rd, split)
    except DataUnavailable as exc:
        problem = str(exc)

    if pred is not None:
        metrics, cm, source = pred.metrics, pred.cm, pred.source
    else:
        try:
            stored = resources.run_eval(info.path, split)
        except RunError as exc:
            stored, problem = None, f"{problem}; {exc}"
        if stored is None:
            st.info(f"Nothing to show for the {split} split of {info.label}: {problem}.\n\n"
                    f"Evaluate it with `python -m fer_core evaluate {info.path} --split {split}`.")
            return
        metrics, cm, source = stored, np.asarray(stored["confusion"], dtype=np.int64), f"eval/{split}.json"
        st.info(f"Per-face predictions are unavailable ({problem}); showing the stored metrics only.")

    m1, m2, m3, m4 = st.columns(4)
    m1.metric("accuracy", f"{metrics['accuracy']:.1%}")
    m2.metric("macro-F1", f"{metrics.get('macro_f1', 0.0):.3f}")
    m3.metric("faces", f"{int(np.asarray(cm).sum()):,}")
    m4.metric("data", "synthetic" if synthetic else "FER2013 / file")
    st.caption(f"Predictions: {source}. Data: `{info.config.get('data', '?')}`"
               + (" — SynthFER, synthetic faces" if synthetic else ""))

    faces: Any = None
    face_index: np.ndarray | None = None
    if pred is not None:
        try:
            faces, face_index = resources.aligned_faces(rd, pred)
        except DataUnavailable as exc:
            st.info(f"Faces not shown: {exc}.")
            reevaluate_button(rd, pred, split)

    # A click, a sort or a page change reruns only this fragment, not the pickers above.
    st.fragment(matrix_section)(info, split, pred, cm, metrics, faces, face_index, classes, synthetic)

    if path_b:
        st.divider()
        if pred is None:
            st.info("Comparing runs needs per-face predictions of run A (see above).")
        else:
            st.fragment(compare_section)(info, pred, by[path_b], split, faces, face_index, classes,
                                         synthetic)


def reevaluate_button(rd: RunData, pred: Predictions, split: str) -> None:
    """Offer to overwrite stored predictions that do not match this machine's faces (e.g. the
    SynthFER generator changed since the run was evaluated)."""
    if rd.data.spec is None or not pred.source.startswith("stored") or not st.button(
            f"Re-evaluate this run on {rd.data.spec} (overwrites eval/{split}.*)", key="err_reeval"):
        return
    try:
        with st.spinner("Evaluating…"):
            resources.reevaluate(rd, split)
    except (DataUnavailable, *components.MODEL_ERRORS) as exc:
        st.warning(str(exc))
        return
    st.rerun()


def matrix_section(info: RunInfo, split: str, pred: Predictions | None, cm: np.ndarray,
                   metrics: dict[str, Any], faces: Any, face_index: np.ndarray | None,
                   classes: Sequence[str], synthetic: bool) -> None:
    """The clickable confusion matrix, per-class metrics and the gallery of the selected cell."""
    left, right = st.columns([3, 2])
    with left:
        title = f"{info.label} · {split} (click a cell)"
        fig = resources.memo_figure("confusion", (np.asarray(cm).tobytes(), tuple(classes), title),
                                    lambda: confusion_figure(cm, classes, title=title))
        st.plotly_chart(fig, on_select="rerun", selection_mode="points", key=CM_KEY,
                        width="stretch", config={"displayModeBar": False})
    with right:
        st.caption("Per-class precision / recall / F1")
        st.dataframe(per_class_table(metrics), hide_index=True, key="err_per_class",
                     column_config={c: st.column_config.NumberColumn(c, format="%.3f")
                                    for c in ("precision", "recall", "F1")})
    if pred is None:
        return
    clicked = selected_cell(classes)
    cell = clicked if clicked is not None else default_cell(cm)
    if clicked is None:
        st.caption("Showing the most frequent confusion — click any cell of the matrix to browse "
                   "its faces (diagonal cells: the correctly classified ones).")
    cell_gallery(pred, faces, face_index, classes, cell, synthetic=synthetic,
                 run_key=f"{info.path}|{split}", info=info)


if __name__ == "__main__":
    main()
