"""Small hand-built CNNs from the course reports: ``cnn3``, ``cnn4`` and ``alexnet_bn``.

Why these live side by side: they are the nets the reports reason about layer by layer (output
sizes, saliency, filters), so every layer gets a readable name (``features.conv1``,
``features.bn1`` ... ``classifier.fc1``) that shows up unchanged in the summary table, the Grad-CAM
layer picker and the feature-visualisation picker.

Activations are never ``inplace``: attribution hooks (Captum's Grad-CAM / guided backprop) break
on tensors modified in place, and the memory saved at 48×48 is negligible.

``gradcam_layer`` points at the last conv block's activation *before* its pool, where the map is
still 12×12 or 6×6, rather than after it (6×6 or 3×3).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch.nn as nn

from fer_core.models.layers import SequentialNet, check_len, conv_bn_act, init_weights
from fer_core.models.registry import register_model


@register_model
def cnn3(num_classes: int = 7, in_chans: int = 1, channels: Sequence[int] = (64, 128, 512),
         drop: float = 0.0) -> nn.Module:
    """Plain 3-layer CNN (64-128-512, 3×3 conv + ReLU + pool, global average pool) for saliency and filters.

    Spatial sizes on 48×48: conv1 48 → pool 24 → conv2 24 → pool 12 → conv3 12 → pool 6 → GAP 1.
    No batch norm on purpose: the filters and saliency maps are those of the bare convolutions.
    Global average pooling instead of a wide FC keeps it at ≈0.67M parameters.
    """
    c = check_len("channels", channels, 3)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    prev = in_chans
    for i, ch in enumerate(c, start=1):
        layers[f"conv{i}"] = nn.Conv2d(prev, ch, kernel_size=3, padding=1)
        layers[f"relu{i}"] = nn.ReLU()
        layers[f"pool{i}"] = nn.MaxPool2d(2)
        prev = ch
    classifier = nn.Sequential(OrderedDict(
        gap=nn.AdaptiveAvgPool2d(1),
        flatten=nn.Flatten(),
        dropout=nn.Dropout(drop),
        fc=nn.Linear(prev, num_classes),
    ))
    model = SequentialNet(nn.Sequential(layers), classifier, gradcam_layer="features.relu3",
                           feature_layers=("features.conv1", "features.conv2", "features.conv3"))
    init_weights(model)
    return model


@register_model
def cnn4(num_classes: int = 7, in_chans: int = 1, channels: Sequence[int] = (32, 64, 128, 128),
         fc: int = 256, drop: float = 0.5, negative_slope: float = 0.01) -> nn.Module:
    """4-conv CNN 32(5×5)-64-128-128, BN + LeakyReLU + pool each, FC 256 with dropout.

    Spatial sizes on 48×48: 48 → 24 → 12 → 6 → 3 (each conv keeps the size: 5×5 with padding 2,
    3×3 with padding 1; each 2×2 max-pool halves it), then FC 3·3·128 → 256 → num_classes.
    Convs have no bias: the following BatchNorm's β plays that role.
    """
    c = check_len("channels", channels, 4)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    prev = in_chans
    for i, ch in enumerate(c, start=1):
        layers.update(conv_bn_act(prev, ch, 5 if i == 1 else 3, nn.LeakyReLU(negative_slope),
                                  index=i, act_name="act"))
        layers[f"pool{i}"] = nn.MaxPool2d(2)
        prev = ch
    classifier = nn.Sequential(OrderedDict(
        flatten=nn.Flatten(),
        fc1=nn.Linear(prev * 3 * 3, fc),
        act=nn.LeakyReLU(negative_slope),
        dropout=nn.Dropout(drop),
        fc2=nn.Linear(fc, num_classes),
    ))
    model = SequentialNet(nn.Sequential(layers), classifier, gradcam_layer="features.act4",
                           feature_layers=tuple(f"features.conv{i}" for i in range(1, 5)))
    init_weights(model, nonlinearity="leaky_relu", slope=negative_slope)
    return model


@register_model
def alexnet_bn(num_classes: int = 7, in_chans: int = 1, channels: Sequence[int] = (32, 64, 128, 256, 128),
               fc: int = 1024, drop: float = 0.5) -> nn.Module:
    """AlexNetBN2: 5×5 convs 32, 64; 3×3 convs 128, 256; 1×1 conv 128; BN + ReLU; FC 1024-1024 with BN + dropout.

    Spatial sizes on 48×48 (every conv keeps the size; pools are 2×2, stride 2)::

        conv1 5×5  32  48 → pool1 24
        conv2 5×5  64  24 → pool2 12
        conv3 3×3 128  12
        conv4 3×3 256  12 → pool4  6
        conv5 1×1 128   6 → pool5  3      → FC 128·3·3 = 1152 → 1024 → 1024 → num_classes

    AlexNet's stride-4 11×11 stem would leave almost nothing of a 48×48 face, so the pools are
    spread out instead: two early (cheap, large maps), none between conv3/conv4 (the 3×3 pair
    sees a 5×5 window at 12×12), one after the 1×1 bottleneck to reach 3×3 before the FC layers.
    """
    c = check_len("channels", channels, 5)
    kernels = (5, 5, 3, 3, 1)
    pool_after = (True, True, False, True, True)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    prev = in_chans
    for i, (ch, k, pool) in enumerate(zip(c, kernels, pool_after), start=1):
        layers.update(conv_bn_act(prev, ch, k, nn.ReLU(), index=i))
        if pool:
            layers[f"pool{i}"] = nn.MaxPool2d(2)
        prev = ch
    classifier = nn.Sequential(OrderedDict(
        flatten=nn.Flatten(),
        fc1=nn.Linear(prev * 3 * 3, fc, bias=False),
        bn1=nn.BatchNorm1d(fc),
        relu1=nn.ReLU(),
        drop1=nn.Dropout(drop),
        fc2=nn.Linear(fc, fc, bias=False),
        bn2=nn.BatchNorm1d(fc),
        relu2=nn.ReLU(),
        drop2=nn.Dropout(drop),
        fc3=nn.Linear(fc, num_classes),
    ))
    model = SequentialNet(nn.Sequential(layers), classifier, gradcam_layer="features.relu5",
                           feature_layers=tuple(f"features.conv{i}" for i in range(1, 6)))
    init_weights(model)
    return model
