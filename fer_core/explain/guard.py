"""One context manager, :func:`model_guard`, under which every explanation runs.

Why: attribution and feature visualisation need the model in eval mode with autograd on, and
they differentiate w.r.t. the *input*; the dashboard, the live predictor and the trainer keep
using the same module object afterwards, so it must come back exactly as it was -- train/eval
flags, parameter ``.grad`` (same object) and ``requires_grad``, and no hooks left behind.

Hooks are not removed by the guard: whoever registers a hook removes it through its handle
(Captum does so in ``finally``; our own code keeps the handles it registers and calls
``.remove()`` in ``finally``). The guard only *verifies* that, so a leak is reported where it
happened instead of silently changing every later gradient.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn

__all__ = ["HookLeak", "hook_ids", "model_guard"]

# PyTorch has no public API that lists the hooks registered on a module (registration returns a
# handle, nothing enumerates them). The leak check therefore *reads* these dictionaries; it never
# writes to them.
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


class HookLeak(RuntimeError):
    """Code run under :func:`model_guard` left hooks registered on the model."""


def hook_ids(model: nn.Module) -> set[tuple[str, str, int]]:
    """``(module name, hook kind, handle id)`` of every hook on ``model`` and its submodules (read-only)."""
    return {(name, kind, key) for name, m in model.named_modules() for kind in _HOOK_DICTS
            for key in getattr(m, kind, {})}


@contextmanager
def model_guard(model: nn.Module) -> Iterator[nn.Module]:
    """Run explanation code on ``model`` in eval mode with gradients enabled, then put it back.

    Restored in ``finally``: every submodule's ``training`` flag and every parameter's ``.grad``
    (the same object, e.g. ``None``) and ``requires_grad``. Works inside
    ``torch.no_grad``/``inference_mode``. Raises :class:`HookLeak` on a normal exit if a hook
    registered inside is still there (an exception already propagating is not replaced).
    """
    modes = [(m, m.training) for m in model.modules()]
    params = [(p, p.grad, p.requires_grad) for p in model.parameters()]
    hooks = hook_ids(model)
    finished = False
    try:
        model.eval()
        with torch.inference_mode(False), torch.enable_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*(backward hooks on ReLU|did not already "
                                    r"require gradients|required_grads has been set).*")
            yield model
        finished = True
    finally:
        for m, training in modes:
            m.training = training
        for p, grad, requires_grad in params:
            p.grad = grad
            p.requires_grad_(requires_grad)
        leaked = hook_ids(model) - hooks
        if leaked and finished:
            raise HookLeak(f"hooks left on the model: {sorted(leaked)[:5]}")
