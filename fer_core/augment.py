"""Named augmentation presets applied to whole batches with independent random parameters per image.

Why not torchvision.transforms.v2: called on a batched tensor it draws ONE set of random parameters
for the whole batch (every face in the batch gets the same flip/rotation), which silently weakens
augmentation. Why not kornia.augmentation (which samples per image): its generic per-call machinery
is built for large images on GPUs, and on CPU batches of 48×48 faces it costs more than a small
model's training step (``bench/train_throughput.py`` measures the pipeline against pure compute).

What this module does instead (hand code, because no maintained library does *per-image parameters
on CPU batches of tiny images* cheaply): the random parameters of every image are drawn from
torch's RNG for the whole batch at once (so seeded runs stay reproducible), and all geometric steps
(flip, resized crop, rotation, scale, shear, translation) are composed into ONE 2×3 matrix per
image. Two interchangeable warp backends apply those matrices (same draws, so the same seed gives
the same augmentation up to interpolation rounding):

* ``"cv2"``: one OpenCV ``warpAffine`` per face (bilinear, replicated border);
* ``"torch"``: ``F.affine_grid`` + ``F.grid_sample`` on the whole batch with per-image matrices
  (bilinear, border padding, ``align_corners=True`` so pixel centres match OpenCV's); it also runs
  on a GPU tensor without a host round trip.

``bench/train_throughput.py --backends cv2,torch`` compares them; :data:`DEFAULT_BACKEND` is the
one training uses. Photometric jitter and random erasing are vectorised torch ops over the batch.

Presets operate on float faces in [0, 1] (N×C×H×W), before standardisation; the result is
clamped to [0, 1]. The ranges are those of the reports' experiment: ``basic`` = flip + affine
(±10°, ±10% shift, 0.9–1.1 scale) with p=0.5; ``strong`` adds a random resized crop (75–100% area,
p=0.5), a wider affine (±15°, 0.85–1.15, ±5° shear, p=0.7), brightness/contrast ±30% (p=0.5) and
random erasing (2–20% of the face, p=0.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS: tuple[str, ...] = ("none", "basic", "strong")
BACKENDS: tuple[str, ...] = ("cv2", "torch")
DEFAULT_BACKEND = "cv2"


@dataclass(frozen=True)
class AugSpec:
    """Ranges and probabilities of one preset (0 probability = step off)."""

    p_flip: float = 0.5
    p_crop: float = 0.0
    crop_scale: tuple[float, float] = (0.75, 1.0)      # fraction of the area kept
    crop_ratio: tuple[float, float] = (0.9, 1.1)       # aspect ratio of the kept box
    p_affine: float = 0.5
    degrees: float = 10.0
    translate: float = 0.1                              # fraction of the side
    scale: tuple[float, float] = (0.9, 1.1)
    shear: float = 0.0                                  # degrees (x shear)
    p_color: float = 0.0
    brightness: float = 0.3                             # additive, in [0, 1] units
    contrast: float = 0.3                               # multiplicative around the face's mean
    p_erase: float = 0.0
    erase_scale: tuple[float, float] = (0.02, 0.2)
    erase_ratio: tuple[float, float] = (0.3, 3.3)


SPECS: dict[str, AugSpec] = {
    "basic": AugSpec(),
    "strong": AugSpec(p_crop=0.5, p_affine=0.7, degrees=15.0, scale=(0.85, 1.15), shear=5.0,
                      p_color=0.5, p_erase=0.5),
}


def build_augment(preset: str, backend: str = DEFAULT_BACKEND) -> nn.Module:
    """Return a module mapping a [0,1] batch to an augmented batch (identity for ``none``).

    ``backend`` picks the warp implementation (:data:`BACKENDS`); both draw the same parameters.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown augmentation backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if preset == "none":
        return nn.Identity()
    if preset not in SPECS:
        raise ValueError(f"unknown augmentation preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return BatchAugment(SPECS[preset], backend=backend)


def _uniform(n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, dtype=torch.float64)


def warp_cv2(x: torch.Tensor, maps: np.ndarray) -> torch.Tensor:
    """Warp each face of ``x`` (N×C×H×W) by its ``maps[i]`` (output→input pixels) with OpenCV."""
    import cv2

    n, c, h, w = x.shape
    src = x.detach().to("cpu", torch.float32).contiguous().numpy()
    out = np.empty_like(src)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    for i in range(n):
        for k in range(c):
            out[i, k] = cv2.warpAffine(src[i, k], maps[i], (w, h), flags=flags,
                                       borderMode=cv2.BORDER_REPLICATE)
    return torch.from_numpy(out)


def warp_torch(x: torch.Tensor, maps: np.ndarray) -> torch.Tensor:
    """The same warp as :func:`warp_cv2`, batched: ``affine_grid`` + ``grid_sample`` per-image matrices.

    ``maps`` are in pixel coordinates; ``affine_grid`` wants normalised ones. With
    ``align_corners=True`` pixel ``p`` of a side ``L`` sits at ``2p/(L-1) - 1``, so
    θ = N · M · N⁻¹ with N the pixel→normalised map.
    """
    n, c, h, w = x.shape
    m = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
    m[:, :2] = torch.from_numpy(maps)
    norm = torch.tensor([[2.0 / max(w - 1, 1), 0.0, -1.0],
                         [0.0, 2.0 / max(h - 1, 1), -1.0],
                         [0.0, 0.0, 1.0]], dtype=torch.float64)
    theta = (norm @ m @ torch.linalg.inv(norm))[:, :2]
    src = x.detach().float()
    grid = F.affine_grid(theta.to(src.device, src.dtype), [n, c, h, w], align_corners=True)
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=True)


_WARPS = {"cv2": warp_cv2, "torch": warp_torch}


class BatchAugment(nn.Module):
    """Per-image random flip/crop/affine (one warp per face), colour jitter and erasing.

    ``backend`` (:data:`BACKENDS`) only changes how the drawn matrices are applied.
    """

    def __init__(self, spec: AugSpec, backend: str = DEFAULT_BACKEND) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"unknown augmentation backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.spec = spec
        self.backend = backend

    def inverse_maps(self, n: int, h: int, w: int) -> np.ndarray:
        """``n×2×3`` output→input pixel maps, composed of flip, resized crop and affine (drawn now)."""
        s = self.spec
        eye = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
        # flip (output x -> input w-1-x)
        flip = eye.clone()
        f = torch.rand(n) < s.p_flip
        flip[f, 0, 0], flip[f, 0, 2] = -1.0, w - 1.0
        # random resized crop: output pixel -> position inside a random box of the input
        crop = eye.clone()
        c = torch.rand(n) < s.p_crop
        if c.any():
            area = _uniform(n, *s.crop_scale)
            ratio = torch.exp(_uniform(n, math.log(s.crop_ratio[0]), math.log(s.crop_ratio[1])))
            cw = (torch.sqrt(area * ratio) * w).clamp(max=w)
            ch = (torch.sqrt(area / ratio) * h).clamp(max=h)
            x0 = torch.rand(n, dtype=torch.float64) * (w - cw)
            y0 = torch.rand(n, dtype=torch.float64) * (h - ch)
            sx, sy = cw / w, ch / h
            crop[c, 0, 0], crop[c, 1, 1] = sx[c], sy[c]
            crop[c, 0, 2] = (x0 + 0.5 * sx - 0.5)[c]
            crop[c, 1, 2] = (y0 + 0.5 * sy - 0.5)[c]
        # affine around the centre: forward A = T(c + t) · R(θ) · Sh · S · T(-c); we need A⁻¹
        aff = eye.clone()
        a = torch.rand(n) < s.p_affine
        if a.any():
            th = torch.deg2rad(_uniform(n, -s.degrees, s.degrees))
            sc = _uniform(n, *s.scale)
            sh = torch.tan(torch.deg2rad(_uniform(n, -s.shear, s.shear)))
            tx = _uniform(n, -s.translate, s.translate) * w
            ty = _uniform(n, -s.translate, s.translate) * h
            cos, sin = torch.cos(th), torch.sin(th)
            lin = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # R
            lin = lin @ torch.stack([torch.stack([torch.ones(n, dtype=torch.float64), sh], -1),
                                     torch.stack([torch.zeros(n, dtype=torch.float64),
                                                  torch.ones(n, dtype=torch.float64)], -1)], -2)
            lin = lin * sc[:, None, None]
            ctr = torch.tensor([(w - 1) / 2.0, (h - 1) / 2.0], dtype=torch.float64)
            fwd = eye.clone()
            fwd[:, :2, :2] = lin
            fwd[:, :2, 2] = ctr + torch.stack([tx, ty], -1) - (lin @ ctr)
            aff[a] = torch.linalg.inv(fwd[a])
        total = flip @ crop @ aff          # output of the chain -> input pixel
        return total[:, :2, :].numpy()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.spec
        n, _, h, w = x.shape
        if n == 0:
            return x
        y = _WARPS[self.backend](x, self.inverse_maps(n, h, w))
        if s.p_color > 0:
            on = (torch.rand(n) < s.p_color).float()[:, None, None, None].to(y.device)
            db = ((torch.rand(n) * 2 - 1)[:, None, None, None] * s.brightness).to(y.device)
            dc = (1 + (torch.rand(n) * 2 - 1)[:, None, None, None] * s.contrast).to(y.device)
            mean = y.mean(dim=(1, 2, 3), keepdim=True)
            jit = (y + db - mean) * dc + mean
            y = on * jit + (1 - on) * y
        if s.p_erase > 0:
            on = torch.rand(n) < s.p_erase
            area = _uniform(n, *s.erase_scale) * h * w
            ratio = torch.exp(_uniform(n, math.log(s.erase_ratio[0]), math.log(s.erase_ratio[1])))
            eh = torch.sqrt(area * ratio).round().clamp(1, h)
            ew = torch.sqrt(area / ratio).round().clamp(1, w)
            y0 = (torch.rand(n, dtype=torch.float64) * (h - eh + 1)).floor()
            x0 = (torch.rand(n, dtype=torch.float64) * (w - ew + 1)).floor()
            rows = torch.arange(h, dtype=torch.float64)[None, :, None]
            cols = torch.arange(w, dtype=torch.float64)[None, None, :]
            box = ((rows >= y0[:, None, None]) & (rows < (y0 + eh)[:, None, None]) &
                   (cols >= x0[:, None, None]) & (cols < (x0 + ew)[:, None, None]) & on[:, None, None])
            y = y.masked_fill(box[:, None].to(y.device), 0.0)
        return y.clamp_(0.0, 1.0).to(x.device, x.dtype)
