"""Explain page: attribution maps for a page of faces, contrastive views, per-cell means, and a
model-randomisation sanity check.

Why it is built this way: a saliency map is only worth looking at next to the face, with its value
range visible, on a colour scale that can be shared across faces/methods/runs to compare them, and
after checking that it depends on the model at all (Adebayo et al. 2018: some methods produce the
same edge-detector-like maps for a randomly initialised network). All the math lives in
:mod:`fer_core.explain.attribution`, reached through the run's one
:class:`~fer_core.model.LoadedRun`; this page picks faces and options, calls the cached functions
in :mod:`dashboard.resources` (one batched Captum call per page of faces) and draws.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from dashboard import components, resources
from dashboard.resources import DataUnavailable, FaceBatch, Predictions, RunData
from fer_core.data.decode import image_to_face
from fer_core.explain.attribution import BASELINES, METHODS
from fer_core.explain.colour import color_limits, colorize
from fer_core.gallery import cell_positions, default_cell, page_bounds, upscale
from fer_core.model import HOOKED_METHODS, LoadedRun
from fer_core.runs import RunInfo

PER_PAGE = 24
ZOOM = 3
TILE_COLUMNS = 4
SOURCES = {"split": "A page of a split", "cell": "A confusion cell", "upload": "Upload images"}
TARGETS = {"pred": "predicted class", "true": "true class", "class": "a class of my choice"}
BASELINE_LABELS = {"black": "black pixels", "mean": "dataset mean face", "blurred": "blurred face"}


# --------------------------------------------------------------------------- inputs
def decode_uploads(files: Sequence[Any]) -> tuple[np.ndarray, list[str], list[str]]:
    """Uploaded files -> (N×48×48 uint8 faces, their names, error messages for the rest)."""
    faces, names, errors = [], [], []
    for f in files or []:
        name = getattr(f, "name", "upload")
        try:
            if hasattr(f, "seek"):
                f.seek(0)
            faces.append(image_to_face(f))
            names.append(name)
        except Exception as exc:  # PIL.UnidentifiedImageError, truncated files, odd modes
            errors.append(f"**{name}** is not an image this page can read ({type(exc).__name__}). "
                          "Upload a PNG, JPEG, BMP, WebP or TIFF picture of a face.")
    arr = np.stack(faces) if faces else np.zeros((0, 48, 48), np.uint8)
    return arr, names, errors


class Faces:
    """The faces on screen: a keyed pixel batch (what the caches take) plus what is known about
    the faces (labels are -1 for uploads)."""

    def __init__(self, batch: FaceBatch, labels: np.ndarray, preds: np.ndarray, probs: np.ndarray,
                 names: list[str], uploaded: bool = False) -> None:
        self.batch, self.labels, self.preds, self.probs, self.names = batch, labels, preds, probs, names
        self.uploaded = uploaded

    @property
    def x(self) -> np.ndarray:
        return self.batch.x

    def __len__(self) -> int:
        return len(self.batch)


def _load_split(rd: RunData, split: str) -> tuple[Predictions | None, Any, np.ndarray | None, str | None]:
    """(predictions, FaceSet, each prediction's face position, problem) for a split of the run's data."""
    try:
        pred = resources.predictions(rd, split)
        fs, index = resources.aligned_faces(rd, pred)
    except DataUnavailable as exc:
        return None, None, None, str(exc)
    return pred, fs, index, None


def _page(n: int, key: str, reset: Any) -> tuple[int, int]:
    token = f"{key}_token"
    if st.session_state.get(token) != reset:
        st.session_state[token] = reset
        st.session_state[key] = 1
    n_pages = page_bounds(n, 1, PER_PAGE)[2]
    if int(st.session_state.get(key, 1)) > n_pages:
        st.session_state[key] = n_pages
    page = int(st.number_input(f"Page (of {n_pages}; {PER_PAGE} faces each)", min_value=1,
                               max_value=n_pages, step=1, key=key))
    start, stop, _ = page_bounds(n, page, PER_PAGE)
    return start, stop


def pick_faces(info: RunInfo, model: LoadedRun, rd: RunData,
               classes: Sequence[str]) -> tuple[Faces | None, dict[str, Any]]:
    """The faces to explain (or None with a message shown), plus split context for cell means."""
    c1, c2, c3, c4, c5 = st.columns([3, 1, 2, 2, 2])
    with c1:
        source = st.radio("Faces", list(SOURCES), format_func=SOURCES.get, key="xp_source", horizontal=True)
    ctx: dict[str, Any] = {}
    if source == "upload":
        files = st.file_uploader("Face images (48×48 or larger; converted to grey and resized)",
                                 accept_multiple_files=True, key="xp_upload")
        x, names, errors = decode_uploads(files or [])
        for e in errors:
            st.error(e)
        if not len(x):
            st.info("Upload one or more face images to explain them.")
            return None, ctx
        batch = resources.faces_batch(x)
        probs = resources.probs(model, batch)
        st.caption("Uploaded faces have no true label: the *true class* target is unavailable.")
        return Faces(batch, np.full(len(x), -1), probs.argmax(1), probs, names, uploaded=True), ctx

    with c2:
        split = components.pick_option("Split", rd.available_splits(), "xp_split")
    pred, fs, index, problem = _load_split(rd, split)
    if pred is None:
        st.info(f"No faces of the {split} split to show: {problem}")
        return None, ctx
    ctx = {"pred": pred, "split": split}
    if source == "split":
        with c3:
            wrong = st.checkbox("Only misclassified faces", key="xp_wrong")
        pos = np.flatnonzero(pred.label != pred.pred) if wrong else np.arange(len(pred))
        reset: Any = (str(info.path), split, wrong)
        page_key = "xp_page"
    else:
        cm = pred.cm
        d_true, d_pred = default_cell(cm)
        k = len(classes)
        with c3:
            t = st.selectbox("True class", range(k), index=d_true, key="xp_cell_true",
                             format_func=lambda i: f"{classes[i]} ({int(cm[i].sum())} faces)")
        with c4:
            p = st.selectbox("Predicted class", range(k), index=d_pred, key="xp_cell_pred",
                             format_func=lambda j: f"{classes[j]} ({int(cm[t, j])} in this cell)")
        pos = cell_positions(pred.label, pred.pred, t, p)
        ctx["cell"] = (int(t), int(p))
        reset = (str(info.path), split, int(t), int(p))
        page_key = "xp_cell_page"
    if len(pos) == 0:
        st.info("No faces here.")
        return None, ctx
    with c5:
        start, stop = _page(len(pos), page_key, reset)
    shown = pos[start:stop]
    batch = FaceBatch(fs.x[index[shown]].numpy())
    names = [f"row {int(r)}" for r in pred.row[shown]]
    return Faces(batch, pred.label[shown], pred.pred[shown], pred.probs[shown], names), ctx


# --------------------------------------------------------------------------- options
def method_options(model: LoadedRun) -> tuple[str, dict[str, Any]]:
    """Method picker + its options as a plain dict (hashable values only)."""
    c1, c2 = st.columns([1, 3])
    with c1:
        method = st.selectbox("Method", list(METHODS), format_func=lambda m: METHODS[m].label, key="xp_method")
        st.caption(f"{METHODS[method].description} · Captum `{METHODS[method].captum}`")
    opts: dict[str, Any] = {}
    with c2:
        if method in ("integrated_gradients", "occlusion"):
            opts["baseline"] = st.radio("Baseline", list(BASELINES), format_func=BASELINE_LABELS.get,
                                        key="xp_baseline", horizontal=True,
                                        help="black = black pixels after the model's preprocessing")
        if method == "integrated_gradients":
            opts["n_steps"] = int(st.slider("Integration steps", 8, 128, 32, step=8, key="xp_ig_steps"))
        elif method == "smoothgrad":
            opts["nt_samples"] = int(st.slider("Noisy samples", 4, 64, 16, step=4, key="xp_sg_samples"))
            opts["noise"] = float(st.slider("Noise σ (fraction of the pixel range)", 0.05, 0.5, 0.15,
                                            step=0.05, key="xp_sg_noise"))
        elif method == "gradcam" and not model.layer_reason:
            layers = resources.gradcam_layers(model)
            names = [li.name for li in layers]
            default = model.default_gradcam_layer()
            by = {li.name: li for li in layers}
            layer = st.selectbox("Layer (feature-map size)", names,
                                 index=names.index(default) if default in names else len(names) - 1,
                                 format_func=lambda n: by[n].label + (" · default" if n == default else ""),
                                 key="xp_layer")
            opts["layer"] = layer
            if hasattr(model.model, "layer_label"):  # an ensemble: say whose layer it is
                st.caption(f"Grad-CAM of {model.model.layer_label(layer)}")
            if by[layer].coarse:
                st.warning(by[layer].note, icon="⚠️")
            else:
                st.caption(f"{layer}: {by[layer].height}×{by[layer].width} map, upsampled bilinearly to the face.")
        elif method == "occlusion":
            opts["window"] = int(st.slider("Window (px)", 4, 16, 8, step=2, key="xp_occ_window"))
            opts["stride"] = int(st.slider("Stride (px)", 2, 8, 4, step=2, key="xp_occ_stride"))
    for note in ([] if method in HOOKED_METHODS and model.layer_reason
                 else resources.method_notes(model, method, opts.get("layer"))):
        st.info(note)
    return method, opts


def pick_targets(faces: Faces, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Targets per face, plus the second targets of the contrastive view (or None)."""
    c1, c2, c3 = st.columns([2, 2, 2])
    labeled = bool((faces.labels >= 0).all())
    with c1:
        options = [t for t in TARGETS if labeled or t != "true"]
        target = st.radio("Explain the", options, format_func=TARGETS.get, key="xp_target", horizontal=True)
    with c3:
        contrast = st.toggle("Contrastive: predicted vs " + ("true" if labeled else "chosen") + " class",
                             key="xp_contrast",
                             help="Attribution for the predicted class next to the true class "
                                  "(“why sad and not fear?”)")
    with c2:
        cls = int(st.selectbox("Class", range(len(classes)), format_func=lambda i: classes[i], key="xp_class",
                               disabled=not (target == "class" or (contrast and not labeled))))
    t = {"pred": faces.preds, "true": faces.labels}.get(target, np.full(len(faces), cls))
    if contrast:
        other = faces.labels if labeled else np.full(len(faces), cls)
        return faces.preds.astype(np.int64), other.astype(np.int64), "contrast"
    return np.asarray(t, dtype=np.int64), None, target


# --------------------------------------------------------------------------- drawing
def tiles(faces: Faces, maps_list: list[np.ndarray], limits_list: list[np.ndarray], signed: bool,
          headers: list[str], classes: Sequence[str], overlay: bool, extra: list[str] | None = None) -> None:
    """One tile per face: the face, then each map (coloured with its limits), side by side."""
    gap = np.full((48 * ZOOM, 4, 3), 255, np.uint8)
    cols = st.columns(TILE_COLUMNS)
    for i in range(len(faces)):
        face = upscale(faces.x[i], ZOOM)
        parts = [np.repeat(face[..., None], 3, -1)]
        ranges = []
        for maps, lim, head in zip(maps_list, limits_list, headers):
            rgb = colorize(maps[i], lim[i], signed=signed, faces=faces.x[i] if overlay else None)
            parts += [gap, upscale(rgb.transpose(2, 0, 1), ZOOM).transpose(1, 2, 0)]
            ranges.append(f"{head}[{maps[i].min():.2g}, {maps[i].max():.2g}]")
        lab, pr = int(faces.labels[i]), int(faces.preds[i])
        cap = f"{faces.names[i]} · pred {classes[pr]} {faces.probs[i][pr]:.2f}"
        if lab >= 0:
            cap += f" · true {classes[lab]}"
        cap += " · range " + " ".join(ranges)
        if extra:
            cap += " · " + extra[i]
        with cols[i % TILE_COLUMNS]:
            st.image(np.concatenate(parts, 1), caption=cap, clamp=True)


def detail_figure(face: np.ndarray, maps: list[np.ndarray], titles: list[str], lim: np.ndarray,
                  signed: bool) -> go.Figure:
    """A face and its maps as plotly heatmaps with a colour bar in the maps' raw units."""
    fig = make_subplots(rows=1, cols=1 + len(maps), subplot_titles=["face", *titles], horizontal_spacing=0.03)
    fig.add_trace(go.Heatmap(z=face, colorscale="gray", showscale=False, hovertemplate="%{z}<extra></extra>"),
                  1, 1)
    for j, m in enumerate(maps):
        fig.add_trace(go.Heatmap(z=m, coloraxis="coloraxis", hovertemplate="%{z:.3g}<extra></extra>"), 1, j + 2)
    fig.update_layout(coloraxis=dict(colorscale="RdBu_r" if signed else "Inferno", cmin=float(lim[0]),
                                     cmax=float(lim[1]), colorbar=dict(thickness=12)),
                      height=300, margin=dict(l=10, r=10, t=30, b=10))
    fig.update_yaxes(autorange="reversed", scaleanchor="x", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    return fig


# --------------------------------------------------------------------------- sections
def sanity_section(model: LoadedRun, faces: Faces, method: str, opts_items: tuple, targets: np.ndarray,
                   mean_face: Any, classes: Sequence[str], shared: bool, overlay: bool) -> None:
    n_all = len(model.parameter_layers())
    c1, c2 = st.columns([2, 1])
    with c1:
        n = int(st.slider("Randomise the top … layers (cascading from the output)", 1, n_all, n_all,
                          key="xp_sanity_layers"))
    with c2:
        seed = int(st.number_input("Seed", 0, 10_000, 0, key="xp_sanity_seed"))
    targets_t = tuple(int(t) for t in targets)
    res = resources.sanity(model, faces.batch, targets_t, method, opts_items, n, seed, mean_face)
    sim = np.asarray(res.similarity)
    mean_sim = res.mean_similarity
    st.metric("Spearman rank correlation, original vs randomised (mean over faces)",
              "n/a" if not np.isfinite(mean_sim) else f"{mean_sim:.2f}")
    st.caption(f"Randomised {len(res.layers)} layer(s): {', '.join(res.layers)}. Close to 1 = the map "
               "barely changed when the learned weights were destroyed: it is not explaining the model. "
               "Close to 0 = it depends on what the model learned (what a faithful map should do).")
    maps = [res.original, res.randomized]
    signed = METHODS[method].signed
    lims = [color_limits(np.concatenate(maps), shared=shared, signed=signed)[:len(faces)],
            color_limits(np.concatenate(maps), shared=shared, signed=signed)[len(faces):]]
    tiles(faces, maps, lims, signed, ["orig ", "rand "], classes, overlay,
          extra=[f"ρ={s:.2f}" if np.isfinite(s) else "ρ=n/a" for s in sim])
    if st.button("Cascade: similarity as layers are randomised one by one", key="xp_cascade"):
        steps = resources.cascade(model, faces.batch, targets_t, method, opts_items, seed, mean_face)
        fig = go.Figure(go.Scatter(x=[f"{k}: {name}" for k, name, _ in steps], y=[s for _, _, s in steps],
                                   mode="lines+markers"))
        fig.update_layout(height=320, yaxis=dict(title="mean Spearman ρ", range=[-1, 1]),
                          xaxis=dict(title="randomised down to"), margin=dict(l=10, r=10, t=20, b=10))
        st.plotly_chart(fig, key="xp_cascade_chart")


def cell_means_section(model: LoadedRun, rd: RunData, ctx: dict[str, Any], method: str, opts_items: tuple,
                       mean_face: Any, classes: Sequence[str], synthetic: bool) -> None:
    pred: Predictions = ctx["pred"]
    c1, c2, c3 = st.columns(3)
    with c1:
        if "cell" in ctx:
            scope = st.radio("Cells", ["this", "all"], key="xp_cells_scope", horizontal=True,
                             format_func={"this": "the chosen cell", "all": "every cell"}.get)
        else:
            scope = "all"
            st.caption("Every cell of the confusion matrix (choose *A confusion cell* above for one).")
    with c2:
        target = st.radio("Map of the", ["pred", "true"], key="xp_cells_target", horizontal=True,
                          format_func={"pred": "cell's predicted class", "true": "cell's true class"}.get)
    with c3:
        cap = int(st.slider("Faces per cell (at most)", 4, 128, 32, step=4, key="xp_cells_max"))
    k = len(classes)
    cells = [ctx["cell"]] if scope == "this" else [(i, j) for i in range(k) for j in range(k)]
    if scope == "all" and not st.toggle(f"Compute all {len(cells)} cells (up to {cap} faces each)",
                                        key="xp_cells_go"):
        return
    res = resources.cell_maps(model, resources.split_faces(rd, pred), pred, method, opts_items, tuple(cells),
                              target, cap, mean_face)
    signed = METHODS[method].signed
    st.caption("Each face's map is scaled to max |value| 1 before averaging. Left: the cell's mean face; "
               "right: its mean map." + (" Faces are synthetic (SynthFER)." if synthetic else ""))
    if len(res) == 1:
        r = res[0]
        if not r.used:
            st.info("This cell is empty.")
            return
        lim = color_limits(r.mean_map, shared=False, signed=signed)[0]
        st.plotly_chart(detail_figure(r.mean_face * 255, [r.mean_map],
                                      [f"mean map ({r.used} of {r.count} faces)"], lim, signed),
                        key="xp_cell_mean_fig")
        return
    maps = np.stack([r.mean_map for r in res])
    lims = color_limits(maps, shared=True, signed=signed)
    h, w = maps.shape[-2:]
    gap = 6
    grid = np.full((k * (h + gap), k * (2 * w + gap), 3), 255, np.uint8)
    for r, lim in zip(res, lims):
        if not r.used:
            continue
        y, x = r.true * (h + gap), r.pred * (2 * w + gap)
        grid[y:y + h, x:x + w] = (r.mean_face * 255).astype(np.uint8)[..., None]
        grid[y:y + h, x + w:x + 2 * w] = colorize(r.mean_map, lim, signed=signed)
    st.image(upscale(grid.transpose(2, 0, 1), 2).transpose(1, 2, 0),
             caption="Rows: true class, columns: predicted class, both in the order "
                     + ", ".join(classes) + ". Each cell: mean face | mean map; blank = no faces.")
    counts = {f"{classes[r.true]}→{classes[r.pred]}": r.count for r in res if r.count}
    st.caption("Faces per cell: " + ", ".join(f"{c} {n}" for c, n in counts.items()))
    components.colorbar(float(lims[0][0]), float(lims[0][1]), signed,
                        "Shared scale of the mean maps (max |value| 1 per face)")


# --------------------------------------------------------------------------- page
def main() -> None:
    st.title("Explain")
    st.caption("Attribution maps (Captum) for the faces a run classifies: which pixels drive the score "
               "of a class. A whole page of faces is one batched call.")
    info = components.pick_model_run("xp_run")
    if info is None:
        return
    model = components.model_or_error(info)
    if model is None:
        return
    if model.gradient_reason is not None:
        st.info(f"Attribution maps need the model's gradients, and {info.label} has no torch module here: "
                f"{model.gradient_reason.rstrip('.')}.")
        return
    rd = resources.run_data(info, components.data_path())
    classes = model.classes
    synthetic = info.synthetic

    faces, ctx = pick_faces(info, model, rd, classes)
    method, opts = method_options(model)
    if faces is None:
        return
    if synthetic and not faces.uploaded:
        st.caption("These are **synthetic** faces (SynthFER), not photographs.")

    mean_face = None
    if opts.get("baseline") == "mean":
        if "pred" in ctx:
            mean_face = resources.data_mean_face(rd)
        elif not model.preprocess.normalize:
            st.warning("The mean-face baseline needs the run's dataset (pick faces from a split) for a model "
                       "trained without normalisation; using black pixels instead.")
            opts["baseline"] = "black"
    opts_items = tuple(sorted(opts.items()))

    targets, other, target_kind = pick_targets(faces, classes)
    c1, c2, c3 = st.columns(3)
    with c1:
        scale = st.radio("Colour scale", ["image", "shared"], key="xp_scale", horizontal=True,
                         format_func={"image": "per image", "shared": "shared across the faces shown"}.get)
    with c2:
        overlay = st.toggle("Overlay on the face", key="xp_overlay", value=False)
    with c3:
        sanity = st.toggle("Sanity check (randomised weights)", key="xp_sanity")
    shared, signed = scale == "shared", METHODS[method].signed

    all_targets = targets if other is None else np.concatenate([targets, other])
    if method in HOOKED_METHODS and model.layer_reason:
        st.info(f"{METHODS[method].label} is unavailable for {info.label}: {model.layer_reason.rstrip('.')}. "
                "Saliency, Integrated Gradients, SmoothGrad and Occlusion work.")
        return
    maps = resources.attributions(model, faces.batch, tuple(int(t) for t in all_targets), method, opts_items,
                                  mean_face)
    views = [maps[:len(faces)]] if other is None else [maps[:len(faces)], maps[len(faces):]]
    lim_all = color_limits(np.concatenate(views), shared=shared, signed=signed)
    lims = [lim_all[i * len(faces):(i + 1) * len(faces)] for i in range(len(views))]
    if other is None:
        headers = [""]
        what = {"pred": "predicted class", "true": "true class"}.get(target_kind, "chosen class")
        st.markdown(f"**{METHODS[method].label}** for the {what}")
    else:
        headers = ["pred ", "other "]
        st.markdown(f"**{METHODS[method].label}** — left map: predicted class, right map: "
                    + ("true class" if (faces.labels >= 0).all() else "chosen class")
                    + " (“why this and not that?”)")
    if shared:
        components.colorbar(float(lim_all[0, 0]), float(lim_all[0, 1]), signed,
                            "Shared colour scale (raw attribution units)")
    else:
        st.caption("Per-image colour scale: each map spans its own range (shown under it); "
                   + ("white = 0, red > 0, blue < 0." if signed else "dark = low, bright = high."))
    if other is not None:
        extra = [f"{classes[int(a)]} vs {classes[int(b)]}" for a, b in zip(targets, other)]
    else:
        extra = [f"target {classes[int(t)]}" for t in targets]
    tiles(faces, views, lims, signed, headers, classes, overlay, extra)

    with st.expander("One face in detail (plotly, with colour bar)"):
        i = int(st.selectbox("Face", range(len(faces)), format_func=lambda j: faces.names[j], key="xp_detail"))
        titles = ["map"] if other is None else [f"{classes[int(targets[i])]}", f"{classes[int(other[i])]}"]
        lim = lim_all[i] if shared else color_limits(np.stack([v[i] for v in views]), shared=True, signed=signed)[0]
        st.plotly_chart(detail_figure(faces.x[i], [v[i] for v in views], titles, lim, signed), key="xp_detail_fig")

    if sanity:
        st.subheader("Sanity check: the same maps with randomised weights")
        sanity_section(model, faces, method, opts_items, targets, mean_face, classes, shared, overlay)

    if "pred" in ctx:
        st.subheader("Mean map per confusion cell")
        cell_means_section(model, rd, ctx, method, opts_items, mean_face, classes, synthetic)


if __name__ == "__main__":
    main()
