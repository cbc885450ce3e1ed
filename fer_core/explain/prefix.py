"""The model up to one layer, as gradient ascent on the input needs it: exact and cheap.

Gradient ascent for filter ``k`` of a conv layer runs everything before that layer, for every
image and every step, and then needs only the *mean* of channel ``k``. This module provides:

* :func:`run_to` -- the layer's output (or input) for a model input, with the rest of the network
  skipped (a forward hook that stops the forward pass);
* :func:`compiled_prefix` -- "model input -> the layer's input" as a ``torch.fx`` graph of the
  model's own forward, cut at the layer, with BatchNorm fused into the convolutions
  (``torch.fx.experimental.optimization.fuse``), each max-pool moved before the activation it
  follows, and channels-last memory; checked against the model on a probe;
* :func:`conv_mean` / :func:`own_channel_conv` -- channel ``filt[i]`` of a conv on image ``i``
  only, as its spatial mean from window sums, or as one grouped conv.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import fx

__all__ = ["compiled_prefix", "conv_mean", "layer_module", "own_channel_conv", "run_to"]


def layer_module(model: nn.Module, layer: str) -> nn.Module:
    """``model.get_submodule(layer)``, with a ValueError naming the model's feature layers."""
    try:
        return model.get_submodule(layer)
    except AttributeError:
        raise ValueError(f"model has no layer {layer!r}; feature layers: "
                         f"{', '.join(getattr(model, 'feature_layers', ())) or '?'}") from None


class _Stop(Exception):
    """Raised by the capture hook to end the forward pass once the layer's tensor is known."""


@contextmanager
def _capture(model: nn.Module, layer: str, inputs: bool) -> Iterator[dict[str, torch.Tensor]]:
    store: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, inp: Any, out: torch.Tensor) -> None:
        store["t"] = out
        raise _Stop

    def pre_hook(_m: nn.Module, inp: Any) -> None:
        store["t"] = inp[0]
        raise _Stop

    module = layer_module(model, layer)
    handle = module.register_forward_pre_hook(pre_hook) if inputs else module.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def run_to(model: nn.Module, layer: str, x: torch.Tensor, *, inputs: bool = False) -> torch.Tensor:
    """The layer's output (with ``inputs``: its first input) for model input ``x``; the forward
    pass ends at the layer. Differentiable w.r.t. ``x``."""
    with _capture(model, layer, inputs) as store:
        try:
            model(x)
        except _Stop:
            pass
    if "t" not in store:
        raise RuntimeError(f"layer {layer!r} was not called in the forward pass")
    return store["t"]


def own_channel_conv(conv: nn.Conv2d, inp: torch.Tensor, filt: torch.Tensor) -> torch.Tensor:
    """Output channel ``filt[i]`` of ``conv`` on image ``i`` only (n×h×w), as one grouped conv.

    Gradient ascent for filter k needs only channel k of the target layer; computing all C
    channels for each of the C images would spend C× the work on that layer. Stacking the images
    along channels and using ``groups=n`` gives each image its own filter in a single call.
    """
    n, cin = inp.shape[:2]
    w = conv.weight[filt]                                            # n×cin×kh×kw
    b = conv.bias[filt] if conv.bias is not None else None
    out = F.conv2d(inp.reshape(1, n * cin, *inp.shape[2:]), w, b, stride=conv.stride,
                   padding=conv.padding, dilation=conv.dilation, groups=n)
    return out[0]


def conv_mean(conv: nn.Conv2d, inp: torch.Tensor, filt: torch.Tensor) -> torch.Tensor | None:
    """Mean over positions of output channel ``filt[i]`` of ``conv`` on image ``i`` (``n``), without
    running the conv; None when the conv's geometry is not plain integers (then use
    :func:`own_channel_conv`).

    The objective is the *mean* of a linear map, so per input channel and kernel tap it only needs
    the sum of the input over the window that tap sees (``n×C×kh×kw`` numbers, from ``kw`` column
    sums and ``kh`` row sums of the zero-padded input), dotted with the filter's weights. Exact up
    to float rounding, and it replaces a conv over every position and its backward by a few sums.
    Hand-written because no library op computes a conv's spatial mean without the conv.
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


# --------------------------------------------------------------------------- the compiled prefix
class _UpTo(fx.Tracer):
    """Traces like ``fx.symbolic_trace`` but keeps ``layer`` as one call, whatever its type."""

    def __init__(self, layer: str) -> None:
        super().__init__()
        self.layer = layer

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return qualname == self.layer or super().is_leaf_module(m, qualname)


def _graph_to(model: nn.Module, layer: str) -> fx.GraphModule | None:
    """The model's forward traced and cut at ``layer``: returns the layer's input."""
    graph = _UpTo(layer).trace(model)
    calls = [n for n in graph.nodes if n.op == "call_module" and n.target == layer]
    if len(calls) != 1 or not calls[0].args:
        return None
    out = next(n for n in graph.nodes if n.op == "output")
    out.args = (calls[0].args[0],)
    gm = fx.GraphModule(model, graph)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()        # so fuse() deep-copies only the prefix
    gm.recompile()
    return gm


def _monotone(m: nn.Module) -> bool:
    """A non-decreasing elementwise activation: max-pooling commutes with it."""
    return isinstance(m, nn.ReLU) or (isinstance(m, nn.LeakyReLU) and m.negative_slope >= 0)


def _pool_before_activation(gm: fx.GraphModule) -> None:
    """Rewrite ``pool(act(z))`` to ``act(pool(z))`` for a max-pool after a non-decreasing activation.

    Exact (max commutes with a non-decreasing function), and the activation, forward and backward,
    then touches a quarter of the values. No fx pass in torch does this rewrite.
    """
    mods = dict(gm.named_modules())
    for pool in list(gm.graph.nodes):
        if not (pool.op == "call_module" and isinstance(mods[pool.target], nn.MaxPool2d)
                and not mods[pool.target].return_indices and len(pool.args) == 1 and not pool.kwargs):
            continue
        act = pool.args[0]
        if not (isinstance(act, fx.Node) and act.op == "call_module" and _monotone(mods[act.target])
                and len(act.users) == 1 and len(act.args) == 1 and not act.kwargs):
            continue
        pool.replace_all_uses_with(act)
        pool.args, act.args = act.args, (pool,)
        act.prepend(pool)
    gm.graph.lint()
    gm.recompile()


def compiled_prefix(model: nn.Module, layer: str, probe: torch.Tensor
                    ) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The same function as "model input -> ``layer``'s input", with less work, or None.

    A frozen copy of the traced prefix (see the module docstring). Call it on an eval-mode model
    (BatchNorm is fused with its running statistics). None when the forward is not fx-traceable,
    the layer is not called exactly once, or the result does not reproduce the model's own layer
    input on ``probe`` -- then the caller runs the model itself.
    """
    from torch.fx.experimental.optimization import fuse

    try:
        gm = _graph_to(model, layer)
        if gm is None:
            return None
        gm = fuse(gm, no_trace=True)            # a deep copy with BN folded into the convs
        gm.requires_grad_(False)                # ascent differentiates w.r.t. the input only
        _pool_before_activation(gm)
        gm = gm.to(memory_format=torch.channels_last)
    except Exception:  # symbolic tracing fails in many ways (TraceError, TypeError, ...) on dynamic forwards
        return None

    def run(x: torch.Tensor) -> torch.Tensor:
        return gm(x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x)

    with torch.no_grad():
        try:
            ref = run_to(model, layer, probe, inputs=True)
            got = run(probe)
        except (RuntimeError, TypeError, ValueError):
            return None
    if got.shape != ref.shape or not torch.allclose(got, ref, rtol=1e-3, atol=1e-4 * float(ref.abs().max()) + 1e-6):
        return None
    return run
