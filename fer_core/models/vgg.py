"""``vgg``: the VGG-style FER net (after Khaireddin & Chen 2021, "Facial Emotion Recognition:
State of the Art Performance on FER2013").

Why its own family: it is the strongest plain CNN the project trains from scratch on CPUs and
the architecture of DESIGN.md's reference point, so its width and head are kwargs rather than
copies of the class::

    create_model("vgg")                                          # 64-128-256-512, FC 1024-1024, ≈10.4M
    create_model("vgg", width=(32, 64, 128, 256), fc=256)        # the reference point, ≈1.83M
    create_model("vgg", width=(32, 64, 128, 256), fc=256, fc_layers=1)   # ≈1.77M, one hidden FC

Four stages, each two 3×3 convs (padding 1) with BN + ReLU, then a 2×2 max-pool:
48 → 24 → 12 → 6 → 3, so the head sees ``width[3]·3·3`` features.
Layer names read ``features.stage2.conv1`` etc.; ``gradcam_layer`` is the last ReLU of stage 4
(6×6, before the pool).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch.nn as nn

from fer_core.models.layers import SequentialNet, check_len, conv_bn_act, init_weights
from fer_core.models.registry import register_model


@register_model
def vgg(num_classes: int = 7, in_chans: int = 1, width: Sequence[int] = (64, 128, 256, 512),
        fc: int = 1024, fc_layers: int = 2, drop: float = 0.5) -> nn.Module:
    """VGG-style FER net (Khaireddin & Chen 2021): 4 stages × two 3×3 conv+BN+ReLU, pool, FC head with dropout.

    ``width`` = channels per stage; ``fc`` = hidden FC width; ``fc_layers`` = number of hidden FC
    layers (each Linear + ReLU + Dropout(``drop``)) before the output layer.
    """
    w = check_len("width", width, 4)
    if fc_layers < 0:
        raise ValueError(f"fc_layers must be >= 0, got {fc_layers}")
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    prev = in_chans
    for s, ch in enumerate(w, start=1):
        stages[f"stage{s}"] = nn.Sequential(OrderedDict(
            **conv_bn_act(prev, ch, 3, nn.ReLU(), index=1),
            **conv_bn_act(ch, ch, 3, nn.ReLU(), index=2),
            pool=nn.MaxPool2d(2),
        ))
        prev = ch
    head: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    feat = prev * 3 * 3
    for i in range(1, fc_layers + 1):
        head[f"fc{i}"] = nn.Linear(feat, fc)
        head[f"relu{i}"] = nn.ReLU()
        head[f"drop{i}"] = nn.Dropout(drop)
        feat = fc
    if fc_layers == 0:
        head["drop0"] = nn.Dropout(drop)
    head[f"fc{fc_layers + 1}"] = nn.Linear(feat, num_classes)
    model = SequentialNet(
        nn.Sequential(stages), nn.Sequential(head),
        gradcam_layer="features.stage4.relu2",
        feature_layers=tuple(f"features.stage{s}.conv{c}" for s in range(1, 5) for c in (1, 2)),
    )
    init_weights(model)
    return model
