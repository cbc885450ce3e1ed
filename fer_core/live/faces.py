"""Images in, face boxes and model-ready face crops out: detection and cropping.

Why this module exists: the dashboard's upload and webcam paths and the ``predict`` CLI must turn
*any* picture into exactly the kind of face the model was trained on. Three steps, each with one
function, so no caller re-implements them:

1. :func:`load_image` -- :func:`fer_core.data.decode.decode_image` (re-exported with
   :class:`ImageError` and :func:`to_gray`): bytes, a path or a file object -> RGB uint8 H×W×3,
   every bad file one :class:`ImageError` with a message for the user.
2. Detection -- a small registry (:func:`register_detector`, :func:`create_detector`,
   :func:`list_detectors`) of classes with ``detect(gray_or_rgb) -> list[(x, y, w, h)]`` (and an
   optional ``exact_crop = True`` when their boxes are already the crop, as for ``whole``).
   The default is OpenCV's Haar cascade, which ships inside ``opencv-python-headless<5`` and so
   works offline with no weights to fetch. Detection runs on a downscaled copy (``max_side``)
   because Haar's cost grows with the pixel count while a face of 24 px in the downscaled image is
   still found; boxes are scaled back to full resolution. Histogram equalisation is off by
   default: on the offline test faces it lowered recall and added a false positive. MTCNN (the
   ``mtcnn`` plug-in) finds more turned or partly hidden faces but costs more CPU per frame, so
   Haar stays the default for the live path's frame budget; pick ``mtcnn`` for photos where a face
   is missed. ``python bench/live.py --recall`` prints each detector's recall and cost.
3. :func:`crop_face` -- a square crop around the box with a margin, grayscale uint8. The margin is
   chosen so that a Haar box on a FER2013 face gives back about FER2013's own framing
   (:data:`CROP_SCALE`, :data:`CROP_SHIFT_Y`: the ``scale``/``shift_y`` columns of
   ``bench/live.py --recall``). FER2013 crops are tight, so the margin is small (2.5% a side, so
   that box jitter does not cut the chin). The crop is *not* resized here: resizing to the model's
   input is the checkpoint's :class:`fer_core.preprocess.Preprocess`, the one code path shared with
   training data.

The result types live here too: :class:`Face` (one classified face: box, probabilities, the
pixels the model saw), :class:`Prediction` (all faces of one image, or why there are none:
:data:`NO_FACE`). No Streamlit here; nothing in this module holds per-session state.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

# Decoding is fer_core.data.decode's job (one decoder for every upload path); re-exported here
# under the name the dashboard and the predict CLI use.
from fer_core.data.decode import ImageError, to_gray
from fer_core.data.decode import decode_image as load_image

if TYPE_CHECKING:
    import torch

Box = tuple[int, int, int, int]  # x, y, w, h in pixels of the full-resolution image

# FER2013 framing relative to a Haar frontal-face box (set from bench/live.py --recall on FER2013
# faces): crop side = box side * CROP_SCALE, crop centre = box centre + CROP_SHIFT_Y * box side
# (downwards).
CROP_SCALE = 1.05
CROP_SHIFT_Y = 0.0


NO_FACE = "no face found"


@dataclass
class Face:
    """One classified face. ``box`` is None when the whole image was classified as one face."""

    box: Box | None
    probs: np.ndarray                 # (C,) softmax probabilities
    classes: tuple[str, ...]
    crop: np.ndarray                  # size×size uint8: exactly the pixels the model sees
    x: torch.Tensor = field(repr=False)  # 1×1×size×size model input (for attribution)

    @property
    def top(self) -> str:
        return self.classes[int(np.argmax(self.probs))]

    @property
    def top_index(self) -> int:
        return int(np.argmax(self.probs))

    @property
    def top_prob(self) -> float:
        return float(np.max(self.probs))

    def probs_dict(self, digits: int = 6) -> dict[str, float]:
        return {c: round(float(p), digits) for c, p in zip(self.classes, self.probs)}


@dataclass
class Prediction:
    """All faces of one image; ``error`` says why there are none (e.g. ``"no face found"``)."""

    faces: list[Face]
    image_size: tuple[int, int]       # (width, height)
    error: str | None = None
    whole_image: bool = False
    timings: dict[str, float] = field(default_factory=dict)  # ms: detect, preprocess, classify


# ---------------------------------------------------------------------------------------------
# detection


class Detector(Protocol):
    """``detect(gray_or_rgb uint8) -> [(x, y, w, h), ...]`` in the input's pixel coordinates."""

    name: str

    def detect(self, image: np.ndarray) -> list[Box]: ...


_DETECTORS: dict[str, tuple[Callable[..., Detector], str]] = {}


def register_detector(name: str, description: str = "") -> Callable[[Callable[..., Detector]], Callable[..., Detector]]:
    """Class decorator: make a detector available by ``name`` (CLI ``--detector``, the dashboard)."""

    def deco(cls: Callable[..., Detector]) -> Callable[..., Detector]:
        if name in _DETECTORS:
            raise ValueError(f"detector {name!r} is registered twice")
        _DETECTORS[name] = (cls, description or (cls.__doc__ or "").strip().split("\n")[0])
        return cls

    return deco


def list_detectors() -> dict[str, str]:
    """Registered detector names -> one-line descriptions (default first)."""
    return {k: d for k, (_, d) in _DETECTORS.items()}


DEFAULT_DETECTOR = "haar"


def detector_class(name: str | None = None) -> Callable[..., Detector]:
    """The registered factory for ``name`` (to inspect its options before creating one)."""
    name = name or DEFAULT_DETECTOR
    if name not in _DETECTORS:
        raise ValueError(f"unknown detector {name!r}; available: {', '.join(_DETECTORS)}")
    return _DETECTORS[name][0]


def create_detector(name: str | None = None, **kwargs: Any) -> Detector:
    """A new detector by registry name (``None`` -> :data:`DEFAULT_DETECTOR`)."""
    name = name or DEFAULT_DETECTOR
    det = detector_class(name)(**kwargs)
    det.name = name
    return det


class HaarDetector:
    """OpenCV Haar cascade (ships in opencv-python-headless<5; offline, cheap on a small frame).

    ``max_side``: the image is downscaled so its longer side is at most this before detection
    (``None``: full resolution). ``min_face``: the smallest face searched, as a fraction of the
    shorter side of the *downscaled* image (Haar's own floor is 24 px there). ``equalize``:
    histogram equalisation first (helps in dim or low-contrast light).

    Thread-safe: OpenCV's CascadeClassifier is not safe to share between threads, so each thread
    gets its own copy (they are small and quick to load).
    """

    name = "haar"

    def __init__(self, cascade: str = "haarcascade_frontalface_default.xml", *, max_side: int | None = 640,
                 scale_factor: float = 1.1, min_neighbors: int = 5, min_face: float = 0.08,
                 equalize: bool = False) -> None:
        import cv2

        path = Path(cascade)
        if not path.is_file():
            path = Path(cv2.data.haarcascades) / cascade
        if not path.is_file():
            raise FileNotFoundError(f"Haar cascade {cascade!r} not found (opencv-python-headless 5.x "
                                    "no longer ships cascades: pin opencv-python-headless<5)")
        self.cascade_path = str(path)
        self.max_side = max_side
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_face = min_face
        self.equalize = equalize
        self._local = threading.local()
        self._classifier()  # fail now, not in the first frame, if the file is bad

    def _classifier(self) -> Any:
        clf = getattr(self._local, "clf", None)
        if clf is None:
            import cv2

            clf = cv2.CascadeClassifier(self.cascade_path)
            if clf.empty():
                raise RuntimeError(f"cannot load Haar cascade {self.cascade_path}")
            self._local.clf = clf
        return clf

    def detect(self, image: np.ndarray) -> list[Box]:
        import cv2

        gray = to_gray(image)
        h, w = gray.shape
        scale = 1.0
        if self.max_side and max(h, w) > self.max_side:
            scale = self.max_side / max(h, w)
            gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))),
                              interpolation=cv2.INTER_AREA)
        if self.equalize:
            gray = cv2.equalizeHist(gray)
        side = max(24, int(min(gray.shape) * self.min_face))
        if min(gray.shape) < 24:
            return []
        found = self._classifier().detectMultiScale(gray, scaleFactor=self.scale_factor,
                                                    minNeighbors=self.min_neighbors, minSize=(side, side))
        boxes = [tuple(int(round(v / scale)) for v in b) for b in (found if len(found) else [])]
        return sorted(boxes, key=lambda b: -b[2] * b[3])  # largest face first


register_detector("haar", "OpenCV Haar cascade, frontal faces (default; fast, offline)")(HaarDetector)


@register_detector("haar_alt2", "OpenCV Haar cascade alt2 (fewer false positives, a little slower)")
class HaarAlt2Detector(HaarDetector):
    """Haar ``frontalface_alt2`` cascade."""

    name = "haar_alt2"

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("min_neighbors", 4)
        super().__init__("haarcascade_frontalface_alt2.xml", **kwargs)


@register_detector("mtcnn", "MTCNN (facenet-pytorch 2.5.3, weights ship in its wheel; slower, optional)")
class MTCNNDetector:
    """facenet-pytorch's MTCNN as a plug-in detector (optional dependency).

    Why optional and not the default: it costs more CPU time per detection than Haar
    (``bench/live.py --recall``) for the live path's frame budget, while Haar already finds most
    faces we need. It is here for photos with turned or partly hidden faces. Only facenet-pytorch
    **2.5.3** works: its weights ship inside the wheel (offline); 2.6 pins an old torch and would
    replace ours.

    Its boxes are tighter than Haar's; they are mapped to Haar's framing (``BOX_SCALE``,
    ``BOX_SHIFT_Y``, measured on FER2013 faces like ``CROP_SCALE``) so that :func:`crop_face`
    gives the model the same framing whichever detector found the face.
    """

    name = "mtcnn"
    # A Haar-equivalent box: the raw square MTCNN box scaled by (FER face / MTCNN box side) /
    # (FER face / Haar box side) and shifted by the difference of their centre offsets (medians of
    # bench/live.py --recall's scale and shift_y over FER2013 faces, for each detector).
    BOX_SCALE = 0.909
    BOX_SHIFT_Y = -0.014

    def __init__(self, *, max_side: int | None = 640, min_face: float = 0.08, threshold: float = 0.9) -> None:
        try:
            from facenet_pytorch import MTCNN
        except ImportError:
            raise RuntimeError("the 'mtcnn' detector needs facenet-pytorch 2.5.3: "
                               "pip install --no-deps facenet-pytorch==2.5.3") from None
        self.max_side, self.min_face, self.threshold = max_side, min_face, threshold
        self._mtcnn = MTCNN(keep_all=True, device="cpu", post_process=False)
        self._lock = threading.Lock()  # MTCNN keeps settings on the instance; serialise calls

    def detect(self, image: np.ndarray) -> list[Box]:
        import cv2
        import torch

        rgb = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
        h, w = rgb.shape[:2]
        scale = 1.0
        if self.max_side and max(h, w) > self.max_side:
            scale = self.max_side / max(h, w)
            rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                             interpolation=cv2.INTER_AREA)
        if min(rgb.shape[:2]) < 24:
            return []
        with self._lock, torch.inference_mode():
            self._mtcnn.min_face_size = max(20, int(min(rgb.shape[:2]) * self.min_face))
            found, probs = self._mtcnn.detect(np.ascontiguousarray(rgb))
        boxes: list[Box] = []
        for b, p in zip(found if found is not None else [], probs if probs is not None else []):
            if p is None or p < self.threshold:
                continue
            x1, y1, x2, y2 = (float(v) / scale for v in b)
            side = max(x2 - x1, y2 - y1)
            cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0 + self.BOX_SHIFT_Y * side
            s = side * self.BOX_SCALE
            boxes.append((int(round(cx - s / 2)), int(round(cy - s / 2)), int(round(s)), int(round(s))))
        return sorted(boxes, key=lambda b: -b[2] * b[3])


@register_detector("whole", "no detection: the whole image is one face (pre-cropped faces, e.g. FER2013)")
class WholeImageDetector:
    """The whole image as one face box: for inputs that already are face crops."""

    name = "whole"
    exact_crop = True  # crop the box as is (no margin): the picture already is the face

    def detect(self, image: np.ndarray) -> list[Box]:
        return [(0, 0, int(image.shape[1]), int(image.shape[0]))]


# ---------------------------------------------------------------------------------------------
# cropping


def crop_box(box: Box, *, scale: float = CROP_SCALE, shift_y: float = CROP_SHIFT_Y) -> Box:
    """The square crop (x, y, side, side) for a detector box; may extend outside the image."""
    x, y, w, h = box
    side = max(1, int(round(max(w, h) * scale)))
    cx = x + w / 2.0
    cy = y + h / 2.0 + shift_y * max(w, h)
    return (int(round(cx - side / 2.0)), int(round(cy - side / 2.0)), side, side)


def crop_face(image: np.ndarray, box: Box, *, scale: float = CROP_SCALE, shift_y: float = CROP_SHIFT_Y,
              exact: bool = False) -> np.ndarray:
    """Gray uint8 square crop of one face (edge pixels replicated where it leaves the image).

    ``exact=True`` crops ``box`` as given (no margin, no squaring): used for the whole-image
    fallback, where the "face" is the picture itself.
    """
    import cv2

    gray = to_gray(image)
    if exact:
        x, y, w, h = box
    else:
        x, y, w, h = crop_box(box, scale=scale, shift_y=shift_y)
    H, W = gray.shape
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {box} lies outside the {W}×{H} image")
    crop = gray[y0:y1, x0:x1]
    pad = (y0 - y, (y + h) - y1, x0 - x, (x + w) - x1)
    if any(pad):
        crop = cv2.copyMakeBorder(crop, *pad, borderType=cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(crop)


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


__all__ = ["CROP_SCALE", "CROP_SHIFT_Y", "DEFAULT_DETECTOR", "NO_FACE", "Box", "Detector", "Face",
           "HaarAlt2Detector", "HaarDetector", "ImageError", "MTCNNDetector", "Prediction", "WholeImageDetector",
           "create_detector", "crop_box", "crop_face", "detector_class", "iou", "list_detectors", "load_image",
           "register_detector", "to_gray"]
