"""The one image decoder: any picture file -> RGB, gray, or a model-sized gray face.

Why this module exists: an uploaded photo (dashboard, ``predict`` CLI), a face uploaded for an
attribution map and a face file inside an image-folder dataset must be read *identically*, or a
model sees different pixels for the same file depending on where it came from. So every mode
Pillow reads is handled here once -- transparency is composited on white (as a viewer shows it),
16-bit and float gray are scaled instead of clipped, EXIF orientation is applied -- and callers
only pick the output they need:

* :func:`decode_image` -- bytes, a path or a file-like object -> RGB uint8 H×W×3;
* :func:`to_gray` -- RGB (or gray) -> gray uint8 H×W (ITU-R 601 luma, as Pillow's ``L``);
* :func:`image_to_face` -- both, then a resize to ``size×size`` (the FER2013 face size by default).

Every way a file can be bad (empty, not an image, truncated, a decompression bomb) becomes one
:class:`ImageError` whose message can be shown to a user as is. Pillow's ``Image.MAX_IMAGE_PIXELS``
limit is kept (never raised or disabled), and its bomb *warning* (between 1× and 2× the limit) is an
error here too.
"""

from __future__ import annotations

import io
import os
import re
import struct
import warnings
from pathlib import Path
from typing import IO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageError", "decode_image", "image_to_face", "to_gray"]

ImageSource = Union[bytes, bytearray, memoryview, str, os.PathLike, IO[bytes]]


class ImageError(ValueError):
    """A file that cannot be used as an image; ``str(exc)`` is a message for the user."""


def _read_source(src: ImageSource, name: str | None) -> tuple[bytes, str]:
    """The encoded bytes of ``src`` and the name its error messages start with."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src), name or "image"
    if hasattr(src, "read"):   # an open file, BytesIO, Streamlit's UploadedFile ...
        name = name or Path(str(getattr(src, "name", "") or "image")).name
        try:
            src.seek(0)        # as Image.open does: the whole file, wherever it was left
        except (AttributeError, OSError, io.UnsupportedOperation):
            pass
        try:
            return bytes(src.read()), name
        except OSError as exc:
            raise ImageError(f"{name}: cannot read file ({exc.strerror or exc})") from None
    path = Path(src)
    name = name or path.name
    try:
        return path.read_bytes(), name
    except IsADirectoryError:
        raise ImageError(f"{name}: is a directory, not an image file") from None
    except OSError as exc:
        raise ImageError(f"{name}: cannot read file ({exc.strerror or exc})") from None


def decode_image(src: ImageSource, *, name: str | None = None) -> np.ndarray:
    """Any image Pillow reads -> RGB uint8 array H×W×3 (C-contiguous), EXIF orientation applied.

    * multi-frame files (GIF, APNG, WebP animation, TIFF pages): the first frame;
    * transparency (RGBA, LA, P with tRNS): composited on white, as a viewer shows it;
    * 16-bit and 32-bit integer gray (``I;16``, ``I``): scaled from 0..65535 when values exceed
      255 (Pillow's own ``convert("L")`` would clip them); float (``F``): 0..1 or 0..255 ranges;
    * CMYK / YCbCr / LAB: Pillow's conversion to RGB.

    Raises :class:`ImageError` for an empty file, a file that is not an image, a truncated or
    corrupt image, and an image over ``PIL.Image.MAX_IMAGE_PIXELS`` (decompression bomb). Its
    message starts with ``name`` (default: the file name of a path or file object, else "image").
    """
    data, name = _read_source(src, name)
    if not data:
        raise ImageError(f"{name}: the file is empty (0 bytes)")
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            if limit and im.size[0] * im.size[1] > limit:  # also when the warning filter is not ours
                raise Image.DecompressionBombError(f"{im.size[0]}x{im.size[1]} pixels")
            im.seek(0)
            im.load()
            im = ImageOps.exif_transpose(im)
            rgb = _to_rgb(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name}: image is too large ({_bomb_size(exc)}; the limit is "
                         f"{limit:,} pixels) -- refused as a possible decompression bomb") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image, or a format that cannot be read "
                         "(PNG, JPEG, WebP, BMP, GIF, TIFF work)") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error) as exc:
        raise ImageError(f"{name}: the image is truncated or corrupt ({exc})") from None
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ImageError(f"{name}: the image has no pixels")
    return rgb


def _bomb_size(exc: BaseException) -> str:
    m = re.search(r"(\d+)\s*(?:x|×)\s*(\d+)", str(exc))
    if m:
        return f"{int(m.group(1)):,}×{int(m.group(2)):,} pixels"
    m = re.search(r"\((\d+) pixels\)", str(exc))
    return f"{int(m.group(1)):,} pixels" if m else "too many pixels"


def _to_rgb(im: Image.Image) -> np.ndarray:
    """A loaded Pillow image in any mode -> RGB uint8 (rules in :func:`decode_image`)."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        if mode == "F":
            hi = float(np.nanmax(a)) if a.size else 0.0
            a = np.nan_to_num(a) * (255.0 if hi <= 1.0 else 1.0)
        elif a.size and a.max() > 255:
            a = a / 257.0  # 0..65535 -> 0..255
        g = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(g[:, :, None], 3, axis=2))
    if mode == "1":
        im = im.convert("L")
        mode = "L"
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info) \
        or (mode in ("L", "RGB") and "transparency" in im.info)
    if has_alpha:
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, rgba).convert("RGB")
    elif mode != "RGB":
        im = im.convert("RGB")
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


def to_gray(image: np.ndarray) -> np.ndarray:
    """RGB (H×W×3), RGBA or gray (H×W) uint8 -> gray uint8 H×W (ITU-R 601 luma, as Pillow's ``L``)."""
    import cv2

    if image.ndim == 2:
        return np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        return np.ascontiguousarray(image[:, :, 0], dtype=np.uint8)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        code = cv2.COLOR_RGB2GRAY if image.shape[2] == 3 else cv2.COLOR_RGBA2GRAY
        return cv2.cvtColor(np.ascontiguousarray(image, dtype=np.uint8), code)
    raise ValueError(f"expected an H×W or H×W×3 image, got shape {image.shape}")


def image_to_face(src: ImageSource, size: int = 48, *, name: str | None = None) -> np.ndarray:
    """Any image (as :func:`decode_image` takes it) -> ``size×size`` gray uint8 face.

    The whole picture is scaled to the square (bilinear, Pillow), with no face detection or crop:
    this is how a face *file* (a FER2013-style crop) becomes model input. Raises
    :class:`ImageError` as :func:`decode_image` does.
    """
    gray = to_gray(decode_image(src, name=name))
    if gray.shape != (size, size):
        gray = np.asarray(Image.fromarray(gray).resize((size, size), Image.Resampling.BILINEAR))
    return np.ascontiguousarray(gray, dtype=np.uint8)
