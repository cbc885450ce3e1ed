"""The run kinds ``foreign`` (a model made elsewhere) and ``predictions`` (no model at all), as
loaders of :class:`fer_core.model.LoadedRun`.

Why ONNX runs keep two engines: probabilities come from ONNX Runtime on the user's own graph (the
file they deploy), while gradients need a torch module, converted by onnx2torch when the graph's
ops allow it; otherwise the run is inference-only and says why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fer_core.foreign.adapter import ForeignModule
from fer_core.foreign.formats import OnnxForward, load_torch_module, onnx_to_torch
from fer_core.model import ModelSource, ModelUnavailable, register_kind


def adapter_for(net: Any, f: dict[str, Any]) -> ForeignModule:
    inp = f.get("input", {})
    return ForeignModule(net, channels=int(inp.get("channels", 1)), layout=str(inp.get("layout", "nchw")),
                         output=str(f.get("output", "logits")), columns=f.get("columns"))


@register_kind("foreign")
def load_foreign(run: Path, config: dict[str, Any], which: str, device: torch.device) -> ModelSource:
    f = config.get("foreign") or {}
    path = run / str(f.get("file", ""))
    if not path.is_file():
        raise ModelUnavailable(f"{run.name}: its model file {f.get('file')!r} is missing")
    fmt = str(f.get("format"))
    describe = f"imported {fmt} model ({f.get('source', path.name)})"
    if fmt == "onnx":
        forward = adapter_for(OnnxForward(path), f)
        module, reason = onnx_to_torch(path) if f.get("gradients", True) else (None, f.get("no_gradients"))
        return ModelSource(module=None if module is None else adapter_for(module, f).eval(), checkpoint=path,
                           reason=reason, forward=forward, describe=describe)
    net = load_torch_module(path, fmt, code=f.get("code"), kwargs=f.get("kwargs") or {},
                            trust_code=bool(f.get("trust_code")), code_base=run)
    return ModelSource(module=adapter_for(net, f).to(device).eval(), checkpoint=path, describe=describe)


@register_kind("predictions")
def load_predictions_only(run: Path, config: dict[str, Any], which: str, device: torch.device) -> ModelSource:
    raise ModelUnavailable(f"{run.name} holds imported predictions only ({config.get('predictions_source', 'a CSV')}),"
                           " no model: this page needs one")


def export_module(run: Path, config: dict[str, Any], module: torch.nn.Module) -> torch.nn.Module:
    """The module to hand to an ONNX exporter: a ``torch.export`` program's flat graph module
    (its unflattened tree, kept for hooks, does not re-export), else the run's module."""
    f = config.get("foreign") or {}
    if f.get("format") == "export":
        return adapter_for(torch.export.load(str(run / f["file"])).module(), f).eval()
    return module
