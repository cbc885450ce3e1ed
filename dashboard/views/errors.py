"""Errors page: a clickable confusion matrix, the faces behind each cell, and two runs compared.

Why it is built this way: the useful question about a classifier is *which* faces it gets wrong
and whether the labels themselves are wrong. The confusion matrix is the index into that: clicking
cell (true=i, pred=j) opens a gallery of exactly those faces, sortable by confidence or by a
"likely mislabeled" score. A plain ``go.Heatmap`` returns no click selection in Streamlit
(streamlit#8760), so an invisible square ``go.Scatter`` marker sits on every cell and
``st.plotly_chart(on_select="rerun", selection_mode="points")`` reports the marker clicked.

Predictions come from the run's ``eval/<split>.npz`` (or are computed once and cached); faces come
from the run's own data spec (SynthFER regenerates anywhere) or the user's FER2013 copy.

"Explain faces" (opt-in, off by default so browsing a cell stays instant) puts each gallery face's
attribution map for its *predicted* class under it: the same Captum maps as the Explain page, from
the same cached helper, one batched call per page of faces, on one colour scale shared by the page
so the faces can be compared (a per-face scale would make every map look equally confident).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard import components, resources
from dashboard.resources import DataUnavailable
from fer_core.checkpoint import CheckpointError
from fer_core.explain.attribution import METHODS, color_limits
from fer_core.gallery import (cell_from_selection, cell_positions, comparable, default_cell,
                              difference_matrix, flip_positions, row_normalize)
from fer_core.runs import RunError, RunInfo

CM_KEY = "err_cm"
CM_HEIGHT = 560
CM_MARGIN = dict(l=10, r=10, t=40, b=70)
MARKER_CURVE = 1  # trace number of the invisible cell markers (the heatmap is 0)
SPLITS = ("test", "val", "train")
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


# --------------------------------------------------------------------------- data helpers
def split_options(info: RunInfo) -> list[str]:
    present = set((info.config.get("data_summary") or {}).keys())
    present |= {s for s in SPLITS if (info.path / "eval" / f"{s}.json").exists()
                or (info.path / "eval" / f"{s}.npz").exists()}
    return [s for s in SPLITS if s in present] or ["test"]


def selected_cell(classes: Sequence[str]) -> tuple[int, int] | None:
    """The cell clicked in the confusion matrix (read from the chart's selection state)."""
    state = st.session_state.get(CM_KEY)
    sel = None
    if state is not None:
        try:
            sel = state["selection"]
        except (KeyError, TypeError):
            sel = None
    return cell_from_selection(sel, classes, curve_number=MARKER_CURVE)


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


def attribution_decorator(run: Path, method: str, bundle: dict[str, Any]) -> components.Decorator | None:
    """A gallery decorator that puts each face's ``method`` map (predicted class) under it.

    Returns None, with a plain warning, when the run's model cannot be loaded: the gallery then
    shows the faces alone. The maps come from :func:`dashboard.resources.explain_maps` (one batched
    ``explain`` call per page, cached by the page's pixels and targets) with the method's default
    options; the Explain page has the knobs.
    """
    try:
        em = resources.explain_model(run)
    except (CheckpointError, RunError, RuntimeError, ValueError, KeyError, TypeError, OSError) as exc:
        st.warning(f"Cannot explain these faces: the run's model could not be loaded ({exc}). "
                   "The faces are shown without maps.")
        return None
    spec = METHODS[method]
    for note in resources.explain_notes(str(run), em.stamp, method, None):
        st.caption(note)

    def decorate(faces_u8: np.ndarray, shown: np.ndarray) -> tuple[list[np.ndarray], list[str]] | None:
        targets = tuple(int(t) for t in np.asarray(bundle["pred"])[shown])
        key = "err:" + hashlib.sha1(np.ascontiguousarray(faces_u8).tobytes()).hexdigest()
        try:
            maps = resources.explain_maps(str(run), em.stamp, method, (), key, targets, faces_u8)
        except (RuntimeError, ValueError) as exc:
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


def cell_gallery(bundle: dict[str, Any], faces: Any, face_index: np.ndarray | None,
                 classes: Sequence[str], cell: tuple[int, int], *, synthetic: bool, run_key: str,
                 run: Path | None = None) -> list[int]:
    """The gallery of one confusion cell; returns the positions shown (used by tests and bench).

    With ``run`` (whose checkpoint explains the faces) and the faces at hand, an "Explain faces"
    toggle adds each face's attribution overlay under it.
    """
    i, j = cell
    pos = cell_positions(bundle["label"], bundle["pred"], i, j)
    kind = "correctly classified" if i == j else "misclassified"
    st.markdown(f"#### true **{classes[i]}** → predicted **{classes[j]}**: {len(pos)} faces ({kind})"
                + (" · *synthetic (SynthFER)*" if synthetic else ""))
    decorate = None
    if run is not None and faces is not None and face_index is not None and len(pos):
        method = explain_controls("err_gal")
        if method is not None:
            decorate = attribution_decorator(Path(run), method, bundle)
    return components.face_gallery(key="err_gal", positions=pos, bundle=bundle, faces=faces,
                                   face_index=face_index, classes=classes, synthetic=synthetic,
                                   reset_token=(run_key, i, j), decorate=decorate)


# --------------------------------------------------------------------------- sections
def compare_section(info_a: RunInfo, bundle_a: dict[str, Any], info_b: RunInfo, split: str,
                    faces: Any, face_index: np.ndarray | None, classes: Sequence[str],
                    synthetic: bool) -> None:
    st.subheader(f"Compared with {info_b.label}")
    components.run_problem(info_b)
    reason = comparable(info_a.config, info_b.config, split)
    if reason:
        st.info(f"No difference matrix: {reason}. Both runs must be evaluated on the same faces.")
        return
    data_b = resources.resolve_data(info_b.config, components.data_path())
    try:
        bundle_b = resources.predictions_for(info_b, split, data_b)
    except DataUnavailable as exc:
        st.info(f"No predictions of {info_b.label} on the {split} split: {exc}")
        return
    if not (len(bundle_a["index"]) == len(bundle_b["index"])
            and np.array_equal(bundle_a["index"], bundle_b["index"])
            and np.array_equal(bundle_a["label"], bundle_b["label"])):
        st.info("No difference matrix: the two runs' stored predictions cover different faces "
                "(re-evaluate both on the same data).")
        return
    if tuple(resources.classes_of(info_b.config)) != tuple(classes):
        st.info("No difference matrix: the runs use different class lists.")
        return
    diff = difference_matrix(bundle_a["cm"], bundle_b["cm"])
    acc_a, acc_b = bundle_a["metrics"]["accuracy"], bundle_b["metrics"]["accuracy"]
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
    flips = flip_positions(bundle_a["label"], bundle_a["pred"], bundle_b["pred"])
    labels = {"a_right_b_wrong": f"A right, B wrong ({len(flips['a_right_b_wrong'])})",
              "a_wrong_b_right": f"A wrong, B right ({len(flips['a_wrong_b_right'])})"}
    kind = st.radio("Flips", list(labels), format_func=labels.get, key="err_flip_kind", horizontal=True)
    st.caption("Captions show B's prediction; A's follows."
               + (" Faces are synthetic (SynthFER)." if synthetic else ""))

    def a_caption(pos: int) -> str:
        return f"A: {components.top_text(bundle_a['probs'][pos], classes, 1)}"

    components.face_gallery(key="err_flip", positions=flips[kind], bundle=bundle_b, faces=faces,
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
    # Prefer a shipped SynthFER run: its faces regenerate anywhere, so the first view of this page
    # shows a clickable gallery even on a machine without FER2013.
    ok = [r for r in usable if not r.error]
    default = next((str(r.path) for r in ok if resources.is_shipped(r) and r.synthetic),
                   next((str(r.path) for r in ok if resources.is_shipped(r)),
                        str(ok[0].path) if ok else str(usable[0].path)))
    c1, c2, c3 = st.columns([3, 1, 3])
    with c1:
        path_a = components.pick_run(usable, "err_run", "Run (A)", default=default)
    by = components.runs_by_path(usable)
    info = by[path_a]
    with c2:
        split = components.pick_option("Split", split_options(info), key="err_split")
    with c3:
        path_b = components.pick_run(usable, "err_run_b", "Compare with run (B)", none_label="— none —",
                                     exclude=path_a)
    components.run_problem(info)

    classes = resources.classes_of(info.config)
    data = resources.resolve_data(info.config, components.data_path())
    synthetic = data.synthetic or info.synthetic
    if data.note and data.spec is not None:
        st.caption(data.note)

    bundle, problem = None, None
    try:
        bundle = resources.predictions_for(info, split, data)
    except DataUnavailable as exc:
        problem = str(exc)

    if bundle is not None:
        metrics, cm = bundle["metrics"], bundle["cm"]
        source = bundle["source"]
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
    if bundle is not None:
        faces, face_index, face_problem = resources.aligned_faces(bundle, data)
        if face_problem:
            st.info(f"Faces not shown: {face_problem}.")
            if data.spec is not None and bundle["source"].startswith("stored") and st.button(
                    f"Re-evaluate this run on {data.spec} (overwrites eval/{split}.*)", key="err_reeval"):
                try:
                    with st.spinner("Evaluating…"):
                        resources.reevaluate(info, split, data)
                    st.rerun()
                except DataUnavailable as exc:
                    st.warning(str(exc))

    # A click, a sort or a page change reruns only this fragment, not the pickers above.
    st.fragment(matrix_section)(info, split, bundle, cm, metrics, faces, face_index, classes, synthetic)

    if path_b:
        st.divider()
        if bundle is None:
            st.info("Comparing runs needs per-face predictions of run A (see above).")
        else:
            st.fragment(compare_section)(info, bundle, by[path_b], split, faces, face_index, classes,
                                         synthetic)


def matrix_section(info: RunInfo, split: str, bundle: dict[str, Any] | None, cm: np.ndarray,
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
    if bundle is None:
        return
    clicked = selected_cell(classes)
    cell = clicked if clicked is not None else default_cell(cm)
    if clicked is None:
        st.caption("Showing the most frequent confusion — click any cell of the matrix to browse "
                   "its faces (diagonal cells: the correctly classified ones).")
    cell_gallery(bundle, faces, face_index, classes, cell, synthetic=synthetic,
                 run_key=f"{info.path}|{split}", run=info.path)


if __name__ == "__main__":
    main()
