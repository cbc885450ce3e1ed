"""Explanations of a trained model: attribution maps and feature visualisation.

* :mod:`fer_core.explain.attribution` -- ``explain(model, x, target, method, **opts)`` over Captum
  (Saliency, Integrated Gradients, SmoothGrad, Guided Backprop, Grad-CAM, Occlusion), contrastive
  maps, per-confusion-cell means, colour scales, and the model-randomisation sanity check.
* :mod:`fer_core.explain.featviz` -- per-filter gradient ascent (all filters of a layer in one
  batch), layer outputs for a face, and the top-activating faces per filter.

Both leave the model as they found it (train/eval flags, parameter ``.grad``, hooks) and never
touch the caller's input tensor. Submodules are imported lazily so ``import fer_core.explain``
stays cheap (Captum loads only when a map is computed).
"""

from __future__ import annotations

from typing import Any

__all__ = ["METHODS", "explain", "explain_contrastive", "visualize_filters"]


def __getattr__(name: str) -> Any:
    if name in ("METHODS", "explain", "explain_contrastive"):
        from fer_core.explain import attribution

        return getattr(attribution, name)
    if name == "visualize_filters":
        from fer_core.explain import featviz

        return featviz.visualize_filters
    raise AttributeError(f"module 'fer_core.explain' has no attribute {name!r}")
