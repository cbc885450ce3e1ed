"""``ForeignModule``: a user's network behind our input and output conventions.

Why an adapter module and not per-page conversions: every page, attribution method and the live
path calls the run's module on our standardised ``N×1×S×S`` faces and reads logits over the run's
classes. The user's size and value range are the run's stored :class:`~fer_core.preprocess.
Preprocess` (resize to ``S``; ``unit`` = pixels/255, ``255`` = raw pixels, ``standard`` =
(pixels/255 - mean)/std); what the Preprocess cannot express -- grey replicated to 3 channels,
NHWC layout, probabilities instead of logits, another class order or extra classes -- happens
here, inside one differentiable module. So Captum attributes the 1-channel face the user sees,
Grad-CAM hooks the user's own conv layers (``net.<their name>``), and softmax of our output is
exactly the user's probabilities over the kept classes.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn

from fer_core.labels import EMOTIONS

# FER+ and Keras tutorials name the classes differently; these spellings mean our class.
CLASS_SYNONYMS = {"anger": "angry", "happiness": "happy", "sadness": "sad", "surprised": "surprise",
                  "fearful": "fear", "disgusted": "disgust", "neutrality": "neutral"}


def canonical_class(name: str) -> str:
    n = name.strip().lower()
    return CLASS_SYNONYMS.get(n, n)


def class_mapping(model_classes: Sequence[str]) -> tuple[list[str], list[int] | None, list[str]]:
    """(run classes, output columns to keep in that order or None, dropped class names).

    When the model's classes are our seven emotions (any order, any spelling above), plus maybe
    extras such as FER+'s ``contempt``, the run uses FER2013's order and drops the extras, so it
    can be evaluated on FER2013 labels. Otherwise the model's own classes are kept as they are.
    """
    canon = [canonical_class(c) for c in model_classes]
    if set(EMOTIONS) <= set(canon):
        cols = [canon.index(e) for e in EMOTIONS]
        dropped = [model_classes[i] for i in range(len(canon)) if i not in cols]
        return list(EMOTIONS), (None if cols == list(range(len(canon))) else cols), dropped
    return list(model_classes), None, []


def conv_layer_names(net: nn.Module) -> list[str]:
    """Names of the modules that are 2-D convolutions: ``nn.Conv2d`` (also what onnx2torch builds),
    or any module whose own parameters include a 4-D ``weight`` (``torch.export.unflatten`` turns
    layers into interpreter modules, TorchScript into script modules)."""
    names = []
    for name, m in net.named_modules():
        if not name or "." in name.split(".")[-1]:
            continue
        if isinstance(m, nn.Conv2d):
            names.append(name)
            continue
        w = dict(m.named_parameters(recurse=False)).get("weight")
        if w is not None and w.ndim == 4 and not list(m.children()):
            names.append(name)
    return names


class ForeignModule(nn.Module):
    """Our standardised 1-channel faces -> the user's network -> logits over the run's classes."""

    def __init__(self, net: nn.Module | Any, *, channels: int = 1, layout: str = "nchw", output: str = "logits",
                 columns: Sequence[int] | None = None) -> None:
        super().__init__()
        if layout not in ("nchw", "nhwc"):
            raise ValueError(f"layout must be nchw or nhwc, not {layout!r}")
        if output not in ("logits", "probs"):
            raise ValueError(f"output must be logits or probs, not {output!r}")
        if isinstance(net, nn.Module):
            self.net = net
        else:
            self._call = net  # an inference-only callable (ONNX Runtime): not a submodule
        self.channels, self.layout, self.output = int(channels), layout, output
        self.columns = None if columns is None else [int(c) for c in columns]
        convs = conv_layer_names(self.net) if isinstance(net, nn.Module) else []
        self.hook_reason: str | None = None
        if isinstance(net, torch.jit.ScriptModule):
            # PyTorch cannot hook the layers of a TorchScript module; input gradients still work
            self.hook_reason = ("TorchScript modules cannot be hooked (PyTorch does not support forward "
                                "hooks on ScriptModules), so Grad-CAM and filter images need the model saved "
                                "with torch.export (`torch.export.save`) or as a state_dict + its class")
            convs = []
        self.feature_layers = tuple(f"net.{n}" for n in convs)
        if convs:
            self.gradcam_layer = f"net.{convs[-1]}"

    def train(self, mode: bool = True) -> "ForeignModule":
        """Switch modes where the user's module allows it: a ``torch.export`` graph module refuses
        ``train()`` (its mode was fixed when it was exported), which is not an error here."""
        self.training = mode
        if hasattr(self, "net"):
            try:
                self.net.train(mode)
            except (NotImplementedError, RuntimeError):
                pass
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels != x.shape[1]:
            x = x.expand(-1, self.channels, -1, -1) if x.shape[1] == 1 else x[:, : self.channels]
        if self.layout == "nhwc":
            x = x.permute(0, 2, 3, 1)
        out = self.net(x) if hasattr(self, "net") else self._call(x)
        if isinstance(out, dict):
            out = next(iter(out.values()))
        if isinstance(out, (tuple, list)):
            out = out[0]
        out = out.reshape(out.shape[0], -1).float()
        if self.output == "probs":
            out = out.clamp_min(1e-12).log()  # log-probabilities: their softmax is the probabilities
        if self.columns is not None:
            out = out[:, self.columns]
        return out
