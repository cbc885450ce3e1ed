"""Model input preprocessing, stored in every checkpoint and applied from there only.

Why a dataclass and not a torchvision ``Compose``: the exact numbers (size, mean, std) must be
saved as plain JSON in ``config.json`` and in the checkpoint, and the *same* object must serve
batched training tensors, evaluation, and single live-camera crops. Typing these numbers again
anywhere else is how train/serve skew happens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Preprocess:
    """uint8 faces (N×H×W or N×1×H×W) -> float32 N×1×size×size, scaled to [0,1] then standardised.

    ``normalize=False`` keeps mean 0 / std 1, i.e. plain [0,1] pixels: the "no normalization"
    arm of the reports' experiment.
    """

    size: int = 48
    mean: float = 0.0
    std: float = 1.0
    normalize: bool = False

    @classmethod
    def fit(cls, x_uint8: torch.Tensor, *, normalize: bool, size: int = 48) -> "Preprocess":
        """Compute the dataset mean/std (on [0,1] pixels) from the training faces."""
        if not normalize:
            return cls(size=size)
        xf = x_uint8.float().div_(255.0)
        return cls(size=size, mean=round(float(xf.mean()), 6), std=round(float(xf.std()), 6),
                   normalize=True)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The full path: uint8 faces -> model input."""
        return self.standardize(self.to_unit(x))

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (or [0,1] float) faces -> float N×1×size×size in [0,1]. Augmentation runs here,
        between :meth:`to_unit` and :meth:`standardize`, so it sees pixel values."""
        if x.ndim == 3:
            x = x.unsqueeze(1)
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected N×H×W or N×1×H×W grayscale faces, got {tuple(x.shape)}")
        x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True,
                              align_corners=False)
        return x

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std if self.normalize else x

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        """Model input back to [0,1] pixels (for showing optimised or attributed inputs)."""
        return (x * self.std + self.mean).clamp(0, 1) if self.normalize else x.clamp(0, 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocess":
        return cls(size=int(d.get("size", 48)), mean=float(d.get("mean", 0.0)),
                   std=float(d.get("std", 1.0)), normalize=bool(d.get("normalize", False)))
