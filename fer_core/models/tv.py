"""torchvision ResNets (``resnet18``, ``wide_resnet50_2``) adapted to 1-channel 48×48 faces.

Why wrap rather than re-implement: torchvision's ResNets are the well-tested baseline the reports
compare against, and only the ends need changing -- ``conv1`` (1 input channel, optionally a small
stem) and ``fc`` (7 classes).

Stems (``stem=`` kwarg), with the spatial sizes they give on 48×48:

* ``"stock"`` (default): 7×7 stride-2 conv + 3×3 stride-2 max-pool, as in ImageNet training.
  conv1 24 → maxpool 12 → layer1 12 → layer2 6 → layer3 3 → layer4 2. The cheap stem (every later
  layer runs on maps 4× smaller per side), and it can reuse the pretrained conv1. Because layer4 is
  only 2×2, the default Grad-CAM layer is ``layer3`` (3×3); both are coarse -- show the map size.
* ``"small"``: 3×3 stride-1 conv, no max-pool (the CIFAR variant). layer1 48 → layer2 24 →
  layer3 12 → layer4 6. Finer maps at 16× the activations per layer (DESIGN.md); Grad-CAM on layer4.

``pretrained=True`` loads torchvision's ImageNet weights through its weights API and folds the
RGB ``conv1`` into one channel by summing over the input channels (a gray image x fed as R=G=B=x
gives exactly the summed filter's response). ``pretrained=False`` never touches the network.

All ReLUs are switched to ``inplace=False``: attribution hooks break on in-place-modified tensors.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import torch
import torch.nn as nn
import torchvision.models as tvm
from torchvision.models import ResNet

from fer_core.models.registry import register_model

STEMS = ("stock", "small")


def fold_conv_weight(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Adapt a pretrained first-conv weight (out, 3, k, k) to ``in_chans`` input channels.

    ``in_chans == 1``: sum over the RGB channels -- exact: a gray image x fed as R=G=B=x gives the
    summed filter's response. ``in_chans == 3``: unchanged. Otherwise timm's rule: the filters are
    tiled (R, G, B, R, ...) and scaled by 3/in_chans, keeping the response's magnitude roughly
    unchanged (not exact; there is no right answer for non-RGB channels).
    """
    if weight.ndim != 4:
        raise ValueError(f"expected a conv weight (out, in, k, k), got shape {tuple(weight.shape)}")
    src = weight.shape[1]
    if in_chans == src:
        return weight.clone()
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = math.ceil(in_chans / src)
    return weight.repeat(1, reps, 1, 1)[:, :in_chans] * (src / in_chans)


def _download_state_dict(weights: Any) -> dict[str, torch.Tensor]:
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # URLError, OSError, hash mismatch ... all mean "no weights"
        raise RuntimeError(
            f"could not download the pretrained weights {weights} ({getattr(weights, 'url', '?')}): "
            f"{type(exc).__name__}: {exc}. pretrained=False works offline (random initialisation); "
            f"or place the file in torch.hub's checkpoint cache ({torch.hub.get_dir()}/checkpoints)."
        ) from exc


def adapt_pretrained_state_dict(state: dict[str, torch.Tensor], in_chans: int, stem: str) -> dict[str, torch.Tensor]:
    """ImageNet ResNet state dict -> ours: fold ``conv1`` to ``in_chans``, drop the 1000-way ``fc``.

    With the small stem the 7×7 ``conv1`` does not fit and is dropped too (left at random init).
    """
    out = {k: v for k, v in state.items() if not k.startswith("fc.")}
    if stem == "stock":
        out["conv1.weight"] = fold_conv_weight(out["conv1.weight"], in_chans)
    else:
        out.pop("conv1.weight", None)
    return out


def _adapt(model: ResNet, *, num_classes: int, in_chans: int, stem: str) -> ResNet:
    if stem == "stock":
        model.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
    else:
        model.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False

    model.gradcam_layer = "layer3" if stem == "stock" else "layer4"
    convs = [name for name, m in model.named_modules()
             if isinstance(m, nn.Conv2d) and name.startswith("layer") and ".downsample" not in name]
    model.feature_layers = ("conv1", *convs)
    model.input_size = 48
    model.stem = stem
    return model


def _build(ctor: Callable[..., ResNet], weights_enum: Any, *, num_classes: int, in_chans: int,
           pretrained: bool, stem: str) -> ResNet:
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
    # Fetch the weights first: fail fast, before spending seconds building a large net.
    state = adapt_pretrained_state_dict(_download_state_dict(weights_enum), in_chans, stem) if pretrained else None
    model = _adapt(ctor(weights=None), num_classes=num_classes, in_chans=in_chans, stem=stem)
    if state is not None:
        missing, unexpected = model.load_state_dict(state, strict=False)
        allowed = {"fc.weight", "fc.bias"} | ({"conv1.weight"} if stem == "small" else set())
        if unexpected or set(missing) - allowed:
            raise RuntimeError(f"pretrained weights do not fit: missing={missing}, unexpected={unexpected}")
        if stem == "small":
            warnings.warn("stem='small' cannot reuse the 7×7 pretrained conv1; it is randomly initialised",
                          stacklevel=3)
    return model


@register_model
def resnet18(num_classes: int = 7, in_chans: int = 1, pretrained: bool = False, stem: str = "stock") -> nn.Module:
    """torchvision ResNet-18 (11.2M) with a 1-channel stem; optional ImageNet weights (conv1 folded to gray)."""
    return _build(tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1, num_classes=num_classes,
                  in_chans=in_chans, pretrained=pretrained, stem=stem)


@register_model
def wide_resnet50_2(num_classes: int = 7, in_chans: int = 1, pretrained: bool = False,
                    stem: str = "stock") -> nn.Module:
    """torchvision Wide ResNet-50-2 (66.8M) with a 1-channel stem; optional ImageNet weights (conv1 folded to gray)."""
    return _build(tvm.wide_resnet50_2, tvm.Wide_ResNet50_2_Weights.IMAGENET1K_V1, num_classes=num_classes,
                  in_chans=in_chans, pretrained=pretrained, stem=stem)
