"""Feature visualisation for one conv layer: what each filter responds to.

Three views of a layer (any name in the model's ``feature_layers``):

* :func:`visualize_filters` -- the input pattern that maximally activates each filter, by gradient
  ascent on the input. **All requested filters are optimised together in one batch**: image ``i``
  of the batch is optimised for filter ``filters[i]`` (its own objective; the model is in eval
  mode, so BatchNorm does not mix the images), so a step's Python, autograd and optimiser
  overhead is paid once for all filters. What remains is per-image arithmetic, which is kept
  small: the forward pass stops at the layer, so deeper layers cost nothing; of the target conv
  only each image's own channel's *mean* is computed, from window sums (:func:`_conv_mean`); the
  layers before it run as a compiled chain when the model is one (:func:`_compiled_prefix`: BN
  folded into the conv, max-pool before the activation and on channels-last memory, the thin
  stem conv as a matmul); and the model runs ``CHUNK`` images at a time within a step, so the
  activations stay in cache. Two modes:

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

Like :mod:`~fer_core.explain.attribution`, every function runs under
:func:`~fer_core.explain.attribution.model_guard`: eval mode, mode/grads/hooks restored in
``finally``. Images are pixels in [0,1]; the model sees ``preprocess.standardize(pixels)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from fer_core.explain.attribution import model_guard
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
#             model in chunks whose activations stay cache-sized (cnn4 conv1 output: 16 × 295 KB);
#             measured faster per image on this 2-core box than one pass over 64 images.


class _Stop(Exception):
    """Raised by the capture hook to end the forward pass once the layer's output is known."""


def _module(model: nn.Module, layer: str) -> nn.Module:
    try:
        return model.get_submodule(layer)
    except AttributeError:
        raise ValueError(f"model has no layer {layer!r}; feature layers: "
                         f"{', '.join(getattr(model, 'feature_layers', ())) or '?'}") from None


@contextmanager
def _capture(model: nn.Module, layer: str, stop: bool = True, *, inputs: bool = False
             ) -> Iterator[dict[str, torch.Tensor]]:
    """Hook that stores the layer's output (or, with ``inputs``, its input) and by default ends
    the forward pass right there."""
    store: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, inp: Any, out: torch.Tensor) -> None:
        store["out"] = out
        if stop:
            raise _Stop

    def pre_hook(_m: nn.Module, inp: Any) -> None:
        store["in"] = inp[0]
        if stop:
            raise _Stop

    module = _module(model, layer)
    handle = module.register_forward_pre_hook(pre_hook) if inputs else module.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def _run(model: nn.Module, layer: str, x: torch.Tensor, *, inputs: bool = False) -> torch.Tensor:
    with _capture(model, layer, inputs=inputs) as store:
        try:
            model(x)
        except _Stop:
            pass
    key = "in" if inputs else "out"
    if key not in store:
        raise RuntimeError(f"layer {layer!r} was not called in the forward pass")
    return store[key]


def _forward_to(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """The layer's output for model input ``x`` (the rest of the network is skipped)."""
    return _run(model, layer, x)


def _own_channel_conv(conv: nn.Conv2d, inp: torch.Tensor, filt: torch.Tensor) -> torch.Tensor:
    """Output channel ``filt[i]`` of ``conv`` on image ``i`` only (n×h×w), as one grouped conv.

    Gradient ascent for filter k needs only channel k of the target layer; computing all C
    channels for each of the C images would spend C× the work on that layer (64× for cnn4's
    conv2). Stacking the images along channels and using ``groups=n`` gives each image its own
    filter in a single call.
    """
    n, cin = inp.shape[:2]
    w = conv.weight[filt]                                            # n×cin×kh×kw
    b = conv.bias[filt] if conv.bias is not None else None
    out = F.conv2d(inp.reshape(1, n * cin, *inp.shape[2:]), w, b, stride=conv.stride,
                   padding=conv.padding, dilation=conv.dilation, groups=n)
    return out[0]


def _conv_mean(conv: nn.Conv2d, inp: torch.Tensor, filt: torch.Tensor) -> torch.Tensor | None:
    """Mean over positions of output channel ``filt[i]`` of ``conv`` on image ``i`` (``n``), without
    running the conv; None when the conv's geometry is not plain integers (then use
    :func:`_own_channel_conv`).

    The objective is the *mean* of a linear map, so per input channel and kernel tap it only needs
    the sum of the input over the window that tap sees (``n×C×kh×kw`` numbers, from ``kw`` column
    sums and ``kh`` row sums of the zero-padded input), dotted with the filter's weights. Exact up
    to float rounding, and it replaces a conv over every position and its backward by a few sums.
    """
    geometry = (*conv.padding, *conv.stride, *conv.dilation)
    if not all(isinstance(v, int) for v in geometry):
        return None
    (kh, kw), (ph, pw), (sh, sw), (dh, dw) = conv.kernel_size, conv.padding, conv.stride, conv.dilation
    h, w = inp.shape[-2:]
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    x = F.pad(inp, (pw, pw, ph, ph)) if ph or pw else inp
    cols = torch.stack([x[..., j * dw: j * dw + (wo - 1) * sw + 1: sw].sum(-1) for j in range(kw)], -1)
    win = torch.stack([cols[..., i * dh: i * dh + (ho - 1) * sh + 1: sh, :].sum(-2) for i in range(kh)], -2)
    out = (win * conv.weight[filt]).flatten(1).sum(1) / (ho * wo)
    return out + conv.bias[filt] if conv.bias is not None else out


def _chain_before(model: nn.Module, layer: str) -> list[nn.Module] | None:
    """The leaf modules that run, in order, between the model input and ``layer``, *if* every
    container from the root's first child down to the layer is an ``nn.Sequential`` (the root's
    own forward is assumed to start with that child -- :func:`_compiled_prefix` checks it
    numerically). None when the path goes through any other container."""
    parts = layer.split(".")
    mods: list[nn.Module] = []
    parent = model
    for depth, name in enumerate(parts):
        children = parent._modules
        if name not in children:
            return None
        if isinstance(parent, nn.Sequential):
            names = list(children)
            mods += [children[k] for k in names[:names.index(name)]]
        elif depth > 0:
            return None
        parent = children[name]
    flat: list[nn.Module] = []
    stack = list(reversed(mods))
    while stack:
        m = stack.pop()
        if isinstance(m, nn.Sequential):
            stack.extend(reversed(list(m)))
        else:
            flat.append(m)
    return flat


SMALL_CONV_TAPS = 32  # a conv with at most this many input taps per output (in_channels·kh·kw; the
#                      1-channel 5×5 stem has 25) runs as unfold + one matmul in the compiled prefix:
#                      measured ~1.7× faster forward+backward than oneDNN's conv for such thin
#                      inputs here (oneDNN is tuned for many input channels).


def _small_conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, conv: nn.Conv2d) -> torch.Tensor:
    """``conv2d(x, w, b)`` with ``conv``'s geometry as im2col + matmul; the result is an N×C×H×W view
    of channels-last memory, which is also what the max-pool after it is fastest on."""
    n, _, h, wd = x.shape
    o, _, kh, kw = w.shape
    (ph, pw), (sh, sw), (dh, dw) = conv.padding, conv.stride, conv.dilation
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    cols = F.unfold(x, (kh, kw), dilation=conv.dilation, padding=conv.padding, stride=conv.stride)
    y = cols.transpose(1, 2) @ w.reshape(o, -1).t()                 # n × (ho·wo) × o
    if b is not None:
        y = y + b
    return y.view(n, ho, wo, o).permute(0, 3, 1, 2)


def _monotone(m: nn.Module) -> bool:
    """A non-decreasing elementwise activation: max-pooling commutes with it."""
    return isinstance(m, nn.ReLU) or (isinstance(m, nn.LeakyReLU) and m.negative_slope >= 0)


def _compiled_prefix(model: nn.Module, layer: str, probe: torch.Tensor
                     ) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The same function as "model input -> ``layer``'s input", with less work, or None.

    Gradient ascent runs the layers before the target at full input resolution, for every image
    and every step, so they are what a batched call costs. For a plain chain of modules (the
    registry's ``features`` nets) the chain is rebuilt with two exact rewrites:

    * an eval-mode ``BatchNorm2d`` right after a ``Conv2d`` is folded into the conv's weights and
      bias (the largest activation is then written and read once instead of three times, forward
      and backward);
    * a ``MaxPool2d`` right after a ReLU/LeakyReLU runs *before* it (``pool(act(z)) ==
      act(pool(z))`` for a non-decreasing activation), so the activation touches a quarter of
      the values, and on channels-last memory (PyTorch's CPU max-pool is ~4× faster there than
      on N×C×H×W);
    * a conv with few input taps (the 1-channel stem) runs as :func:`_small_conv`.

    Everything else is called as is. The rebuilt chain must reproduce the model's own layer input
    on ``probe``; if it does not (the root's forward is not that chain), the caller runs the model.
    """
    chain = _chain_before(model, layer)
    if chain is None or any(m.training for m in chain):
        return None
    ops: list[tuple[str, Any]] = []
    for m in chain:
        prev = ops[-1][0] if ops else ""
        if isinstance(m, nn.Conv2d) and m.padding_mode == "zeros":
            ops.append(("conv", [m.weight.detach(), None if m.bias is None else m.bias.detach(), m]))
        elif isinstance(m, nn.BatchNorm2d) and prev == "conv" and m.running_mean is not None:
            w, b, conv = ops[-1][1]
            scale = (m.running_var + m.eps).rsqrt()
            if m.weight is not None:
                scale = scale * m.weight.detach()
            shift = -m.running_mean * scale + (m.bias.detach() if m.bias is not None else 0.0)
            ops[-1] = ("conv", [w * scale.view(-1, 1, 1, 1), shift if b is None else b * scale + shift, conv])
        elif isinstance(m, nn.MaxPool2d) and prev == "act" and not m.return_indices:
            ops.insert(len(ops) - 1, ("module", m))
        else:
            ops.append(("act" if _monotone(m) else "module", m))

    def small(c: nn.Conv2d) -> bool:
        return (c.groups == 1 and c.in_channels * c.kernel_size[0] * c.kernel_size[1] <= SMALL_CONV_TAPS
                and all(isinstance(v, int) for v in c.padding))

    def run(x: torch.Tensor) -> torch.Tensor:
        for kind, op in ops:
            if kind == "conv":
                w, b, c = op
                x = _small_conv(x, w, b, c) if small(c) else F.conv2d(x, w, b, c.stride, c.padding,
                                                                       c.dilation, c.groups)
            elif isinstance(op, nn.MaxPool2d) and x.ndim == 4:
                x = op(x.contiguous(memory_format=torch.channels_last))
            else:
                x = op(x)
        return x

    with torch.no_grad():
        try:
            ref = _run(model, layer, probe, inputs=True)
            got = run(probe)
        except (RuntimeError, TypeError, ValueError):
            return None
    if got.shape != ref.shape or not torch.allclose(got, ref, rtol=1e-3, atol=1e-4 * float(ref.abs().max()) + 1e-6):
        return None
    return run


def _std(preprocess: Preprocess | None, u: torch.Tensor) -> torch.Tensor:
    return preprocess.standardize(u) if preprocess is not None else u


def layer_output(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """The layer's output (N×C×h×w tensor, no grad) for model input ``x`` (N×1×H×W)."""
    with model_guard(model), torch.no_grad():
        return _forward_to(model, layer, x.float()).detach()


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
    with model_guard(model), torch.no_grad():
        def hook(name: str):
            def fn(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:  # must return None
                shapes.setdefault(name, tuple(out.shape[1:]))
            return fn

        for name in names:
            _module(model, name).register_forward_hook(hook(name))  # removed by model_guard
        model(torch.zeros(1, in_chans, size, size))
    rows = []
    for name in names:
        c, h, w = shapes[name]
        m = model.get_submodule(name)
        k = f"{m.kernel_size[0]}×{m.kernel_size[1]} kernels" if isinstance(m, nn.Conv2d) else ""
        rows.append(FeatureLayer(name, c, h, w, k))
    return rows


def filter_weights(model: nn.Module, layer: str) -> np.ndarray | None:
    """The kernels of a conv layer that reads the 1-channel image directly (C×k×k), else None."""
    m = _module(model, layer)
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
        n_ch = _forward_to(model, layer, torch.zeros(1, 1, size, size, dtype=dtype, device=dev)).shape[1]
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
            prefix = _compiled_prefix(model, layer, _std(preprocess, probe.to(dev, dtype)))

        def objective(pix: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
            """Mean activation of filter f[i] on image i, per image."""
            x = _std(preprocess, pix)
            if own_channel:
                inp = prefix(x) if prefix is not None else _run(model, layer, x, inputs=True)
                out = _conv_mean(target, inp, f)
                return out if out is not None else _own_channel_conv(target, inp, f).flatten(1).mean(1)
            out = _forward_to(model, layer, x)
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
