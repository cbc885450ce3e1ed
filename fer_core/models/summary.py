"""Layer table: every leaf layer's output shape and parameter count, with conv/pool sizes checked.

Why observed *and* predicted: the reports size every layer by hand with
⌊(W + 2P − D·(K−1) − 1)/S⌋ + 1. This table runs one real forward pass (forward hooks on the leaf
modules) to observe the shapes, and next to each Conv2d / MaxPool2d / AvgPool2d row it writes the
formula with the layer's own numbers filled in and whether it agrees. The formula itself lives in
:func:`fer_core.mathcheck.conv_output_size` (one place).

The model is left as found: hooks are removed in ``finally`` and every submodule's train/eval flag
is restored (the pass runs in eval mode under ``torch.no_grad``, so BatchNorm statistics do not
move).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from fer_core.mathcheck import conv_output_size

__all__ = ["LayerRow", "format_table", "predict_spatial", "summarize", "total_params"]

_POOLS = (nn.MaxPool2d, nn.AvgPool2d)


@dataclass
class LayerRow:
    name: str
    type: str
    output_shape: tuple[int, ...]          # without the batch dimension, e.g. (32, 48, 48)
    params: int                            # counted on a module's first call only (shared ReLUs)
    predicted_shape: tuple[int, ...] | None = None
    formula: str | None = None
    ok: bool | None = None
    input_shape: tuple[int, ...] | None = None


def total_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (each shared tensor once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[1])) if len(v) == 2 else (int(v[0]), int(v[0]))
    return int(v), int(v)


def _axis_formula(w: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> tuple[int, str]:
    out = conv_output_size(w, k, s, p, d, ceil_mode)
    kern = f"{k}" if d == 1 else f"{d}·({k}−1) − 1"
    num = f"{w} + 2·{p} − {kern}"
    if ceil_mode:
        text = f"⌈({num})/{s}⌉ + 1"
        raw = -(-(w + 2 * p - d * (k - 1) - 1) // s) + 1
        if raw != out:
            text += " − 1 (last window would start in the padding)"
    else:
        text = f"⌊({num})/{s}⌋ + 1"
    return out, f"{text} = {out}"


def predict_spatial(module: nn.Module, in_shape: tuple[int, ...]) -> tuple[tuple[int, ...], str] | None:
    """Predicted output shape (without batch) and formula for a Conv2d / MaxPool2d / AvgPool2d.

    ``in_shape`` is (C, H, W). Returns ``None`` for any other layer type.
    """
    if len(in_shape) != 3:
        return None
    c, h, w = in_shape
    if isinstance(module, nn.Conv2d):
        k, s, d = _pair(module.kernel_size), _pair(module.stride), _pair(module.dilation)
        if isinstance(module.padding, str):
            if module.padding == "same":
                return (module.out_channels, h, w), f"padding='same' keeps {h}×{w}"
            p = (0, 0)  # 'valid'
        else:
            p = _pair(module.padding)
        ceil, c_out = False, module.out_channels
    elif isinstance(module, nn.MaxPool2d):
        k, s, p, d = _pair(module.kernel_size), _pair(module.stride or module.kernel_size), \
            _pair(module.padding), _pair(module.dilation)
        ceil, c_out = bool(module.ceil_mode), c
    elif isinstance(module, nn.AvgPool2d):
        k, s, p = _pair(module.kernel_size), _pair(module.stride or module.kernel_size), _pair(module.padding)
        d, ceil, c_out = (1, 1), bool(module.ceil_mode), c
    else:
        return None
    oh, fh = _axis_formula(h, k[0], s[0], p[0], d[0], ceil)
    if h == w and k[0] == k[1] and s[0] == s[1] and p[0] == p[1] and d[0] == d[1]:
        return (c_out, oh, oh), fh
    ow, fw = _axis_formula(w, k[1], s[1], p[1], d[1], ceil)
    return (c_out, oh, ow), f"H: {fh}; W: {fw}"


def _shape(t: Any) -> tuple[int, ...]:
    if isinstance(t, torch.Tensor):
        return tuple(t.shape[1:])
    if isinstance(t, (tuple, list)) and t:
        return _shape(t[0])
    return ()


def summarize(model_or_name: nn.Module | str, input_size: int = 48, in_chans: int = 1,
              **model_kwargs: Any) -> list[LayerRow]:
    """One row per leaf-module call of a forward pass on a 1×in_chans×input_size×input_size input.

    ``model_or_name`` may be a registry name (built with ``in_chans`` and ``model_kwargs``).
    A module called several times (torchvision's shared ReLU) gets one row per call; its
    parameters are counted on the first.
    """
    if isinstance(model_or_name, str):
        from fer_core.models.registry import create_model

        model = create_model(model_or_name, in_chans=in_chans, **model_kwargs)
    else:
        if model_kwargs:
            raise TypeError("model_kwargs are only accepted together with a model name")
        model = model_or_name

    rows: list[LayerRow] = []
    seen: set[int] = set()

    def make_hook(name: str):
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            in_shape = _shape(inputs)
            first = id(module) not in seen
            seen.add(id(module))
            row = LayerRow(
                name=name or type(module).__name__,
                type=type(module).__name__,
                output_shape=_shape(output),
                params=sum(p.numel() for p in module.parameters(recurse=False)) if first else 0,
                input_shape=in_shape,
            )
            pred = predict_spatial(module, in_shape)
            if pred is not None:
                row.predicted_shape, row.formula = pred
                row.ok = row.predicted_shape == row.output_shape
            rows.append(row)
        return hook

    if any(isinstance(m, torch.jit.ScriptModule) for m in model.modules()):
        return _static_rows(model)
    modes = {m: m.training for m in model.modules()}
    handles = []
    try:
        for name, m in model.named_modules():
            if next(m.children(), None) is None:  # leaf
                handles.append(m.register_forward_hook(make_hook(name)))
        ref = next(model.parameters(), None)
        x = torch.zeros(1, in_chans, input_size, input_size,
                        dtype=ref.dtype if ref is not None else torch.float32,
                        device=ref.device if ref is not None else "cpu")
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
    return rows


def _static_rows(model: nn.Module) -> list[LayerRow]:
    """Leaf layers with their parameters but no shapes: PyTorch cannot hook a TorchScript module's
    layers, so an imported TorchScript model gets its layer list from the module tree alone."""
    rows = []
    for name, m in model.named_modules():
        if name and next(m.children(), None) is None:
            kind = getattr(m, "original_name", type(m).__name__)
            rows.append(LayerRow(name=name, type=str(kind), output_shape=(),
                                 params=sum(p.numel() for p in m.parameters(recurse=False))))
    return rows


def _fmt_shape(shape: tuple[int, ...] | None) -> str:
    return "×".join(str(s) for s in shape) if shape else "-"


def format_table(rows: list[LayerRow]) -> str:
    """Plain-text table for the CLI: layer, type, output shape, params, formula check."""
    header = ("Layer", "Type", "Output", "Params", "Check")
    body = []
    for r in rows:
        if r.ok is None:
            check = ""
        elif r.ok:
            check = f"✓ {r.formula}"
        else:
            check = f"✗ predicted {_fmt_shape(r.predicted_shape)}: {r.formula}"
        body.append((r.name, r.type, _fmt_shape(r.output_shape), f"{r.params:,}", check))
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]

    def line(cells: tuple[str, ...]) -> str:
        parts = [c.rjust(w) if i == 3 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(parts).rstrip()

    sep = "  ".join("-" * w for w in widths).rstrip()
    total = sum(r.params for r in rows)
    checked = [r for r in rows if r.ok is not None]
    bad = sum(1 for r in checked if not r.ok)
    footer = f"Total params: {total:,}   conv/pool size checks: {len(checked) - bad}/{len(checked)} agree"
    return "\n".join([line(header), sep, *(line(b) for b in body), sep, footer])
