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

``stem_stride=2`` makes the first conv strided and drops stage 1's pool (48 → 24 → 24 → 12 → 6 → 3):
the same head and layer names at a quarter of stage 1's cost, which at 48×48 is most of a
narrow net's compute -- the knob for cheap live students (``bench/student_latency.py``).
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
        fc: int = 1024, fc_layers: int = 2, drop: float = 0.5, stem_stride: int = 1) -> nn.Module:
    """VGG-style FER net (Khaireddin & Chen 2021): 4 stages × two 3×3 conv+BN+ReLU, pool, FC head with dropout.

    ``width`` = channels per stage; ``fc`` = hidden FC width; ``fc_layers`` = number of hidden FC
    layers (each Linear + ReLU + Dropout(``drop``)) before the output layer; ``stem_stride=2``
    downsamples in the first conv instead of after stage 1.
    """
    w = check_len("width", width, 4)
    if fc_layers < 0:
        raise ValueError(f"fc_layers must be >= 0, got {fc_layers}")
    if stem_stride not in (1, 2):
        raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride}")
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    prev = in_chans
    for s, ch in enumerate(w, start=1):
        strided = stem_stride == 2 and s == 1
        stage = OrderedDict(**conv_bn_act(prev, ch, 3, nn.ReLU(), index=1, stride=2 if strided else 1),
                            **conv_bn_act(ch, ch, 3, nn.ReLU(), index=2))
        if not strided:
            stage["pool"] = nn.MaxPool2d(2)
        stages[f"stage{s}"] = nn.Sequential(stage)
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
