"""Drawing classified faces onto an RGB frame: boxes, ``"label p"`` tags and probability bars.

Why one module: the upload view, the live stream and ``bench/live.py`` all draw faces, and a face
must look the same everywhere (one colour per emotion, the same tag, the same bars), so they all
call :func:`draw_faces`. OpenCV draws in place on the frame's own buffer (no copy per face).
Attribution heat maps are not drawn here: they are :func:`fer_core.explain.colour.heat_overlay`,
shared with the Explain page.
"""

from __future__ import annotations

import numpy as np

from fer_core.live.faces import Box

# One colour per emotion (RGB), in EMOTIONS order: boxes, labels and bars use the face's top class.
EMOTION_COLORS: dict[str, tuple[int, int, int]] = {
    "angry": (230, 40, 40), "disgust": (120, 170, 30), "fear": (150, 70, 200), "happy": (255, 200, 0),
    "sad": (40, 110, 230), "surprise": (255, 120, 0), "neutral": (0, 200, 200),
}


def draw_faces(image: np.ndarray, faces: list[tuple[Box, np.ndarray, str]], classes: tuple[str, ...], *,
               bars: bool = True, thickness: int | None = None) -> np.ndarray:
    """Draw boxes, ``"label p"`` tags and (optionally) 7 probability bars per face, in place.

    ``faces``: ``(box, probs, tag)`` with ``tag`` an extra text such as a track id ('' for none).
    ``image`` must be RGB uint8 (C-contiguous); it is returned for chaining.
    """
    import cv2

    H, W = image.shape[:2]
    th = thickness or max(2, round(min(H, W) / 240))
    font_scale = max(0.4, min(H, W) / 900)
    for box, probs, tag in faces:
        x, y, w, h = (int(v) for v in box)
        k = int(np.argmax(probs))
        color = EMOTION_COLORS.get(classes[k], (0, 255, 0))
        cv2.rectangle(image, (x, y), (x + w, y + h), color, th)
        text = f"{classes[k]} {probs[k]:.2f}" + (f" {tag}" if tag else "")
        (tw, tht), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        ty = y - 4 if y - tht - base - 4 >= 0 else y + h + tht + 4
        cv2.rectangle(image, (x, ty - tht - base), (x + tw + 4, ty + base // 2), color, -1)
        cv2.putText(image, text, (x + 2, ty - base // 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (0, 0, 0), 1, cv2.LINE_AA)
        if bars:
            draw_bars(image, (x, y, w, h), probs, classes, font_scale)
    return image


def draw_bars(image: np.ndarray, box: Box, probs: np.ndarray, classes: tuple[str, ...], font_scale: float) -> None:
    """One labelled probability bar per class beside ``box`` (right of it, else left), in place."""
    import cv2

    H, W = image.shape[:2]
    x, y, w, h = box
    row = max(10, int(round(h / (len(classes) + 1))))
    row = min(row, 22)
    bar_w = max(40, w // 2)
    label_w = int(60 * font_scale / 0.5)
    bx = x + w + 6
    if bx + label_w + bar_w > W:            # no room on the right: put them on the left
        bx = x - 6 - label_w - bar_w
    if bx < 0:
        bx = max(0, min(W - label_w - bar_w, x))
    by = max(0, min(y, H - row * len(classes)))
    fs = min(font_scale, row / 28)
    for i, (c, p) in enumerate(zip(classes, probs)):
        yy = by + i * row
        cv2.putText(image, c[:8], (bx, yy + row - 3), cv2.FONT_HERSHEY_SIMPLEX, fs, (255, 255, 255), 1, cv2.LINE_AA)
        x0 = bx + label_w
        cv2.rectangle(image, (x0, yy + 2), (x0 + bar_w, yy + row - 2), (60, 60, 60), -1)
        cv2.rectangle(image, (x0, yy + 2), (x0 + int(round(bar_w * float(p))), yy + row - 2),
                      EMOTION_COLORS.get(c, (0, 255, 0)), -1)


def draw_text_box(image: np.ndarray, text: str, font_scale: float) -> None:
    """White text on a black box in the frame's top-left corner, in place (the live latency readout)."""
    import cv2

    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
    cv2.rectangle(image, (0, 0), (tw + 8, th + base + 8), (0, 0, 0), -1)
    cv2.putText(image, text, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), 1, cv2.LINE_AA)


__all__ = ["EMOTION_COLORS", "draw_bars", "draw_faces", "draw_text_box"]
