"""Named augmentation presets applied to whole batches with independent random parameters per image.

Why kornia and not torchvision.transforms.v2: v2 called on a batched tensor draws ONE set of random
parameters for the whole batch (every face in the batch gets the same flip/rotation), which
silently weakens augmentation. kornia.augmentation samples per image on batches and runs at a few
percent of a training step's cost, so augmentation stays on the tensor path (no per-sample PIL
pipeline, no DataLoader workers).

Presets operate on float faces in [0, 1] (N×1×H×W), before standardisation.
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
import torch.nn as nn

PRESETS: tuple[str, ...] = ("none", "basic", "strong")


def build_augment(preset: str) -> nn.Module:
    """Return a module mapping a [0,1] batch to an augmented batch (identity for ``none``)."""
    if preset == "none":
        return nn.Identity()
    if preset == "basic":
        ops = [
            K.RandomHorizontalFlip(p=0.5),
            K.RandomAffine(degrees=10.0, translate=(0.1, 0.1), scale=(0.9, 1.1), p=0.5,
                           padding_mode="border"),
        ]
    elif preset == "strong":
        ops = [
            K.RandomHorizontalFlip(p=0.5),
            K.RandomResizedCrop((48, 48), scale=(0.75, 1.0), ratio=(0.9, 1.1), p=0.5),
            K.RandomAffine(degrees=15.0, translate=(0.1, 0.1), scale=(0.85, 1.15), shear=5.0, p=0.7,
                           padding_mode="border"),
            K.ColorJiggle(brightness=0.3, contrast=0.3, p=0.5),
            K.RandomErasing(scale=(0.02, 0.2), ratio=(0.3, 3.3), value=0.0, p=0.5),
        ]
    else:
        raise ValueError(f"unknown augmentation preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return _Clamp(K.AugmentationSequential(*ops, data_keys=["input"]))


class _Clamp(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).clamp_(0.0, 1.0)
