"""Attribution maps through Captum: one entry point, :func:`explain`, and a ``METHODS`` table.

Why thin adapters: Captum already implements Saliency, Integrated Gradients, SmoothGrad
(``NoiseTunnel``), Guided Backprop, Grad-CAM (``LayerGradCam``) and Occlusion, with their hooks
removed in ``finally``. Each adapter here only translates our options (baseline *kind*, noise in
pixel units, a dotted layer name, a window size in pixels) into Captum's arguments. Nothing here
computes a gradient by hand. Also here: the Grad-CAM layer table, contrastive maps and mean maps
per confusion cell. Colours are in :mod:`~fer_core.explain.colour`, the randomisation sanity
check in :mod:`~fer_core.explain.sanity`.

Conventions
-----------
* ``x`` is the **model input** (``Preprocess.__call__`` of uint8 faces), ``N×1×H×W`` (a batch) or
  ``1×H×W`` / ``H×W`` (one face). The result is a float32 numpy ``N×H×W`` or ``H×W`` map at input
  resolution. A batch is one Captum call (IG, SmoothGrad and Occlusion expand it internally to
  ``N·n_steps`` / ``N·nt_samples`` / ``N·windows`` rows, run in passes of about
  ``ROWS_PER_PASS`` rows), never a Python loop over faces.
* Baselines are in pixel terms: ``"black"`` = ``preprocess.standardize(0)`` (black *pixels* after
  the model's own preprocessing, which for a normalised model is ``-mean/std``, not 0);
  ``"mean"`` = the dataset's mean face (``mean_face``, ``[0,1]`` pixels) or, without one, the
  dataset mean pixel value of a normalised model; ``"blurred"`` = a Gaussian-blurred copy of each
  face. These need the model's :class:`~fer_core.preprocess.Preprocess` (``preprocess=``).
* Guarantees (tested): everything runs under :func:`~fer_core.explain.guard.model_guard` (eval
  mode; train/eval flags, parameter ``.grad`` and ``requires_grad`` restored; no hook left
  behind, also when it raises). Captum differentiates with ``torch.autograd.grad`` w.r.t. the
  input only, and a detached clone of ``x`` is attributed, so the caller's ``x`` keeps its
  ``requires_grad``/``.grad``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from fer_core.explain.guard import model_guard
from fer_core.preprocess import Preprocess

__all__ = [
    "BASELINES", "METHODS", "CellMap", "LayerInfo", "MethodSpec", "as_batch", "cell_mean_maps", "explain",
    "explain_contrastive", "layer_table", "make_baseline", "method_notes", "resolve_target",
]

BASELINES: tuple[str, ...] = ("black", "mean", "blurred")
ROWS_PER_PASS = 64  # rows per forward/backward inside one Captum call (IG steps, SmoothGrad samples,
#                     occlusion windows): large enough to amortise per-call overhead, small enough
#                     that the activations stay cache-sized.
COARSE_SIDE = 3  # a feature map of side <= 3 on a 48-px face: each cell covers >= 16 px


# --------------------------------------------------------------------------- inputs / targets
def as_batch(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``(N×1×H×W batch, was one face)`` from a face ``H×W`` / ``1×H×W`` or a batch (any array-like)."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    if x.ndim == 2:
        return x[None, None], True
    if x.ndim == 3:
        return x[None], True
    if x.ndim == 4:
        return x, False
    raise ValueError(f"expected a face H×W, 1×H×W or a batch N×1×H×W, got shape {tuple(x.shape)}")


def resolve_target(model: nn.Module, x: torch.Tensor, target: Any) -> torch.Tensor:
    """Class index per face (``N`` longs) from an int, a sequence/array/tensor, or ``"pred"``
    (the model's argmax, computed in eval mode)."""
    x4, _ = as_batch(x)
    n = len(x4)
    if isinstance(target, str):
        if target not in ("pred", "predicted"):
            raise ValueError(f"target must be a class index, a sequence of them, or 'pred'; got {target!r}")
        ref = next(model.parameters(), None)
        with model_guard(model), torch.no_grad():
            return model(x4.detach().to(ref.dtype if ref is not None else torch.float32)).argmax(1).long()
    t = torch.as_tensor(np.asarray(target) if not isinstance(target, torch.Tensor) else target).long().flatten()
    if t.numel() == 1:
        t = t.expand(n).clone()
    if t.numel() != n:
        raise ValueError(f"{t.numel()} targets for {n} faces")
    return t


def _pixel_scale(preprocess: Preprocess | None) -> float:
    """Model-input units per pixel unit (1/std for a normalised model)."""
    return 1.0 / preprocess.std if preprocess is not None and preprocess.normalize else 1.0


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    import torchvision.transforms.v2.functional as TF

    k = 2 * math.ceil(3 * sigma) + 1
    k = min(k, 2 * (min(x.shape[-2:]) // 2) - 1)
    return TF.gaussian_blur(x, [k, k], [sigma, sigma])


def make_baseline(x: torch.Tensor, kind: str | float | torch.Tensor, preprocess: Preprocess | None, *,
                  mean_face: Any = None, blur_sigma: float = 4.0) -> torch.Tensor:
    """A baseline batch shaped like ``x`` (model-input space): see the module docstring.

    ``kind`` may also be a number or a tensor already in model-input space.
    """
    if isinstance(kind, torch.Tensor):
        return kind.to(x.dtype).expand_as(x).clone()
    if isinstance(kind, (int, float)):
        return torch.full_like(x, float(kind))
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}; choose one of {', '.join(BASELINES)}")
    if kind == "blurred":  # standardize is affine, so blurring model input == blurring pixels
        return _gaussian_blur(x, blur_sigma)
    if preprocess is None:
        raise ValueError(f"baseline {kind!r} needs the model's preprocess= (black pixels are "
                         "preprocess.standardize(0), not a zero input)")
    if kind == "black":
        return preprocess.standardize(torch.zeros_like(x))
    if mean_face is not None:
        mf = torch.as_tensor(np.asarray(mean_face), dtype=x.dtype)
        mf = mf.float().div(255.0) if mf.max() > 1.5 else mf
        return preprocess.standardize(mf.reshape(1, 1, *x.shape[-2:]).expand_as(x)).clone()
    if preprocess.normalize:
        return preprocess.standardize(torch.full_like(x, preprocess.mean))
    raise ValueError("baseline 'mean' needs mean_face= (the dataset's mean face in [0,1] pixels) "
                     "for a model trained without normalisation")


# --------------------------------------------------------------------------- adapters
def _saliency(model, x, target, *, abs: bool = True, **_: Any) -> torch.Tensor:
    from captum.attr import Saliency

    return Saliency(model).attribute(x, target=target, abs=abs)


def _integrated_gradients(model, x, target, *, preprocess: Preprocess | None = None,
                          baseline: Any = "black", mean_face: Any = None, blur_sigma: float = 4.0,
                          n_steps: int = 32, method: str = "gausslegendre",
                          internal_batch_size: int | None = None, **_: Any) -> torch.Tensor:
    from captum.attr import IntegratedGradients

    base = make_baseline(x, baseline, preprocess, mean_face=mean_face, blur_sigma=blur_sigma)
    ibs = internal_batch_size or max(len(x), ROWS_PER_PASS)  # Captum needs >= one row per face
    return IntegratedGradients(model).attribute(x, baselines=base, target=target, n_steps=int(n_steps),
                                                method=method, internal_batch_size=ibs)


def _smoothgrad(model, x, target, *, preprocess: Preprocess | None = None, nt_samples: int = 16,
                noise: float = 0.15, abs: bool = True, seed: int = 0,
                nt_samples_batch_size: int | None = None, **_: Any) -> torch.Tensor:
    """``noise`` is the noise σ as a fraction of the pixel range [0,1] (Smilkov et al.: 10–20%)."""
    from captum.attr import NoiseTunnel, Saliency

    nsb = nt_samples_batch_size or max(1, ROWS_PER_PASS // len(x))  # noisy copies per pass
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return NoiseTunnel(Saliency(model)).attribute(
            x, nt_type="smoothgrad", nt_samples=int(nt_samples), stdevs=float(noise) * _pixel_scale(preprocess),
            nt_samples_batch_size=min(nsb, int(nt_samples)), target=target, abs=abs)


def _guided_backprop(model, x, target, **_: Any) -> torch.Tensor:
    from captum.attr import GuidedBackprop

    return GuidedBackprop(model).attribute(x, target=target)


def _gradcam(model, x, target, *, layer: str | None = None, upsample: str = "bilinear",
             relu: bool = True, **_: Any) -> torch.Tensor:
    from captum.attr import LayerAttribution, LayerGradCam

    name = layer or getattr(model, "gradcam_layer", None)
    if not name:
        raise ValueError("gradcam needs layer= (a dotted module name) for a model without gradcam_layer")
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"model has no layer {name!r}; see layer_table(model)") from None
    cam = LayerGradCam(model, module).attribute(x, target=target, relu_attributions=relu)
    return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode=upsample)


def _occlusion(model, x, target, *, preprocess: Preprocess | None = None, baseline: Any = "black",
               mean_face: Any = None, blur_sigma: float = 4.0, window: int = 8, stride: int = 4,
               perturbations_per_eval: int | None = None, **_: Any) -> torch.Tensor:
    from captum.attr import Occlusion

    base = make_baseline(x, baseline, preprocess, mean_face=mean_face, blur_sigma=blur_sigma)
    c = x.shape[1]
    return Occlusion(model).attribute(x, sliding_window_shapes=(c, int(window), int(window)),
                                      strides=(c, int(stride), int(stride)), baselines=base,
                                      target=target, perturbations_per_eval=int(
                                          perturbations_per_eval or max(1, 2 * ROWS_PER_PASS // len(x))))


@dataclass(frozen=True)
class MethodSpec:
    name: str
    label: str
    adapter: Callable[..., torch.Tensor]
    signed: bool                 # maps can be negative (diverging colour scale)
    options: tuple[str, ...]     # keyword options the adapter understands
    description: str = ""
    captum: str = ""


METHODS: dict[str, MethodSpec] = {s.name: s for s in (
    MethodSpec("saliency", "Saliency", _saliency, False, ("abs",),
               "|∂ logit / ∂ pixel| (Simonyan et al. 2014)", "Saliency"),
    MethodSpec("integrated_gradients", "Integrated Gradients", _integrated_gradients, True,
               ("baseline", "mean_face", "blur_sigma", "n_steps", "method", "internal_batch_size"),
               "path integral of gradients from a baseline (Sundararajan et al. 2017)",
               "IntegratedGradients"),
    MethodSpec("smoothgrad", "SmoothGrad", _smoothgrad, False,
               ("nt_samples", "noise", "abs", "seed", "nt_samples_batch_size"),
               "saliency averaged over noisy copies (Smilkov et al. 2017)", "NoiseTunnel(Saliency)"),
    MethodSpec("guided_backprop", "Guided Backprop", _guided_backprop, True, (),
               "gradient with negative signals stopped at every ReLU (Springenberg et al. 2015)",
               "GuidedBackprop"),
    MethodSpec("gradcam", "Grad-CAM", _gradcam, False, ("layer", "upsample", "relu"),
               "channel-weighted layer activations, upsampled (Selvaraju et al. 2017)",
               "LayerGradCam + LayerAttribution.interpolate"),
    MethodSpec("occlusion", "Occlusion", _occlusion, True,
               ("baseline", "mean_face", "blur_sigma", "window", "stride", "perturbations_per_eval"),
               "logit drop when a window is replaced by the baseline (Zeiler & Fergus 2014)", "Occlusion"),
)}


def _spec(method: str) -> MethodSpec:
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; choose one of {', '.join(METHODS)}")
    return METHODS[method]


def explain(model: nn.Module, x: torch.Tensor, target: Any, method: str, *,
            preprocess: Preprocess | None = None, **opts: Any) -> np.ndarray:
    """Attribution map(s) of ``method`` for class ``target`` at input resolution.

    ``x``: model input, one face (``H×W`` / ``1×H×W``) -> ``H×W``, or a batch ``N×1×H×W`` ->
    ``N×H×W`` (one batched Captum call). ``target``: class index, one per face, or ``"pred"``.
    ``opts``: the method's options (``METHODS[method].options``); unknown ones raise TypeError.
    """
    spec = _spec(method)
    unknown = set(opts) - set(spec.options)
    if unknown:
        raise TypeError(f"{method} does not take option(s) {', '.join(sorted(unknown))}; "
                        f"it takes: {', '.join(spec.options) or 'none'} (and preprocess=)")
    x4, single = as_batch(x)
    with model_guard(model):  # also leaves a caller's inference_mode: tensors made here are normal
        targets = resolve_target(model, x4.clone(), target).clone()
        ref = next(model.parameters(), None)
        xin = x4.detach().clone().to(dtype=ref.dtype if ref is not None else torch.float32,
                                     device=ref.device if ref is not None else "cpu")
        xin.requires_grad_(True)
        attr = spec.adapter(model, xin, targets.to(xin.device), preprocess=preprocess, **opts)
        attr = attr.detach()
    maps = attr.sum(1) if attr.shape[1] > 1 else attr[:, 0]
    out = maps.float().cpu().numpy()
    return out[0] if single else out


def explain_contrastive(model: nn.Module, x: torch.Tensor, target_a: Any, target_b: Any, method: str,
                        **opts: Any) -> tuple[np.ndarray, np.ndarray]:
    """Maps for two targets per face ("why sad and not fear?") in one batched call: ``(A, B)``."""
    x4, single = as_batch(x)
    ta, tb = resolve_target(model, x4, target_a), resolve_target(model, x4, target_b)
    maps = explain(model, torch.cat([x4, x4]), torch.cat([ta, tb]), method, **opts)
    a, b = maps[:len(x4)], maps[len(x4):]
    return (a[0], b[0]) if single else (a, b)


def method_notes(model: nn.Module, method: str, **opts: Any) -> list[str]:
    """Caveats worth showing next to a map (no computation beyond a shape probe)."""
    notes: list[str] = []
    if method == "guided_backprop" and not any(isinstance(m, nn.ReLU) for m in model.modules()):
        acts = sorted({type(m).__name__ for m in model.modules()
                       if isinstance(m, (nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.PReLU))})
        notes.append("Captum's Guided Backprop only rewrites nn.ReLU; this model uses "
                     f"{', '.join(acts) or 'no ReLU'}, so the map equals the plain (signed) gradient.")
    if method == "gradcam":
        name = opts.get("layer") or getattr(model, "gradcam_layer", None)
        info = {li.name: li for li in layer_table(model)}.get(name)
        if info is not None and info.coarse:
            notes.append(info.note)
    return notes


# --------------------------------------------------------------------------- Grad-CAM layers
@dataclass(frozen=True)
class LayerInfo:
    name: str
    kind: str
    channels: int
    height: int
    width: int
    coarse: bool
    note: str = ""

    @property
    def label(self) -> str:
        warn = " ⚠ coarse" if self.coarse else ""
        return f"{self.name} ({self.kind}, {self.channels}×{self.height}×{self.width}){warn}"


_CAM_KINDS = (nn.Conv2d, nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.PReLU, nn.MaxPool2d,
              nn.AvgPool2d)


def layer_table(model: nn.Module, input_size: int | None = None, in_chans: int = 1) -> list[LayerInfo]:
    """Layers usable for Grad-CAM, in forward order, with their feature-map sizes.

    Offered: conv / activation / pool leaves and the root's direct children (ResNet ``layer1..4``)
    whose output is a 4-D map larger than 1×1, each called once per forward (a shared ReLU is not
    a well-defined layer), plus the model's ``gradcam_layer`` and ``feature_layers``. BatchNorm outputs are left out (a
    per-channel affine of the conv before it). ``coarse`` flags maps of side <= 3.
    """
    size = int(input_size or getattr(model, "input_size", 48))
    top = {name for name, _ in model.named_children()}
    feature = set(getattr(model, "feature_layers", ()))  # conv layers an imported model's adapter found
    calls: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    order: list[str] = []

    def hook(name: str):
        def fn(_m, _i, out):
            calls[name] = calls.get(name, 0) + 1
            if name not in shapes and isinstance(out, torch.Tensor):
                shapes[name] = tuple(out.shape[1:])
                order.append(name)
        return fn

    handles = []
    with model_guard(model):
        try:
            for name, m in model.named_modules():
                if name and (isinstance(m, _CAM_KINDS) or name in top or name in feature
                             or name == getattr(model, "gradcam_layer", None)):
                    handles.append(m.register_forward_hook(hook(name)))
            ref = next(model.parameters(), None)
            with torch.no_grad():
                model(torch.zeros(1, in_chans, size, size, dtype=ref.dtype if ref is not None else torch.float32,
                                  device=ref.device if ref is not None else "cpu"))
        finally:
            for h in handles:
                h.remove()
    rows = []
    for name in order:
        shp = shapes[name]
        if len(shp) != 3 or calls.get(name) != 1 or max(shp[1:]) < 2:
            continue
        c, h, w = shp
        coarse = min(h, w) <= COARSE_SIDE
        note = (f"{name} is only {h}×{w}: each cell covers about {size // h}×{size // w} of the "
                f"{size}×{size} pixels, too coarse for the map to localise much") if coarse else ""
        rows.append(LayerInfo(name, type(model.get_submodule(name)).__name__, c, h, w, coarse, note))
    return rows


# --------------------------------------------------------------------------- confusion cells
@dataclass
class CellMap:
    true: int
    pred: int
    count: int          # faces in the cell
    used: int           # faces averaged (capped by max_per_cell)
    mean_map: np.ndarray
    mean_face: np.ndarray   # [0,1] pixels


def cell_mean_maps(model: nn.Module, faces_u8: torch.Tensor, preprocess: Preprocess, labels: Any, preds: Any,
                   method: str, *, cells: Sequence[tuple[int, int]] | None = None, target: str = "pred",
                   max_per_cell: int = 64, batch_size: int = 96, normalize: bool = True,
                   **opts: Any) -> list[CellMap]:
    """Mean attribution map and mean face per confusion cell (true, pred).

    ``faces_u8``/``labels``/``preds`` are aligned (e.g. a split's faces and its ``eval`` bundle).
    ``target`` ``"pred"`` explains the cell's predicted class, ``"true"`` its true class. With
    ``normalize`` each map is scaled to max |value| 1 before averaging, so a few high-gradient
    faces do not dominate the mean. Faces are processed in batches across cells.
    """
    labels, preds = np.asarray(labels), np.asarray(preds)
    k = int(max(labels.max(initial=0), preds.max(initial=0))) + 1
    if cells is None:
        cells = [(i, j) for i in range(k) for j in range(k)]
    chosen: list[tuple[tuple[int, int], np.ndarray, int]] = []
    for (i, j) in cells:
        pos = np.flatnonzero((labels == i) & (preds == j))
        chosen.append(((i, j), pos[:max_per_cell], len(pos)))
    allpos = np.concatenate([c[1] for c in chosen]) if chosen else np.zeros(0, np.int64)
    alltgt = np.concatenate([np.full(len(c[1]), c[0][1] if target == "pred" else c[0][0]) for c in chosen]) \
        if chosen else np.zeros(0, np.int64)
    maps = np.zeros((len(allpos), *faces_u8.shape[-2:]), np.float32)
    for s in range(0, len(allpos), batch_size):
        idx = torch.from_numpy(allpos[s:s + batch_size].astype(np.int64))
        maps[s:s + batch_size] = explain(model, preprocess(faces_u8[idx]), alltgt[s:s + batch_size], method,
                                         preprocess=preprocess, **opts)
    if normalize and len(maps):
        maps = maps / np.maximum(np.abs(maps).reshape(len(maps), -1).max(1), 1e-12)[:, None, None]
    out, s = [], 0
    for (i, j), pos, count in chosen:
        n = len(pos)
        h, w = faces_u8.shape[-2:]
        mm = maps[s:s + n].mean(0) if n else np.zeros((h, w), np.float32)
        mf = faces_u8[torch.from_numpy(pos.astype(np.int64))].float().mean(0).numpy() / 255.0 if n \
            else np.zeros((h, w), np.float32)
        out.append(CellMap(i, j, count, n, mm, mf))
        s += n
    return out
