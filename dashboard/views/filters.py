"""Filters page: what each filter of a conv layer responds to.

Three views of one layer, all computed by :mod:`fer_core.explain.featviz` on the run's one
:class:`~fer_core.model.LoadedRun`, through the cached functions in :mod:`dashboard.resources`:

* the input pattern that maximally activates each filter (gradient ascent on the input, every
  selected filter optimised together in one batch), naive and regularised side by side -- the
  naive one shows the high-frequency patterns plain ascent finds, the regularised one what
  survives jitter/scale/rotation with a smooth (FFT) parametrisation;
* the layer's outputs (activation maps) for one face -- the filter's input and output;
* per filter, the faces of the dataset that activate it most, with the activating region
  highlighted.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import streamlit as st

from dashboard import components, resources
from dashboard.resources import DataUnavailable, FaceBatch
from fer_core.data.decode import image_to_face
from fer_core.explain.colour import color_limits, colorize
from fer_core.explain.featviz import DEFAULTS, MODES, parse_filters
from fer_core.gallery import upscale
from fer_core.model import LoadedRun
from fer_core.runs import RunInfo

ZOOM = 2
GRID = 8
MODE_LABELS = {"naive": "Naive (plain pixel ascent, RMS-normalised gradient)",
               "regularized": "Regularised (FFT parametrisation + jitter/scale/rotation)"}
MAX_TOP_FILTERS = 8


def image_grid(images: np.ndarray, captions: Sequence[str], columns: int = GRID, zoom: int = ZOOM) -> None:
    """Greyscale [0,1] (or uint8) images, or RGB uint8, in rows of ``columns``."""
    cols = st.columns(columns)
    for i, (img, cap) in enumerate(zip(images, captions)):
        a = np.asarray(img)
        if a.dtype != np.uint8:
            a = (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)
        a = upscale(a, zoom) if a.ndim == 2 else upscale(a.transpose(2, 0, 1), zoom).transpose(1, 2, 0)
        with cols[i % columns]:
            st.image(a, caption=cap, clamp=True)


def spotlight(faces_u8: np.ndarray, maps01: np.ndarray) -> np.ndarray:
    """Grey faces dimmed where the filter is silent and tinted red where it fires (maps in [0,1])."""
    f = np.asarray(faces_u8, dtype=np.float64) / 255.0
    m = np.clip(np.asarray(maps01, dtype=np.float64), 0, 1)
    base = f * (0.3 + 0.7 * m)
    rgb = np.stack([base + 0.45 * m * (1 - base), base, base], -1)
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def _split_faces(info: RunInfo) -> tuple[FaceBatch | None, str, str | None]:
    """(the faces of the run's test split -- else its first split -- as one batch, the split, problem)."""
    rd = resources.run_data(info, components.data_path())
    split = rd.available_splits()[0]
    try:
        return resources.split_faces(rd, resources.predictions(rd, split)), split, None
    except DataUnavailable as exc:
        return None, split, str(exc)


def featviz_section(model: LoadedRun, layer: str, filters: list[int]) -> None:
    c1, c2, c3, c4 = st.columns(4)
    with c1:
        steps = int(st.number_input("Steps", 1, 512, 64, step=8, key="fv_steps"))
    with c2:
        lr_naive = float(st.number_input("Learning rate (naive)", 0.001, 1.0, DEFAULTS["naive"]["lr"],
                                         step=0.01, format="%.3f", key="fv_lr_naive"))
    with c3:
        lr_reg = float(st.number_input("Learning rate (regularised)", 0.001, 1.0, DEFAULTS["regularized"]["lr"],
                                       step=0.01, format="%.3f", key="fv_lr_reg"))
    with c4:
        seed = int(st.number_input("Seed", 0, 10_000, 0, key="fv_seed"))
    if resources.filter_weights(model, layer) is not None:
        st.caption(f"{layer} reads the pixels directly and is linear in them, so its *mean* activation is "
                   "maximised by a nearly uniform image (its response to the average brightness). Its "
                   "kernels, under *Filter outputs* below, show its pattern directly; deeper layers give "
                   "more telling images.")
    settings = (model.key, layer, tuple(filters), steps, lr_naive, lr_reg, seed)
    if st.button(f"Optimise {len(filters)} filter image(s) (one batch per mode)", key="fv_go", type="primary"):
        st.session_state["fv_done"] = settings
    if st.session_state.get("fv_done") != settings:
        st.caption("Press the button to run gradient ascent with these settings (results are cached).")
        return
    cols = st.columns(2)
    for col, mode, lr in zip(cols, MODES, (lr_naive, lr_reg)):
        with col:
            res = resources.filter_images(model, layer, mode, tuple(filters), steps, lr, seed)
            st.markdown(f"**{MODE_LABELS[mode]}**")
            st.caption(f"{len(res.filters)} filters × {res.steps} steps, lr {res.lr:g}, {res.seconds:.1f}s "
                       "(one batch). Caption: filter · its mean activation on the image.")
            image_grid(res.images, [f"#{f} · {a:.2g}" for f, a in zip(res.filters, res.activations)],
                       columns=GRID // 2)


def outputs_section(model: LoadedRun, layer: str, filters: list[int], faces: FaceBatch | None, split: str,
                    synthetic: bool) -> None:
    src = st.radio("Face", ["split", "upload"], key="fv_face_src", horizontal=True,
                   format_func={"split": f"from the {split} split", "upload": "upload an image"}.get)
    face, name = None, ""
    if src == "upload":
        f = st.file_uploader("Face image", key="fv_upload")
        if f is not None:
            try:
                face, name = image_to_face(f), f.name
            except Exception as exc:
                st.error(f"**{f.name}** is not an image this page can read ({type(exc).__name__}). "
                         "Upload a PNG, JPEG, BMP, WebP or TIFF picture of a face.")
        else:
            st.info("Upload a face image to see the layer's outputs for it.")
    elif faces is None:
        st.info("No faces of the run's data are available here (see above); upload one instead.")
    else:
        i = int(st.number_input(f"Face (0–{len(faces) - 1})", 0, len(faces) - 1, 0, key="fv_face"))
        face, name = faces.x[i], f"{split} face {i}" + (" (synthetic)" if synthetic else "")
    if face is None:
        return
    acts = resources.activations(model, layer, resources.faces_batch(np.asarray(face)[None]))[filters]
    lim = color_limits(acts, shared=True, signed=bool(acts.min() < 0))[0]
    c1, c2 = st.columns([1, 5])
    with c1:
        st.image(upscale(np.asarray(face), 3), caption=f"input: {name}", clamp=True)
        weights = resources.filter_weights(model, layer)
        if weights is not None:
            st.caption("This layer reads the image directly; its kernels (below) are the filters themselves.")
            wl = color_limits(weights[filters], shared=True, signed=True)
            image_grid(colorize(weights[filters], wl, signed=True)[:16], [f"#{f}" for f in filters[:16]],
                       columns=4, zoom=8)
    with c2:
        st.caption(f"Outputs of {layer} ({acts.shape[-2]}×{acts.shape[-1]} each), one shared colour scale "
                   f"[{lim[0]:.3g}, {lim[1]:.3g}] ({'red > 0, blue < 0' if acts.min() < 0 else 'bright = high'}).")
        rgb = colorize(acts, np.tile(lim, (len(acts), 1)), signed=bool(acts.min() < 0))
        zoom = max(1, 96 // acts.shape[-1])
        image_grid(rgb, [f"#{f} · max {a.max():.2g}" for f, a in zip(filters, acts)], columns=GRID, zoom=zoom)


def top_section(model: LoadedRun, layer: str, filters: list[int], faces: FaceBatch | None, split: str,
                synthetic: bool) -> None:
    if faces is None:
        st.info("No faces of the run's data are available here (see above).")
        return
    c1, c2 = st.columns([3, 1])
    with c1:
        chosen = st.multiselect(f"Filters (up to {MAX_TOP_FILTERS})", filters, default=filters[:4],
                                key="fv_top_filters", max_selections=MAX_TOP_FILTERS)
    with c2:
        k = int(st.slider("Faces per filter", 1, 12, 6, key="fv_topk"))
    if not chosen:
        st.caption("Choose one or more filters.")
        return
    top = resources.top_faces(model, layer, faces, tuple(int(f) for f in chosen), k)
    st.caption(f"Of {len(faces)} {split} faces" + (" (synthetic, SynthFER)" if synthetic else "")
               + ": the ones whose strongest response to the filter is highest. The face is dimmed where "
               "the filter is silent and glows red where it fires (its activation map, upsampled to the "
               "face). Caption: face index · strongest response.")
    for r, f in enumerate(top.filters):
        over = spotlight(faces.x[top.index[r]], top.maps[r])
        st.markdown(f"**filter #{int(f)}**")
        image_grid(over, [f"#{int(i)} · {s:.2g}" for i, s in zip(top.index[r], top.score[r])], columns=12)


def main() -> None:
    st.title("Filters")
    st.caption("What the filters of a conv layer respond to: optimised inputs, their outputs for a face, "
               "and the faces that excite them most.")
    info = components.pick_model_run("fv_run")
    if info is None:
        return
    model = components.model_or_error(info)
    if model is None:
        return
    if model.gradient_reason is not None:
        st.info(f"Filter views need the model's layers and gradients, and {info.label} has no torch module "
                f"here: {model.gradient_reason.rstrip('.')}.")
        return
    layers = resources.feature_layers(model)
    if not layers:
        st.info(f"No filter views for {info.label}: "
                + (model.layer_reason.rstrip(".") + "." if model.layer_reason else "its model lists no conv layers."))
        return
    by = {li.name: li for li in layers}
    names = list(by)
    default = model.default_feature_layer()
    c1, c2 = st.columns([2, 2])
    with c1:
        # The default is a layer whose images mean something: the first conv is linear in the
        # pixels, so its ascent image is nearly uniform.
        layer = components.pick_option("Layer", names, "fv_layer", format_func=lambda n: by[n].label,
                                       index=names.index(default) if default in names else 0)
    if hasattr(model.model, "layer_label"):  # an ensemble: say whose layer it is
        st.caption(f"Filters of {model.model.layer_label(layer)}")
    n = by[layer].channels
    with c2:
        text = st.text_input(f"Filters (of 0–{n - 1}), e.g. 0-15, 20, all", value="0-15" if n > 16 else "all",
                             key="fv_filters")
    try:
        filters = parse_filters(text, n)
    except ValueError as exc:
        st.error(f"Filters: {exc}")
        return
    synthetic = info.synthetic
    faces, split, problem = _split_faces(info)
    if problem:
        st.info(f"Dataset faces unavailable: {problem}")

    st.subheader("Inputs that maximise each filter")
    featviz_section(model, layer, filters)
    st.subheader("Filter outputs for one face")
    outputs_section(model, layer, filters, faces, split, synthetic)
    st.subheader("Faces that activate each filter most")
    top_section(model, layer, filters, faces, split, synthetic)


if __name__ == "__main__":
    main()
