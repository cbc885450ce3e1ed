"""Building blocks shared by the hand-built families (:mod:`~fer_core.models.cnn`,
:mod:`~fer_core.models.vgg`).

Why one module: the builders differ in depth and width but share the container that carries the
registry's metadata attributes, the weight initialisation and the conv + BN + activation unit.
Layer names stay those the reports use (``conv1``, ``bn1``, ``relu1`` ...), so checkpoints'
``state_dict`` keys and the dashboard's layer pickers do not depend on where a block is defined.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn as nn

__all__ = ["SequentialNet", "check_len", "conv_bn_act", "init_weights"]


class SequentialNet(nn.Module):
    """``features`` → ``classifier`` with the registry's metadata attributes."""

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential, *,
                 gradcam_layer: str, feature_layers: tuple[str, ...], input_size: int = 48) -> None:
        super().__init__()
        self.features = features
        self.classifier = classifier
        self.gradcam_layer = gradcam_layer
        self.feature_layers = feature_layers
        self.input_size = input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def init_weights(model: nn.Module, nonlinearity: str = "relu", slope: float = 0.0) -> None:
    """Kaiming-normal (fan-out) convs with zero bias, BatchNorm at γ=1, β=0.

    ``nn.Linear`` keeps PyTorch's default init.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, a=slope, mode="fan_out", nonlinearity=nonlinearity)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def check_len(name: str, value: Sequence[int], n: int) -> tuple[int, ...]:
    """``value`` as a tuple of ``n`` ints; a clear ``ValueError`` naming the kwarg otherwise."""
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ValueError(f"{name} needs {n} values, got {len(value)}: {value}")
    return value


def conv_bn_act(in_ch: int, out_ch: int, kernel_size: int, act: nn.Module, *, index: int | str = "",
                act_name: str = "relu", stride: int = 1) -> OrderedDict[str, nn.Module]:
    """``conv{index}`` (size-keeping padding, no bias) → ``bn{index}`` → ``{act_name}{index}``.

    The conv has no bias because the BatchNorm's β plays that role. Returned as named entries so
    the caller splices them into its own ``nn.Sequential`` and the layer names stay flat.
    """
    return OrderedDict([
        (f"conv{index}", nn.Conv2d(in_ch, out_ch, kernel_size=kernel_size, stride=stride,
                                     padding=kernel_size // 2, bias=False)),
        (f"bn{index}", nn.BatchNorm2d(out_ch)),
        (f"{act_name}{index}", act),
    ])
