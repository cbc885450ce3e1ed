"""Feature visualisation for one conv layer: what each filter responds to.

Three views of a layer (any name in the model's ``feature_layers``):

* :func:`visualize_filters` -- the input pattern that maximally activates each filter, by gradient
  ascent on the input. **All requested filters are optimised together in one batch**: image ``i``
  of the batch is optimised for filter ``filters[i]`` (its own objective; the model is in eval
  mode, so BatchNorm does not mix the images), so a step's Python, autograd and optimiser
  overhead is paid once for all filters. What remains is per-image arithmetic, which is kept
  small (:mod:`~fer_core.explain.prefix`): the forward pass stops at the layer, so deeper layers
  cost nothing; of the target conv only each image's own channel's *mean* is computed, from
  window sums; the layers before it run as a ``torch.fx``-compiled copy when the forward is
  traceable (BatchNorm fused into the convs, max-pool before the activation, channels-last); and
  the model runs ``CHUNK`` images at a time within a step, so the activations stay in cache.
  Two modes:

  - ``"naive"``: the classic Keras recipe (Chollet, "How convolutional neural networks see the
    world"): start from grey plus a little noise, step along the gradient normalised by its RMS
    (per image), no regulariser; shown with the recipe's contrast stretch (std 0.15 around grey).
  - ``"regularized"``: a decorrelated (FFT / 1-over-frequency) parametrisation squashed by a
    sigmoid into [0,1] pixels, optimised with Adam through random jitter, scale and rotation per
    image and step (transformation robustness), with an optional L2 pull towards grey. The
    transform ranges are scaled from Lucid's 224-px defaults to 48-px faces (±2 px jitter,
    ±5% scale, ±5°), one channel, no ImageNet normalisation -- only the model's own preprocess.

  Written in plain torch: lucent/lucid assume 3-channel 224-pixel ImageNet models (their colour
  decorrelation matrix, ImageNet normalisation and transform sizes do not fit 1-channel 48×48
  faces).
* :func:`filter_activations` -- the layer's output maps for a face ("filter input and output").
* :func:`top_activating` -- per filter, the dataset faces that activate it most, with the
  activation map (upsampled to the face) to highlight where.

Every function runs under :func:`~fer_core.explain.guard.model_guard` (eval mode; modes, grads
restored, no hooks left). Images are pixels in [0,1]; the model sees
``preprocess.standardize(pixels)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from fer_core.explain.guard import model_guard
from fer_core.explain.prefix import compiled_prefix, conv_mean, layer_module, own_channel_conv, run_to
from fer_core.preprocess import Preprocess

__all__ = ["MODES", "FeatVizResult", "FeatureLayer", "TopFaces", "activation_matrix", "feature_layer_table",
           "filter_activations", "filter_weights", "layer_output", "parse_filters", "top_activating",
           "visualize_filters"]

MODES: tuple[str, ...] = ("naive", "regularized")
DEFAULTS: dict[str, dict[str, float]] = {
    "naive": {"steps": 40, "lr": 0.05},
    "regularized": {"steps": 64, "lr": 0.05},
}
CHUNK = 16  # images per forward/backward pass through the model inside one ascent step: the
#             pixel parametrisation, transforms and optimiser run on the whole batch at once, the
#             model in chunks whose activations stay cache-sized (cnn4 conv1 output: 16 × 295 KB).


def _std(preprocess: Preprocess | None, u: torch.Tensor) -> torch.Tensor:
    return preprocess.standardize(u) if preprocess is not None else u


def layer_output(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """The layer's output (N×C×h×w tensor, no grad) for model input ``x`` (N×1×H×W)."""
    with model_guard(model), torch.no_grad():
        return run_to(model, layer, x.float()).detach()


# --------------------------------------------------------------------------- layers
@dataclass(frozen=True)
class FeatureLayer:
    name: str
    channels: int
    height: int
    width: int
    kernel: str = ""

    @property
    def label(self) -> str:
        k = f", {self.kernel}" if self.kernel else ""
        return f"{self.name} ({self.channels} filters{k}, maps {self.height}×{self.width})"


def feature_layer_table(model: nn.Module, input_size: int | None = None, in_chans: int = 1) -> list[FeatureLayer]:
    """The model's ``feature_layers`` with their filter count and output map size (one forward)."""
    names = list(getattr(model, "feature_layers", ()))
    size = int(input_size or getattr(model, "input_size", 48))
    shapes: dict[str, tuple[int, ...]] = {}

    def hook(name: str):
        def fn(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:  # must return None
            shapes.setdefault(name, tuple(out.shape[1:]))
        return fn

    handles = []
    with model_guard(model), torch.no_grad():
        try:
            for name in names:
                handles.append(layer_module(model, name).register_forward_hook(hook(name)))
            model(torch.zeros(1, in_chans, size, size))
        finally:
            for h in handles:
                h.remove()
    rows = []
    for name in names:
        c, h, w = shapes[name]
        m = model.get_submodule(name)
        k = f"{m.kernel_size[0]}×{m.kernel_size[1]} kernels" if isinstance(m, nn.Conv2d) else ""
        rows.append(FeatureLayer(name, c, h, w, k))
    return rows


def filter_weights(model: nn.Module, layer: str) -> np.ndarray | None:
    """The kernels of a conv layer that reads the 1-channel image directly (C×k×k), else None."""
    m = layer_module(model, layer)
    if isinstance(m, nn.Conv2d) and m.in_channels == 1:
        return m.weight.detach()[:, 0].float().cpu().numpy()
    return None


def parse_filters(text: str, n_filters: int) -> list[int]:
    """``"0-7, 12, 20-23"`` -> sorted unique indices; ``"all"``/empty -> every filter.

    Raises ValueError naming the bad part (out of range, not a number, reversed range).
    """
    text = (text or "").strip().lower()
    if text in ("", "all", "*"):
        return list(range(n_filters))
    out: set[int] = set()
    for part in (p.strip() for p in text.replace(";", ",").split(",")):
        if not part:
            continue
        try:
            if "-" in part[1:]:
                a, b = (int(v) for v in part.split("-", 1))
            else:
                a = b = int(part)
        except ValueError:
            raise ValueError(f"{part!r} is not a filter index or range like 0-7") from None
        if a > b:
            raise ValueError(f"range {part!r} runs backwards")
        if a < 0 or b >= n_filters:
            raise ValueError(f"{part!r} is outside 0–{n_filters - 1} (this layer has {n_filters} filters)")
        out.update(range(a, b + 1))
    if not out:
        raise ValueError("no filters selected")
    return sorted(out)


# --------------------------------------------------------------------------- gradient ascent
@dataclass
class FeatVizResult:
    layer: str
    mode: str
    filters: np.ndarray        # F filter indices
    images: np.ndarray         # F×H×W display images in [0,1]
    pixels: np.ndarray         # F×H×W optimised pixels (what the model saw, before standardize)
    activations: np.ndarray    # F: mean activation of filter filters[i] on pixels[i]
    steps: int
    lr: float
    seconds: float


def _fft_scale(h: int, w: int, decay_power: float) -> torch.Tensor:
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    freqs = torch.sqrt(fx * fx + fy * fy)
    return 1.0 / torch.clamp(freqs, min=1.0 / max(h, w)) ** decay_power


def _random_affine(n: int, size: int, gen: torch.Generator, jitter: float, scale: tuple[float, float],
                   rotate: float) -> torch.Tensor:
    """Per-image affine matrices (n×2×3, normalised coordinates): shift ±jitter px, scale, rotation ±rotate°."""
    r = lambda lo, hi: torch.rand(n, generator=gen) * (hi - lo) + lo  # noqa: E731
    ang = r(-rotate, rotate) * math.pi / 180
    s = r(*scale)
    tx, ty = r(-jitter, jitter) * 2 / size, r(-jitter, jitter) * 2 / size
    cos, sin = torch.cos(ang) / s, torch.sin(ang) / s
    return torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)


def visualize_filters(model: nn.Module, layer: str, *, filters: Sequence[int] | None = None,
                      mode: str = "regularized", steps: int | None = None, lr: float | None = None,
                      preprocess: Preprocess | None = None, seed: int = 0, size: int | None = None,
                      decay_power: float = 1.0, jitter: float = 2.0, scale: tuple[float, float] = (0.95, 1.05),
                      rotate: float = 5.0, l2: float = 0.0) -> FeatVizResult:
    """Gradient ascent on the input for each filter of ``layer``, all filters in one batch.

    ``filters``: indices (default: every channel). ``steps``/``lr`` default per mode
    (``DEFAULTS``). ``preprocess``: the model's, so pixels are standardised as in training.
    Regularised-mode knobs: ``decay_power`` (FFT 1/f^p scaling), ``jitter`` (px), ``scale``,
    ``rotate`` (degrees), ``l2`` (pull towards grey).
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    steps = int(steps if steps is not None else DEFAULTS[mode]["steps"])
    lr = float(lr if lr is not None else DEFAULTS[mode]["lr"])
    size = int(size or getattr(model, "input_size", 48))
    t0 = time.perf_counter()
    with model_guard(model):
        ref = next(model.parameters(), None)
        dtype = ref.dtype if ref is not None else torch.float32
        dev = ref.device if ref is not None else torch.device("cpu")
        n_ch = run_to(model, layer, torch.zeros(1, 1, size, size, dtype=dtype, device=dev)).shape[1]
        filt = torch.arange(n_ch) if filters is None else torch.as_tensor(list(filters), dtype=torch.long)
        filt = filt.to(dev)
        if len(filt) == 0:
            raise ValueError("no filters selected")
        if int(filt.min()) < 0 or int(filt.max()) >= n_ch:
            raise ValueError(f"filter indices must be in 0..{n_ch - 1} for {layer} ({n_ch} filters)")
        n = len(filt)
        gen = torch.Generator().manual_seed(int(seed))

        target = model.get_submodule(layer)
        own_channel = (isinstance(target, nn.Conv2d) and target.groups == 1
                       and target.padding_mode == "zeros")
        prefix = None
        if own_channel:
            probe = torch.rand(2, 1, size, size, generator=torch.Generator().manual_seed(1))
            prefix = compiled_prefix(model, layer, _std(preprocess, probe.to(dev, dtype)))

        def objective(pix: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
            """Mean activation of filter f[i] on image i, per image."""
            x = _std(preprocess, pix)
            if own_channel:
                inp = prefix(x) if prefix is not None else run_to(model, layer, x, inputs=True)
                out = conv_mean(target, inp, f)
                return out if out is not None else own_channel_conv(target, inp, f).flatten(1).mean(1)
            out = run_to(model, layer, x)
            return out[torch.arange(len(f), device=dev), f].flatten(1).mean(1)

        def ascent_objective(pix: torch.Tensor) -> torch.Tensor:
            """A scalar whose gradient (w.r.t. whatever ``pix`` was computed from) is that of the
            summed objectives, evaluated CHUNK images at a time (see CHUNK)."""
            if n <= CHUNK:
                return objective(pix, filt).sum()
            leaf = pix.detach()
            g = torch.empty_like(leaf)
            for s in range(0, n, CHUNK):
                part = leaf[s:s + CHUNK].clone().requires_grad_(True)
                (g[s:s + CHUNK],) = torch.autograd.grad(objective(part, filt[s:s + CHUNK]).sum(), part)
            return (pix * g).sum()  # d/dθ Σ <pix(θ), g> = J^T g: the chunks' gradients, chained on

        if mode == "naive":
            u = (0.5 + torch.rand(n, 1, size, size, generator=gen) * 0.08).to(dev, dtype).requires_grad_(True)
            for _ in range(steps):
                (g,) = torch.autograd.grad(ascent_objective(u), u)
                g = g / (g.pow(2).flatten(1).mean(1).sqrt().view(-1, 1, 1, 1) + 1e-8)
                with torch.no_grad():
                    u += lr * g
            pixels = u.detach()
        else:
            fscale = _fft_scale(size, size, decay_power).to(dev, dtype)
            spec = (torch.randn(n, 1, size, size // 2 + 1, 2, generator=gen) * 0.01).to(dev, dtype).requires_grad_(True)
            opt = torch.optim.Adam([spec], lr=lr)

            def image() -> torch.Tensor:
                z = torch.view_as_complex(spec) * fscale
                return torch.sigmoid(torch.fft.irfft2(z, s=(size, size), norm="ortho") / 4.0)  # lucid/lucent scaling

            for _ in range(steps):
                u = image()
                theta = _random_affine(n, size, gen, jitter, scale, rotate).to(dev, dtype)
                grid = F.affine_grid(theta, [n, 1, size, size], align_corners=False)
                ut = F.grid_sample(u, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
                loss = -ascent_objective(ut)
                if l2:
                    loss = loss + l2 * (u - 0.5).pow(2).flatten(1).mean(1).sum()
                opt.zero_grad(set_to_none=True)
                (spec.grad,) = torch.autograd.grad(loss, spec)
                opt.step()
            with torch.no_grad():
                pixels = image()
        with torch.no_grad():
            acts = torch.cat([objective(pixels[s:s + CHUNK], filt[s:s + CHUNK]) for s in range(0, n, CHUNK)])
    pixels = pixels.detach().float().cpu()[:, 0]
    if mode == "naive":  # Keras deprocess: std 0.15 around grey, clipped
        mu = pixels.mean((1, 2), keepdim=True)
        sd = pixels.std((1, 2), keepdim=True)
        images = ((pixels - mu) / (sd + 1e-5) * 0.15 + 0.5).clamp(0, 1)
    else:
        images = pixels.clamp(0, 1)
    return FeatVizResult(layer=layer, mode=mode, filters=filt.cpu().numpy(), images=images.numpy(),
                         pixels=pixels.numpy(), activations=acts.float().cpu().numpy(), steps=steps, lr=lr,
                         seconds=time.perf_counter() - t0)


def activation_matrix(model: nn.Module, layer: str, pixels: Any, filters: Sequence[int],
                      preprocess: Preprocess | None = None) -> np.ndarray:
    """``M[i, j]`` = mean activation of filter ``filters[j]`` on image ``pixels[i]`` ([0,1] pixels,
    N×H×W). For optimised images the diagonal should dominate each column."""
    p = torch.as_tensor(np.asarray(pixels), dtype=torch.float32)
    p = p[:, None] if p.ndim == 3 else p
    out = layer_output(model, layer, _std(preprocess, p))
    return out[:, torch.as_tensor(list(filters), dtype=torch.long)].flatten(2).mean(2).numpy()


# --------------------------------------------------------------------------- activations of faces
def filter_activations(model: nn.Module, layer: str, x: torch.Tensor) -> np.ndarray:
    """The layer's output maps (C×h×w, or N×C×h×w for a batch) for model input ``x``."""
    x4 = x[None] if x.ndim == 3 else (x[None, None] if x.ndim == 2 else x)
    out = layer_output(model, layer, x4).float().numpy()
    return out[0] if x.ndim < 4 else out


@dataclass
class TopFaces:
    layer: str
    filters: np.ndarray       # F
    index: np.ndarray         # F×k positions in the faces passed in
    score: np.ndarray         # F×k max activation (over the map) of each face
    maps: np.ndarray          # F×k×H×W activation map of the filter, upsampled to the face, in [0,1]
    peak: np.ndarray          # F×k×2 (row, col) of the strongest response, in face pixels


def top_activating(model: nn.Module, layer: str, faces_u8: torch.Tensor, preprocess: Preprocess, *,
                   filters: Sequence[int] | None = None, k: int = 6, batch_size: int = 256) -> TopFaces:
    """Per filter, the ``k`` faces with the highest maximum activation (batched, forward stops at
    the layer), with each face's activation map upsampled to the face for highlighting."""
    scores = []
    for s in range(0, len(faces_u8), batch_size):
        out = layer_output(model, layer, preprocess(faces_u8[s:s + batch_size]))
        scores.append(out.flatten(2).amax(2))
    allscores = torch.cat(scores)                                   # N×C
    filt = torch.arange(allscores.shape[1]) if filters is None else torch.as_tensor(list(filters), dtype=torch.long)
    k = min(int(k), len(faces_u8))
    top = allscores[:, filt].topk(k, dim=0)                         # k×F
    index, score = top.indices.T.contiguous(), top.values.T.contiguous()
    uniq, inv = torch.unique(index.flatten(), return_inverse=True)
    out = layer_output(model, layer, preprocess(faces_u8[uniq]))    # U×C×h×w
    size = faces_u8.shape[-2:]
    fmap = out[inv.view(-1), filt.repeat_interleave(k)]             # (F·k)×h×w
    up = F.interpolate(fmap[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    lo = up.flatten(1).amin(1).view(-1, 1, 1)
    hi = up.flatten(1).amax(1).view(-1, 1, 1)
    norm = ((up - lo) / (hi - lo).clamp_min(1e-12))
    flat = up.flatten(1).argmax(1)
    peak = torch.stack([flat // size[1], flat % size[1]], 1)
    nf = len(filt)
    return TopFaces(layer, filt.numpy(), index.numpy(), score.numpy(),
                    norm.view(nf, k, *size).numpy(), peak.view(nf, k, 2).numpy())
