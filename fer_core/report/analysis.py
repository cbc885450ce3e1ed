"""Report sections about the model's behaviour on faces: confusion matrix, saliency, filters.

Everything is computed by the run's one :class:`~fer_core.model.LoadedRun` on the split's
predictions (:class:`~fer_core.rundata.Predictions`) and the faces behind them; maps are coloured
by :mod:`fer_core.explain.colour` (one colour scale per figure, drawn as its colour bar). A section
whose inputs are missing -- no faces on this machine, no model, no gradients -- says why.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fer_core.explain.colour import color_limits, colorize
from fer_core.gallery import cell_positions, order_positions, row_normalize
from fer_core.report import figures
from fer_core.report.context import ReportContext
from fer_core.report.html import Markup, Section, esc, figure, note, table
from fer_core.report.sections import fmt_pct
from fer_core.rundata import DataUnavailable

__all__ = ["confused_pairs", "confusion_section", "filters_section", "pair_sentence", "saliency_section"]

STRIP_FACES = 8      # example faces per confused pair
STRIP_PAIRS = 3      # pairs with a strip of faces
SENTENCES = 5        # most-confused pairs written out
MEAN_PER_CLASS = 32  # faces averaged per class for the mean maps
FILTERS = 16         # gradient-ascent images of the deepest conv layer
ASCENT_STEPS = 48
TOP_FILTERS = 4      # filters whose top faces are shown
TOP_K = 6


def _no_data(ctx: ReportContext) -> str:
    return ctx.pred_reason if ctx.pred is None else (ctx.faces_reason or "the faces are not available")


def _best_face(pred: Any, c: int) -> int | None:
    """Position of the most confident correctly classified face of class ``c`` (else the face of
    class ``c`` the model gives the highest probability of ``c``); None when the class is absent."""
    correct = np.flatnonzero((pred.label == c) & (pred.pred == c))
    pool = correct if len(correct) else np.flatnonzero(pred.label == c)
    return int(pool[np.argmax(pred.probs[pool, c])]) if len(pool) else None


# --------------------------------------------------------------------------- 4. confusion
def confused_pairs(cm: np.ndarray, top: int = SENTENCES) -> list[tuple[int, int, float, int, int]]:
    """The ``top`` most-confused (true, predicted) pairs as ``(true, pred, row %, count, support)``,
    by share of the true class's faces (ties: more faces first); empty cells are left out."""
    cm = np.asarray(cm)
    pct = row_normalize(cm)
    k = len(cm)
    pairs = [(i, j) for i in range(k) for j in range(k) if i != j and cm[i, j] > 0]
    pairs.sort(key=lambda p: (-pct[p], -cm[p]))
    return [(i, j, float(pct[i, j]), int(cm[i, j]), int(cm[i].sum())) for i, j in pairs[:top]]


def pair_sentence(classes: Sequence[str], pair: tuple[int, int, float, int, int]) -> str:
    i, j, pct, count, support = pair
    return (f"{classes[i]} is predicted as {classes[j]} {pct:.0f}% of the time "
            f"({count} of {support} {classes[i]} faces)")


def confusion_section(ctx: ReportContext) -> Section:
    pred = ctx.pred
    if pred is None:
        s = Section("confusion", f"Needs the {ctx.split} split's per-face predictions.")
        return s.add(note(f"No confusion matrix: {ctx.pred_reason}"))
    classes = ctx.classes
    s = Section("confusion", f"Predictions: {pred.source}; {ctx.split} split, n = {len(pred)} faces; rows = true "
                             "class, columns = predicted class (argmax of the probabilities).")
    cm = pred.cm
    pct = row_normalize(cm)
    s.add(figure(figures.confusion(cm, classes, pct), "Confusion matrix: counts and % of each true class.",
                 alt="confusion matrix"))
    per = pred.metrics["per_class"]
    s.add("<h3>Per-class precision, recall and F1</h3>",
          table(["class", "precision", "recall", "F1", "support"],
                [[c, fmt_pct(per[c]["precision"]), fmt_pct(per[c]["recall"]), f"{per[c]['f1']:.3f}",
                  int(per[c]["support"])] for c in classes if c in per]))
    pairs = confused_pairs(cm)
    if not pairs:
        return s.add(Markup('<p class="small">No face of this split is misclassified.</p>'))
    s.add("<h3>Most-confused pairs</h3>", Markup('<ul class="sentences">' + "".join(
        f'<li class="pair">{esc(pair_sentence(classes, p))}</li>' for p in pairs) + "</ul>"))
    try:
        x = ctx.split_faces()
    except DataUnavailable as exc:
        return s.add(note(f"No example faces: {exc}"))
    s.add(Markup(f'<p class="small">Example faces ({esc(ctx.faces_source())}), most confident mistakes '
                 "first; p = the model's probability of the wrong class.</p>"))
    for i, j, share, count, _ in pairs[:STRIP_PAIRS]:
        pos = order_positions(cell_positions(pred.label, pred.pred, i, j), pred.probs, pred.label, pred.row,
                              "confidence")[:STRIP_FACES]
        uri = figures.image_grid([x[p] for p in pos], STRIP_FACES, titles=[f"p={pred.probs[p, j]:.2f}" for p in pos])
        s.add(figure(uri, f"true {classes[i]}, predicted {classes[j]}: {len(pos)} of {count} faces",
                     alt=f"{classes[i]} predicted as {classes[j]}"))
    return s


# --------------------------------------------------------------------------- 5. saliency
def _method(ctx: ReportContext) -> tuple[str, dict[str, Any], str]:
    """Grad-CAM at the model's default layer when its layers can be hooked, else plain gradients."""
    from fer_core.explain.attribution import METHODS

    if ctx.hook_reason() is None:
        layer = ctx.model.default_gradcam_layer()
        if layer:
            return "gradcam", {"layer": layer}, f"{METHODS['gradcam'].label} at layer {layer}"
    return "saliency", {}, f"{METHODS['saliency'].label} (|∂ score/∂ pixel|; the layers cannot be hooked)"


def saliency_section(ctx: ReportContext) -> Section:
    from fer_core.explain.attribution import METHODS

    reason = ctx.gradient_reason()
    if reason:
        return Section("saliency", "Needs the model's gradients.").add(note(f"No saliency maps: {reason}"))
    try:
        x = ctx.split_faces()
    except DataUnavailable:
        return Section("saliency", f"Needs the faces of the {ctx.split} split.").add(
            note(f"No saliency maps: {_no_data(ctx)}"))
    pred, classes, model = ctx.pred, ctx.classes, ctx.model
    method, opts, label = _method(ctx)
    signed = METHODS[method].signed
    cmap = figures.cmap_name(signed)
    picks = [(c, p) for c in range(len(classes)) if (p := _best_face(pred, c)) is not None]
    s = Section("saliency", f"{label} (Captum), {ctx.split} split: one face per class (the most confident correct "
                            f"one), n = {len(picks)} faces; mean maps over up to {MEAN_PER_CLASS} correctly "
                            "classified faces per class, each map scaled to max 1 first.")
    for n in model.method_notes(method, opts.get("layer")):
        s.add(Markup(f'<p class="small">{esc(n)}</p>'))
    pos = [p for _, p in picks]
    preds, trues = [int(pred.pred[p]) for p in pos], [int(pred.label[p]) for p in pos]
    maps = model.attribute_faces(x[pos], preds + trues, method, **opts)
    lim = color_limits(maps, shared=True, signed=signed, percentile=99)
    rgb = colorize(maps, lim, signed=signed, cmap=cmap)
    n = len(pos)
    tiles = [x[p] for p in pos] + list(rgb[:n]) + list(rgb[n:])
    titles = [f"{classes[t]} (p={pred.probs[p, q]:.2f})" for p, t, q in zip(pos, trues, preds)] + \
        [f"pred: {classes[q]}" for q in preds] + [f"true: {classes[t]}" for t in trues]
    s.add(figure(figures.image_grid(tiles, n, titles=titles, row_labels=["face", "predicted\nclass", "true\nclass"],
                                    colorbar=(float(lim[0, 0]), float(lim[0, 1]), cmap),
                                    colorbar_label="attribution (one scale)"),
                 "Each face, its map for the predicted class and for the true class, on one colour scale "
                 "(clipped at the 99th percentile).", alt="saliency maps"))
    cells = model.cell_maps(x, pred.label, pred.pred, method, cells=[(c, c) for c, _ in picks], target="true",
                            max_per_cell=MEAN_PER_CLASS, **opts)
    mmaps = np.stack([c.mean_map for c in cells])
    mlim = color_limits(mmaps, shared=True, signed=signed)
    mrgb = colorize(mmaps, mlim, signed=signed, cmap=cmap)
    tiles = [c.mean_face for c in cells] + list(mrgb)
    titles = [f"{classes[c.true]} (n={c.used})" for c in cells] + ["" for _ in cells]
    s.add("<h3>Mean map per class</h3>",
          figure(figures.image_grid(tiles, len(cells), titles=titles, row_labels=["mean\nface", "mean\nmap"],
                                    colorbar=(float(mlim[0, 0]), float(mlim[0, 1]), cmap),
                                    colorbar_label="mean of max-1 maps"),
                 "Mean face and mean map of the correctly classified faces of each class (true class target).",
                 alt="mean maps per class"))
    return s


# --------------------------------------------------------------------------- 6. filters
def filters_section(ctx: ReportContext) -> Section:
    reason = ctx.hook_reason()
    if reason:
        return Section("filters", "Needs the model's conv layers.").add(note(f"No filter views: {reason}"))
    model = ctx.model
    layers = {li.name: li for li in model.feature_layers()}
    layer = model.default_feature_layer()
    if layer is None:
        return Section("filters", "Needs a conv layer.").add(note("No filter views: the model lists no conv layers."))
    info = layers[layer]
    filt = list(range(min(FILTERS, info.channels)))
    n_faces = len(ctx.pred) if ctx.pred is not None else 0
    s = Section("filters", f"Layer {layer} (the deepest conv layer with spatial maps; {info.channels} filters, maps "
                           f"{info.height}×{info.width}): regularised gradient ascent (1/f FFT parametrisation, "
                           f"jitter/scale/rotation, Adam lr 0.05, {ASCENT_STEPS} steps) for filters 0–{filt[-1]}; "
                           f"outputs for one {ctx.split} face; top faces over the n = {n_faces} faces of the "
                           f"{ctx.split} split.")
    res = model.filter_images(layer, mode="regularized", filters=filt, steps=ASCENT_STEPS, lr=0.05, seed=0)
    s.add("<h3>What the filters respond to</h3>",
          figure(figures.image_grid(list(res.images), 8, titles=[f"#{f} ({a:.2f})" for f, a in
                                                                  zip(res.filters, res.activations)]),
                 "Input that maximises each filter's mean activation (value in brackets).", alt="filter images"))
    try:
        x = ctx.split_faces()
    except DataUnavailable:
        return s.add(note(f"No filter outputs or top faces: {_no_data(ctx)}"))
    c = int(np.bincount(ctx.pred.label).argmax())
    p = _best_face(ctx.pred, c)
    acts = model.activations(layer, x[p])[filt]
    lim = color_limits(acts, shared=True, signed=True)
    rgb = colorize(acts, lim, signed=True, cmap=figures.cmap_name(True))
    s.add("<h3>Filter outputs for one face</h3>",
          figure(figures.image_grid([x[p], *rgb], 9, titles=[f"{ctx.classes[c]} face"] + [f"#{f}" for f in filt],
                                    colorbar=(float(lim[0, 0]), float(lim[0, 1]), figures.cmap_name(True)),
                                    colorbar_label="output"),
                 f"Output maps of filters 0–{filt[-1]} of {layer} for this face (one scale, 0 = white).",
                 alt="filter outputs"))
    top = model.top_faces(layer, x, filters=filt[:TOP_FILTERS], k=TOP_K)
    tiles, titles = [], []
    for r, f in enumerate(top.filters):
        faces = x[top.index[r]]
        tiles += list(colorize(top.maps[r], np.tile([0.0, 1.0], (len(faces), 1)), signed=False, faces=faces,
                               alpha=0.55, cmap=figures.cmap_name(False)))
        titles += [f"{top.score[r, q]:.2f}" for q in range(len(faces))]
    s.add("<h3>Faces that excite the first filters most</h3>",
          figure(figures.image_grid(tiles, top.index.shape[1], titles=titles,
                                    row_labels=[f"#{int(f)}" for f in top.filters]),
                 f"Per filter (rows), the {top.index.shape[1]} {ctx.split} faces with the highest maximum "
                 f"activation (value), the filter's map blended over each ({ctx.faces_source()}).",
                 alt="top activating faces"))
    return s
