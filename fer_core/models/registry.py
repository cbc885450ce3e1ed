"""One registry for every architecture (timm-style ``@register_model`` builders).

Why a registry: a checkpoint stores only ``model`` (a registry key) and ``model_kwargs``; the
run is rebuilt from that alone, and the CLI, the dashboard's model picker and the tests all list
the same names from :func:`list_models`.

Contract for every builder: ``builder(num_classes=7, in_chans=1, **kwargs) -> nn.Module`` and the
returned module carries

* ``gradcam_layer: str``   -- dotted name (``model.get_submodule``) of the default Grad-CAM layer,
* ``feature_layers: tuple[str, ...]`` -- dotted names of the conv layers offered for feature
  visualisation, shallow to deep,
* ``input_size: int``      -- the square input side it was designed for (48).
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch.nn as nn

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    builder: Builder
    description: str


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(fn: Builder) -> Builder:
    """Register ``fn`` under its function name; the docstring's first line is its description."""
    name = fn.__name__
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    doc = inspect.getdoc(fn) or ""
    _REGISTRY[name] = ModelInfo(name=name, builder=fn, description=doc.split("\n")[0])
    return fn


def _ensure_loaded() -> None:
    # Importing the family modules runs their @register_model decorators.
    from fer_core.models import cnn, tv, vgg  # noqa: F401


def list_models() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)


def model_info(name: str) -> ModelInfo:
    _ensure_loaded()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}.{hint} Registered models: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create_model(name: str, num_classes: int = 7, in_chans: int = 1, **kwargs: Any) -> nn.Module:
    """Build a registered model; unknown names list the valid ones."""
    info = model_info(name)
    model = info.builder(num_classes=num_classes, in_chans=in_chans, **kwargs)
    for attr in ("gradcam_layer", "feature_layers", "input_size"):
        if not hasattr(model, attr):
            raise TypeError(f"builder {name!r} returned a model without the {attr!r} attribute")
    model.registry_name = name
    return model
