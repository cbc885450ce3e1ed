"""The one mapping from attribution maps to colours, shared by every page that shows a map.

Why one module: the upload, live and attribution pages put maps side by side with the same
meaning, so they must use the same colour scale -- ``inferno`` for unsigned maps (magnitude),
``RdBu_r`` for signed ones (0 = white) -- and the same blending over the face.

* :func:`color_limits` -- the ``(vmin, vmax)`` per map, per image or shared, optionally clipped
  at a percentile.
* :func:`colorize` -- maps -> RGB, optionally blended over the grey face.
* :func:`heat_overlay` -- one unsigned map over a grey crop of any size (the live view).
"""

from __future__ import annotations

import numpy as np

__all__ = ["color_limits", "colorize", "heat_overlay"]


def color_limits(maps: np.ndarray, *, shared: bool, signed: bool,
                 percentile: float | None = None) -> np.ndarray:
    """``(vmin, vmax)`` per map (``N×2``): per image, or one range shared by all maps.

    Signed maps get a symmetric range around 0 (a diverging scale); unsigned ones ``[min, max]``.
    ``percentile`` (e.g. 98) puts the top of the range at that percentile of the magnitudes
    (over each map, or over all of them when shared) instead of the maximum, so a few extreme
    pixels do not wash out every other map on a shared scale; larger values are shown at full
    colour. Captum's ``visualize_image_attr`` does the same by default (``outlier_perc=2``).
    """
    m = np.asarray(maps, dtype=np.float64)
    if m.ndim == 2:
        m = m[None]
    flat = m.reshape(len(m), -1)
    if percentile is not None and flat.size:
        q = float(percentile)
        if signed:
            a = np.abs(flat)
            top = np.full(len(m), np.percentile(a, q)) if shared else np.percentile(a, q, axis=1)
            lim = np.stack([-top, top], 1)
        else:
            top = np.full(len(m), np.percentile(flat, q)) if shared else np.percentile(flat, q, axis=1)
            lo = np.full(len(m), flat.min()) if shared else flat.min(1)
            lim = np.stack([lo, np.maximum(top, lo)], 1)
    elif signed:
        a = np.abs(flat).max(1) if flat.size else np.zeros(len(m))
        lim = np.stack([-a, a], 1)
    else:
        lim = np.stack([flat.min(1), flat.max(1)], 1)
    if shared and len(lim):
        lim = np.tile([lim[:, 0].min(), lim[:, 1].max()], (len(lim), 1))
    same = lim[:, 1] <= lim[:, 0]
    lim[same, 1] = lim[same, 0] + 1e-12
    return lim


def colorize(maps: np.ndarray, limits: np.ndarray, *, signed: bool, faces: np.ndarray | None = None,
             alpha: float = 0.6, cmap: str | None = None) -> np.ndarray:
    """Maps -> uint8 RGB images (``N×H×W×3``) with the given ``(vmin, vmax)`` per map; with
    ``faces`` (``N×H×W`` uint8 or [0,1]) the map is blended over the grey face (weight ``alpha``
    times the map's normalised magnitude, so weak attribution lets the face show through).

    Default colour maps: ``RdBu_r`` (diverging, 0 = white) for signed maps, ``inferno`` otherwise.
    """
    import matplotlib

    m = np.asarray(maps, dtype=np.float64)
    single = m.ndim == 2
    m = m[None] if single else m
    lim = np.asarray(limits, dtype=np.float64).reshape(-1, 2)
    lo, hi = lim[:, 0, None, None], lim[:, 1, None, None]
    t = np.clip((m - lo) / np.maximum(hi - lo, 1e-12), 0, 1)
    cm = matplotlib.colormaps[cmap or ("RdBu_r" if signed else "inferno")]
    rgb = cm(t)[..., :3]
    if faces is not None:
        u8 = np.asarray(faces).dtype == np.uint8
        f = np.asarray(faces, dtype=np.float64)
        f = f / 255.0 if u8 or f.max(initial=0) > 1.5 else f
        f = (f[None] if f.ndim == 2 else f)[..., None].repeat(3, -1)
        w = alpha * (np.abs(2 * t - 1) if signed else t)[..., None]
        rgb = (1 - w) * f + w * rgb
    out = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    return out[0] if single else out


def heat_overlay(gray_crop: np.ndarray, amap: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """RGB uint8 (``H×W×3``) of an attribution map over a grey crop (``H×W`` uint8).

    The map may have any scale and size: NaNs count as 0, negative values are dropped (the
    unsigned scale), it is resized to the crop (bilinear) and shown on ``[0, max]`` exactly as
    :func:`colorize` shows an unsigned map, blended with weight ``alpha`` × magnitude.
    """
    m = np.clip(np.nan_to_num(np.asarray(amap, dtype=np.float32)), 0, None)
    crop = np.asarray(gray_crop)
    if m.shape != crop.shape[:2]:
        import cv2

        m = np.clip(cv2.resize(m, (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_LINEAR), 0, None)
    top = float(m.max(initial=0.0))
    return colorize(m, np.array([[0.0, top]]), signed=False, faces=crop.astype(np.uint8), alpha=alpha)
