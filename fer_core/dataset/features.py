"""Penultimate-layer features of a run's model: what the classifier head sees for each face.

Why the input of the last linear layer: it is the representation the model's decision is a linear
function of, so faces the model finds alike sit close together there -- which is what an
embedding map should show (FiftyOne and cleanlab use the same layer). It works for any
architecture with a linear head, including imported ones, without knowing the layer names:

* "last" means last *executed*: one probe forward pass on a blank face records the order in which
  linear layers run (registration order can differ from call order in a user's module);
* "linear" means ``nn.Linear`` or a leaf module with its own 2-D ``weight`` (``torch.export``'s
  unflattened ``InterpreterModule`` keeps no class, onnx2torch turns ``Gemm`` into ``nn.Linear``);
* an ensemble module (one with ``.members``) contributes each member's own last linear layer and
  the per-member features are concatenated, member 0 first.

Why forward *pre*-hooks: the hook receives the layer's input, removed through its handle in a
``finally`` so an exception never leaves a hook behind. Everything runs under ``loaded.lock``
(one batch at a time, so the live thread and other pages are not blocked for the whole set),
under ``torch.no_grad`` and in eval mode (a module found in training mode is restored after).

API: :func:`feature_layer`, :func:`feature_layers_of`, :func:`feature_reason`,
:func:`penultimate_features`.
"""

from __future__ import annotations

import weakref
from functools import partial
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from fer_core.model import LoadedRun, ModelUnavailable

__all__ = ["feature_layer", "feature_layers_of", "feature_reason", "is_linear", "penultimate_features"]

NO_LINEAR = ("the model has no linear (fully connected) layer, so there is no penultimate "
             "representation to map")

# LoadedRun -> (its key, the layer names): the probe pass runs once per loaded checkpoint.
_PROBED: "weakref.WeakKeyDictionary[LoadedRun, tuple[Any, list[str]]]" = weakref.WeakKeyDictionary()


def is_linear(module: nn.Module) -> bool:
    """``nn.Linear``, or a leaf module whose own ``weight`` parameter is 2-D (exported graphs)."""
    if isinstance(module, nn.Linear):
        return True
    if isinstance(module, torch.jit.ScriptModule) or next(module.children(), None) is not None:
        return False
    w = dict(module.named_parameters(recurse=False)).get("weight")
    return w is not None and w.ndim == 2


def _groups(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name prefix, module) whose last linear layer each gives one block of features."""
    members = getattr(model, "members", None)
    if isinstance(members, nn.ModuleList) and len(members):
        return [(f"members.{i}.", m) for i, m in enumerate(members)]
    return [("", model)]


def _probe(loaded: LoadedRun) -> list[str]:
    """Names of the last-executed linear layer of each group (empty when a group has none)."""
    model = loaded.module()
    names: list[str] = []
    order: dict[str, list[str]] = {}
    handles = []
    size = int(loaded.preprocess.size)
    with loaded.lock:  # hooks live only while this thread holds the model
        try:
            for prefix, group in _groups(model):
                order[prefix] = []
                for name, mod in group.named_modules():
                    if name and is_linear(mod):
                        handles.append(mod.register_forward_pre_hook(
                            lambda _m, _a, p=prefix, n=name: order[p].append(p + n)))
            if not handles:
                return []
            with torch.no_grad():
                _in_eval(model, lambda: model(loaded.inputs(np.full((1, size, size), 128, np.uint8))))
        finally:
            for h in handles:
                h.remove()
    for prefix in order:
        if not order[prefix]:
            return []  # a member without a linear head: its block would be missing
        names.append(order[prefix][-1])
    return names


def _in_eval(model: nn.Module, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` with ``model`` in eval mode, restoring training mode if it was set."""
    was = model.training
    if was:
        model.eval()
    try:
        return fn()
    finally:
        if was:
            model.train(True)


def feature_layers_of(loaded: LoadedRun) -> list[str]:
    """Module names whose inputs are the penultimate features (one per ensemble member, else one),
    or ``[]`` when there are none (no torch module, unhookable, or no linear layer)."""
    if loaded.layer_reason:
        return []
    cached = _PROBED.get(loaded)
    if cached is None or cached[0] != loaded.key:
        cached = (loaded.key, _probe(loaded))
        _PROBED[loaded] = cached
    return list(cached[1])


def feature_layer(loaded: LoadedRun) -> str | None:
    """Name of the module whose input is the penultimate representation (``", "``-joined per
    member for an ensemble), or None when there is none (:func:`feature_reason` says why)."""
    names = feature_layers_of(loaded)
    return ", ".join(names) if names else None


def feature_reason(loaded: LoadedRun) -> str | None:
    """None when penultimate features exist, else one sentence why not."""
    if loaded.gradient_reason:
        return loaded.gradient_reason
    if loaded.layer_reason:  # e.g. TorchScript: PyTorch cannot hook a ScriptModule's layers
        return loaded.layer_reason
    return None if feature_layers_of(loaded) else NO_LINEAR


def penultimate_features(loaded: LoadedRun, faces_u8: Any, *, batch_size: int = 256,
                         progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Penultimate features (N×D float32) of uint8 faces (N×H×W, or anything with such an ``.x``), in batches.

    For an ensemble D is the sum of the members' widths. ``progress(done, total)`` is called after
    each batch. Raises :class:`~fer_core.model.ModelUnavailable` with :func:`feature_reason`.
    """
    reason = feature_reason(loaded)
    if reason:
        raise ModelUnavailable(reason)
    names = feature_layers_of(loaded)
    model = loaded.module()
    faces = np.asarray(getattr(faces_u8, "x", faces_u8), dtype=np.uint8)  # a FaceBatch / FaceSet too
    n = len(faces)
    modules = dict(model.named_modules())
    blocks: list[np.ndarray] = []
    got: dict[str, torch.Tensor] = {}

    def keeper(name: str) -> Callable[[nn.Module, tuple], None]:
        def keep(_m: nn.Module, args: tuple) -> None:
            got[name] = args[0].detach()  # the last call wins (a layer applied twice)
        return keep

    batch_size = max(1, int(batch_size))
    for start in range(0, n, batch_size):
        got.clear()
        handles = []
        with loaded.lock:  # per batch: other callers (live frames, pages) get the model in between
            try:
                for name in names:
                    handles.append(modules[name].register_forward_pre_hook(keeper(name)))
                x = loaded.inputs(faces[start:start + batch_size])
                with torch.no_grad():
                    _in_eval(model, partial(model, x))
            finally:
                for h in handles:
                    h.remove()
        missing = [nm for nm in names if nm not in got]
        if missing:
            raise ModelUnavailable(f"layer {missing[0]} did not run in the forward pass, so its input "
                                   "cannot be read")
        blocks.append(torch.cat([got[nm].float().reshape(len(x), -1) for nm in names], 1).cpu().numpy())
        if progress is not None:
            progress(min(start + batch_size, n), n)
    if not blocks:
        dim = sum(_in_features(modules[nm]) for nm in names)
        return np.empty((0, dim), np.float32)
    return np.ascontiguousarray(np.concatenate(blocks), dtype=np.float32)


def _in_features(module: nn.Module) -> int:
    w = dict(module.named_parameters(recurse=False)).get("weight")
    return int(w.shape[1]) if w is not None else 0
