"""Explanations of a trained model: attribution maps and feature visualisation.

One job per module:

* :mod:`fer_core.explain.attribution` -- ``explain(model, x, target, method, **opts)`` over Captum
  (Saliency, Integrated Gradients, SmoothGrad, Guided Backprop, Grad-CAM, Occlusion), contrastive
  maps, per-confusion-cell means, the Grad-CAM layer table.
* :mod:`fer_core.explain.sanity` -- the model-randomisation sanity check (Spearman similarity of
  maps before/after re-initialising the top layers).
* :mod:`fer_core.explain.colour` -- the one map -> colour mapping (``color_limits``,
  ``colorize``, ``heat_overlay``) used by every page that shows a map.
* :mod:`fer_core.explain.featviz` -- per-filter gradient ascent (all filters of a layer in one
  batch), layer outputs for a face, and the top-activating faces per filter.
* :mod:`fer_core.explain.prefix` -- the model up to one layer for gradient ascent (forward cut at
  the layer; a ``torch.fx``-fused copy of the prefix; a conv channel's mean from window sums).
* :mod:`fer_core.explain.guard` -- ``model_guard``: everything above leaves the model as it found
  it (train/eval flags, parameter ``.grad``/``requires_grad``, no hooks) and never touches the
  caller's input tensor.

Submodules are imported lazily so ``import fer_core.explain`` stays cheap (Captum loads only when
a map is computed).
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
