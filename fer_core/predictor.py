"""Inference on pictures and video frames: ``Predictor(run)`` and the live-video pipeline.

Why one class per checkpoint, shared: a model is loaded once and then serves every caller -- all
the dashboard's sessions (it sits in ``st.cache_resource``), the webcam's frame thread and the
``predict`` CLI over hundreds of files. So a :class:`Predictor` holds no per-caller state, runs the
model in eval mode under ``torch.inference_mode``, and serialises every use of the model (forward
passes and attribution hooks) with one lock: PyTorch modules are not safe to hook or mode-switch
from two threads at once, and at 48×48 a face takes about a millisecond, so the lock costs
nothing that matters.

Why faces go through :mod:`fer_core.faces` and the checkpoint's :class:`~fer_core.preprocess.
Preprocess`: a live crop must be the same kind of input the model was trained on. Crop (margin,
square) -> gray uint8 -> ``preprocess.to_unit`` (resize to the stored size, exactly as training
data would be) -> ``preprocess.standardize``. :attr:`Face.crop` is the ``to_unit`` image as uint8:
the pixels the model sees.

Per-stream state (face tracks, smoothing, frame counters) lives in :class:`LiveProcessor`, one
per video stream, never in the Predictor. Why the live path is fast enough on two cores: faces are
detected on a downscaled frame and only every ``detect_every``-th frame; in between, the tracked
boxes are reused (faces move a few pixels between frames) and only the cheap classifier runs --
by default through ONNX Runtime (:mod:`fer_core.onnx_runtime`: as exact as PyTorch, a third of
its time per face), falling back to PyTorch when it is not installed or the model does not export.
Tracks are matched between detections by IoU, and each track smooths its probabilities (EMA or a
moving window) so labels do not flicker. ``bench/live.py`` measures all of it.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fer_core.faces import (Box, Detector, ImageError, create_detector, crop_face, iou, load_image,
                            to_gray)
from fer_core.labels import EMOTIONS

NO_FACE = "no face found"

# Classification backends (Predictor.classify): the PyTorch reference, PyTorch in bfloat16, ONNX Runtime.
BACKENDS = ("torch", "torch-bf16", "onnx")

# One colour per emotion (RGB), in EMOTIONS order: boxes, labels and bars use the face's top class.
EMOTION_COLORS: dict[str, tuple[int, int, int]] = {
    "angry": (230, 40, 40), "disgust": (120, 170, 30), "fear": (150, 70, 200), "happy": (255, 200, 0),
    "sad": (40, 110, 230), "surprise": (255, 120, 0), "neutral": (0, 200, 200),
}


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


class Predictor:
    """A run's model + its preprocessing + a face detector, safe to share between threads.

    >>> p = Predictor("checkpoints/synth-cnn4-aug")
    >>> pred = p.predict(load_image("photo.jpg"))
    >>> [(f.box, f.top, f.top_prob) for f in pred.faces]
    """

    def __init__(self, run: str | os.PathLike[str], *, which: str = "best",
                 detector: str | Detector | None = None, device: str = "cpu") -> None:
        from fer_core.runs import load_model

        lm = load_model(run, which=which, device=device)
        self.run = Path(run)
        self.checkpoint = lm.path
        self.model = lm.model.eval()
        self.preprocess = lm.preprocess
        self.config = lm.config
        self.epoch = lm.epoch
        self.classes: tuple[str, ...] = tuple(lm.classes) or EMOTIONS
        self.device = torch.device(device)
        self.detector: Detector = create_detector(detector) if detector is None or isinstance(detector, str) \
            else detector
        self._lock = threading.Lock()
        self._detectors: dict[str, Detector] = {self.detector.name: self.detector}
        self._infer: dict[str, torch.nn.Module] = {}
        self._onnx_clf: Any = None
        self._onnx_error: str | None = None

    # ---- the inference copies ------------------------------------------------------------------
    def _inference_model(self, precision: str) -> torch.nn.Module:
        """A frozen PyTorch copy of the model made for batch-1 CPU inference (built once, under the lock).

        Why a copy: ``self.model`` stays the plain eval-mode module that attribution hooks into
        (Grad-CAM layers keep their names and meaning). The copy has BatchNorm folded into the
        preceding convolutions (``torch.fx`` fusion: the same function with fewer ops) and
        channels-last weights, which oneDNN runs ~1.7x faster at 48x48 than NCHW. ``"bf16"``
        also casts the weights to bfloat16 -- about 1.6x faster again on CPUs with native bf16
        (AVX512-BF16/AMX), within ~1e-2 of the fp32 probabilities.
        """
        if precision not in self._infer:
            import copy

            m = copy.deepcopy(self.model).eval()
            if self.device.type == "cpu":
                try:
                    from torch.fx.experimental.optimization import fuse

                    m = fuse(m)
                except Exception:  # not fx-traceable: the unfused copy is still correct
                    pass
                m = m.to(memory_format=torch.channels_last)
            if precision == "bf16":
                m = m.to(torch.bfloat16)
            self._infer[precision] = m
        return self._infer[precision]

    def _onnx(self) -> Any:
        """The run's :class:`~fer_core.onnx_runtime.OnnxClassifier`, built once (None + a reason if it can't be)."""
        if self._onnx_clf is not None or self._onnx_error is not None:  # settled: no lock per frame
            return self._onnx_clf
        with self._lock:
            if self._onnx_clf is None and self._onnx_error is None:
                from fer_core.onnx_runtime import OnnxClassifier, OnnxUnavailable

                if self.device.type != "cpu":
                    self._onnx_error = "ONNX Runtime serves CPU models only here"
                else:
                    try:
                        # Preprocess always yields 1-channel faces (N×1×S×S)
                        self._onnx_clf = OnnxClassifier(self.model, self.preprocess.size)
                    except OnnxUnavailable as exc:
                        self._onnx_error = str(exc)
                    except Exception as exc:  # noqa: BLE001 - e.g. the runtime rejects the graph: use PyTorch
                        self._onnx_error = f"ONNX Runtime failed on this model ({type(exc).__name__}: {exc})"
            return self._onnx_clf

    def backend_status(self) -> dict[str, str | None]:
        """Each classification backend -> None when usable here, else why not (builds the ONNX session)."""
        from fer_core.train import cpu_bf16_supported

        self._onnx()
        return {"torch": None,
                "torch-bf16": None if self.device.type == "cpu" and cpu_bf16_supported()
                else "this CPU has no native bfloat16 (AVX512-BF16/AMX): bf16 would be slower than fp32",
                "onnx": self._onnx_error}

    @functools.cached_property
    def live_backend(self) -> str:
        """The fastest backend usable here for live frames: ``"onnx"`` (exact, fastest), else
        ``"torch-bf16"`` where the CPU has native bfloat16, else ``"torch"``."""
        status = self.backend_status()
        return next(b for b in ("onnx", "torch-bf16", "torch") if status[b] is None)

    # ---- pieces (each usable alone) ------------------------------------------------------------
    def get_detector(self, detector: str | Detector | None = None) -> Detector:
        """A detector by name (created once per Predictor, shared: detectors are thread-safe)."""
        if detector is None:
            return self.detector
        if not isinstance(detector, str):
            return detector
        with self._lock:
            if detector not in self._detectors:
                self._detectors[detector] = create_detector(detector)
            return self._detectors[detector]

    def detect(self, image: np.ndarray, detector: str | Detector | None = None) -> list[Box]:
        return self.get_detector(detector).detect(image)

    def model_inputs(self, crops: list[np.ndarray]) -> tuple[torch.Tensor, np.ndarray]:
        """Gray uint8 crops (any sizes) -> (model input N×1×S×S, the seen pixels N×S×S uint8).

        Each crop goes through the checkpoint's ``Preprocess`` on its own (so crops of different
        sizes are resized exactly as a training face of that size would be), then they are stacked.
        """
        if not crops:
            s = self.preprocess.size
            return torch.empty(0, 1, s, s), np.empty((0, s, s), np.uint8)
        units = [self.preprocess.to_unit(torch.from_numpy(np.ascontiguousarray(c))[None]) for c in crops]
        u = torch.cat(units)
        seen = (u[:, 0] * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
        return self.preprocess.standardize(u).to(self.device), seen

    def classify(self, x: torch.Tensor, backend: str = "torch") -> np.ndarray:
        """Model input N×1×S×S -> probabilities N×C, in eval/inference mode.

        ``backend`` (see :data:`BACKENDS`): ``"torch"`` matches evaluation to ~1e-6 (the reference,
        used by uploads and ``predict``); ``"onnx"`` is ONNX Runtime on the exported graph, as exact
        and the fastest for live frames; ``"torch-bf16"`` is PyTorch in bfloat16 (within ~1e-2).
        PyTorch backends run under the Predictor's lock; an ONNX Runtime session is thread-safe.
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        if len(x) == 0:
            return np.empty((0, len(self.classes)), np.float32)
        if backend == "onnx":
            clf = self._onnx()
            if clf is None:
                raise RuntimeError(f"the ONNX backend is not available: {self._onnx_error}")
            return clf(x)
        precision = "bf16" if backend == "torch-bf16" else "fp32"
        with self._lock, torch.inference_mode():
            m = self._inference_model(precision)
            dtype = torch.bfloat16 if precision == "bf16" else torch.float32
            xin = x.to(dtype)
            if self.device.type == "cpu":
                xin = xin.contiguous(memory_format=torch.channels_last)
            logits = m(xin)
        return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def attribute(self, x: torch.Tensor, target: int | list[int] | str = "pred", method: str = "gradcam",
                  **opts: Any) -> np.ndarray:
        """Attribution map(s) at input resolution (``N×S×S`` for ``N×1×S×S``), under the lock.

        Uses :func:`fer_core.explain.attribution.explain`; ``method`` is one of its METHODS
        (``"saliency"``, ``"gradcam"``, ...).
        """
        from fer_core.explain.attribution import explain

        if method in ("integrated_gradients", "smoothgrad", "occlusion"):
            opts.setdefault("preprocess", self.preprocess)
        with self._lock:
            return explain(self.model, x, target, method, **opts)

    # ---- the whole path ------------------------------------------------------------------------
    def predict(self, image: np.ndarray | bytes | str | os.PathLike[str], *, boxes: list[Box] | None = None,
                detector: str | Detector | None = None, whole_image: bool = False) -> Prediction:
        """Detect (unless ``boxes`` are given), crop, preprocess and classify every face.

        With no face found, ``error`` is :data:`NO_FACE` and ``faces`` is empty -- unless
        ``whole_image`` is set, then the whole picture is classified as one face (``box=None``,
        ``whole_image=True``). ``image``: RGB/gray uint8 array, or bytes/path for :func:`load_image`.
        """
        if not isinstance(image, np.ndarray):
            image = load_image(image)
        t0 = time.perf_counter()
        gray = to_gray(image)
        exact = False
        if boxes is None:
            det = self.get_detector(detector)
            boxes = det.detect(gray)
            exact = bool(getattr(det, "exact_crop", False))
        t1 = time.perf_counter()
        H, W = gray.shape
        use_whole = not boxes and whole_image
        crops = [crop_face(gray, (0, 0, W, H), exact=True)] if use_whole else \
            [crop_face(gray, b, exact=exact) for b in boxes]
        x, seen = self.model_inputs(crops)
        t2 = time.perf_counter()
        probs = self.classify(x)
        t3 = time.perf_counter()
        out_boxes: list[Box | None] = [None] if use_whole else list(boxes)
        faces = [Face(box=b, probs=probs[i], classes=self.classes, crop=seen[i], x=x[i:i + 1])
                 for i, b in enumerate(out_boxes)]
        return Prediction(faces=faces, image_size=(W, H), error=None if faces else NO_FACE,
                          whole_image=use_whole,
                          timings={"detect": 1e3 * (t1 - t0), "preprocess": 1e3 * (t2 - t1),
                                   "classify": 1e3 * (t3 - t2)})


# ---------------------------------------------------------------------------------------------
# drawing (shared by the upload view, the live stream and the benchmark)


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
            _draw_bars(image, (x, y, w, h), probs, classes, font_scale)
    return image


def _draw_bars(image: np.ndarray, box: Box, probs: np.ndarray, classes: tuple[str, ...], font_scale: float) -> None:
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


def heat_overlay(gray_crop: np.ndarray, amap: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """RGB uint8 of an attribution map (any scale, ≥0 used) over a gray crop (JET colours)."""
    import cv2

    m = np.nan_to_num(np.asarray(amap, dtype=np.float32))
    m = np.clip(m, 0, None)
    m = m / m.max() if m.max() > 0 else m
    if m.shape != gray_crop.shape:
        m = cv2.resize(m, (gray_crop.shape[1], gray_crop.shape[0]), interpolation=cv2.INTER_LINEAR)
    heat = cv2.cvtColor(cv2.applyColorMap((m * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    base = cv2.cvtColor(gray_crop, cv2.COLOR_GRAY2RGB)
    return cv2.addWeighted(base, 1 - alpha, heat, alpha, 0)


# ---------------------------------------------------------------------------------------------
# live video: tracking, smoothing, per-stage timings


@dataclass(frozen=True)
class LiveSettings:
    """What the user sets for a stream (immutable: swapped as a whole, read once per frame)."""

    detector: str = "haar"
    detect_every: int = 3            # run the detector on every k-th frame; track in between
    detect_side: int = 320           # longer side of the frame copy the detector sees (px)
    smoothing: str = "ema"           # "ema" | "window" | "none"
    ema_alpha: float = 0.4           # weight of the newest frame in the EMA
    window: int = 8                  # frames averaged by "window"
    bars: bool = True
    gradcam: bool = False            # Grad-CAM overlay on the largest face (costs a backward pass)
    readout: bool = True             # latency text drawn on the frame
    backend: str = "auto"            # classifier backend: "auto" = Predictor.live_backend, or one of BACKENDS
    iou_match: float = 0.3           # a detection continues a track when IoU ≥ this
    max_missed: int = 2              # detections a track may miss before it is dropped


@dataclass
class Track:
    """One face followed across frames: smoothed box and probabilities."""

    id: int
    box: Box
    missed: int = 0
    probs: np.ndarray | None = None
    history: deque = field(default_factory=lambda: deque(maxlen=64))

    def update_probs(self, p: np.ndarray, s: LiveSettings) -> np.ndarray:
        self.history.append(p)
        if s.smoothing == "ema" and self.probs is not None and self.probs.shape == p.shape:
            a = float(np.clip(s.ema_alpha, 0.01, 1.0))
            self.probs = a * p + (1 - a) * self.probs
        elif s.smoothing == "window":
            recent = [h for h in list(self.history)[-max(1, int(s.window)):] if h.shape == p.shape]
            self.probs = np.mean(recent, axis=0)
        else:
            self.probs = p
        return self.probs


class FaceTracker:
    """Greedy IoU matching of new detections to existing tracks (largest overlap first)."""

    def __init__(self) -> None:
        self.tracks: list[Track] = []
        self._next = 1

    def update(self, boxes: list[Box], s: LiveSettings) -> list[Track]:
        pairs = sorted(((iou(t.box, b), ti, bi) for ti, t in enumerate(self.tracks) for bi, b in enumerate(boxes)),
                       reverse=True)
        used_t: set[int] = set()
        used_b: set[int] = set()
        for score, ti, bi in pairs:
            if score < s.iou_match or ti in used_t or bi in used_b:
                continue
            t = self.tracks[ti]
            # light box smoothing: detector boxes jitter by a few pixels between frames
            t.box = tuple(int(round(0.5 * a + 0.5 * b)) for a, b in zip(t.box, boxes[bi]))  # type: ignore[assignment]
            t.missed = 0
            used_t.add(ti)
            used_b.add(bi)
        for ti, t in enumerate(self.tracks):
            if ti not in used_t:
                t.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= s.max_missed]
        for bi, b in enumerate(boxes):
            if bi not in used_b:
                self.tracks.append(Track(id=self._next, box=tuple(b)))  # type: ignore[arg-type]
                self._next += 1
        return self.tracks


STAGES = ("detect", "preprocess", "classify", "draw")


class LiveProcessor:
    """Per-stream state: frame in (RGB uint8) -> annotated frame out, with timings.

    One instance per video stream/session; the (shared) :class:`Predictor` and the
    :class:`LiveSettings` can be swapped at any time from another thread (plain attribute
    assignment; each frame reads them once). :meth:`stats` returns a snapshot for a readout.
    """

    def __init__(self, predictor: Predictor, settings: LiveSettings | None = None) -> None:
        self.predictor = predictor
        self.settings = settings or LiveSettings()
        self.tracker = FaceTracker()
        self.frames = 0
        self._avg: dict[str, float] = {k: 0.0 for k in STAGES}
        self._t_last: float | None = None
        self._fps = 0.0
        self._labels: list[str] = []
        self._state_lock = threading.Lock()
        self._detectors: dict[tuple[str, int], Detector] = {}
        self._model_id = id(predictor)
        self.last_timings: dict[str, float] = {}

    def _detector(self, s: LiveSettings) -> Detector:
        key = (s.detector, int(s.detect_side))
        if key not in self._detectors:
            from fer_core.faces import detector_class

            # detectors that downscale take the user's detection resolution; others get no kwarg
            accepts = "max_side" in inspect.signature(detector_class(s.detector)).parameters
            kw: dict[str, Any] = {"max_side": int(s.detect_side)} if accepts else {}
            self._detectors[key] = create_detector(s.detector, **kw)
        return self._detectors[key]

    def process(self, frame: np.ndarray) -> np.ndarray:
        """Annotate one RGB uint8 frame (returns a new array; the input is not modified)."""
        s = self.settings
        pred = self.predictor
        if id(pred) != self._model_id:          # model switched: old probabilities mean nothing
            self._model_id = id(pred)
            for t in self.tracker.tracks:
                t.probs, t.history = None, deque(maxlen=64)
        t0 = time.perf_counter()
        gray = to_gray(frame)
        det = self._detector(s)
        if self.frames % max(1, int(s.detect_every)) == 0 or not self.tracker.tracks:
            self.tracker.update(det.detect(gray), s)
        tracks = list(self.tracker.tracks)
        t1 = time.perf_counter()
        exact = bool(getattr(det, "exact_crop", False))
        x, seen = pred.model_inputs([crop_face(gray, t.box, exact=exact) for t in tracks])
        t2 = time.perf_counter()
        probs = pred.classify(x, pred.live_backend if s.backend == "auto" else s.backend)
        shown = [(t.box, t.update_probs(p, s), f"#{t.id}") for t, p in zip(tracks, probs)]
        t3 = time.perf_counter()
        out = np.ascontiguousarray(frame).copy()
        if s.gradcam and tracks:
            big = max(range(len(tracks)), key=lambda i: tracks[i].box[2] * tracks[i].box[3])
            self._draw_gradcam(out, gray, tracks[big].box, x[big:big + 1], seen[big])
        draw_faces(out, shown, pred.classes, bars=s.bars)
        t4 = time.perf_counter()
        self._record({"detect": t1 - t0, "preprocess": t2 - t1, "classify": t3 - t2, "draw": t4 - t3}, shown,
                     pred.classes)
        if s.readout:
            self._draw_readout(out)
        return out

    def _draw_gradcam(self, out: np.ndarray, gray: np.ndarray, box: Box, x: torch.Tensor, seen: np.ndarray) -> None:
        import cv2

        from fer_core.faces import crop_box

        try:
            amap = self.predictor.attribute(x, "pred", "gradcam")[0]
        except Exception:  # noqa: BLE001 - an overlay must never kill the stream
            return
        cx, cy, side, _ = crop_box(box)
        H, W = out.shape[:2]
        x0, y0, x1, y1 = max(0, cx), max(0, cy), min(W, cx + side), min(H, cy + side)
        if x1 <= x0 or y1 <= y0:
            return
        ov = heat_overlay(cv2.resize(seen, (side, side)), amap, alpha=0.45)
        out[y0:y1, x0:x1] = ov[y0 - cy:y1 - cy, x0 - cx:x1 - cx]

    def _record(self, secs: dict[str, float], shown: list[tuple[Box, np.ndarray, str]], classes: tuple[str, ...]) -> None:
        now = time.perf_counter()
        with self._state_lock:
            self.last_timings = {k: 1e3 * v for k, v in secs.items()}  # ms, this frame (benchmarks)
            a = 0.1 if self.frames else 1.0
            for k, v in secs.items():
                self._avg[k] = (1 - a) * self._avg[k] + a * 1e3 * v
            if self._t_last is not None:
                dt = now - self._t_last
                if dt > 0:
                    self._fps = 1.0 / dt if self._fps == 0 else 0.9 * self._fps + 0.1 / dt
            self._t_last = now
            self.frames += 1
            self._labels = [f"{tag} {classes[int(np.argmax(p))]} {float(np.max(p)):.2f}" for _, p, tag in shown]

    def _draw_readout(self, out: np.ndarray) -> None:
        import cv2

        st_ = self.stats()
        text = (f"det {st_['detect_ms']:.1f} pre {st_['preprocess_ms']:.1f} cls {st_['classify_ms']:.1f} "
                f"draw {st_['draw_ms']:.1f} ms | {st_['fps']:.0f} fps")
        fs = max(0.4, out.shape[0] / 1000)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, fs, 1)
        cv2.rectangle(out, (0, 0), (tw + 8, th + base + 8), (0, 0, 0), -1)
        cv2.putText(out, text, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, fs, (255, 255, 255), 1, cv2.LINE_AA)

    def stats(self) -> dict[str, Any]:
        """Snapshot: frames, fps (of frames arriving), ms per stage (running averages), face labels."""
        with self._state_lock:
            d: dict[str, Any] = {f"{k}_ms": self._avg[k] for k in STAGES}
            d.update(frames=self.frames, fps=self._fps, faces=len(self._labels), labels=list(self._labels),
                     total_ms=sum(self._avg.values()))
            return d

    def reset(self) -> None:
        with self._state_lock:
            self.tracker = FaceTracker()
            self.frames, self._fps, self._t_last, self._labels = 0, 0.0, None, []
            self._avg = {k: 0.0 for k in STAGES}


# ---------------------------------------------------------------------------------------------
# CLI


def prediction_records(file: str, pred: Prediction) -> list[dict[str, Any]]:
    """The CLI's JSON objects for one image: one per face, or one with ``box: null`` + ``error``."""
    if not pred.faces:
        return [{"file": file, "box": None, "error": pred.error or NO_FACE}]
    out = []
    for f in pred.faces:
        rec: dict[str, Any] = {"file": file,
                               "box": list(f.box) if f.box is not None else [0, 0, *pred.image_size],
                               "probs": f.probs_dict(), "top": f.top}
        if f.box is None:
            rec["whole_image"] = True
        out.append(rec)
    return out


def main_predict(args: argparse.Namespace) -> int:
    """``python -m fer_core predict RUN IMAGE… [--detector NAME] [--whole-image]``.

    One JSON line per face on stdout; an unreadable file or a file with no face gives one line
    with ``"box": null`` and ``"error"``, and the remaining files go on. The model is loaded once.
    Exit code 0 when every file could be read, 1 when at least one could not (no face is not a
    failure), 2 for a bad run directory or detector name (raised to ``fer_core.__main__``).
    """
    predictor = Predictor(args.run, detector=getattr(args, "detector", None))
    whole = bool(getattr(args, "whole_image", False))
    bad = 0
    for file in args.images:
        try:
            pred = predictor.predict(load_image(file), whole_image=whole)
            recs = prediction_records(file, pred)
        except ImageError as exc:
            bad += 1
            recs = [{"file": file, "box": None, "error": str(exc)}]
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
            bad += 1
            recs = [{"file": file, "box": None, "error": f"{type(exc).__name__}: {exc}"}]
        for r in recs:
            sys.stdout.write(json.dumps(r) + "\n")
        sys.stdout.flush()
    if bad:
        print(f"{bad} of {len(args.images)} file(s) could not be read", file=sys.stderr)
    return 1 if bad else 0


__all__ = ["EMOTION_COLORS", "Face", "FaceTracker", "LiveProcessor", "LiveSettings", "NO_FACE", "Prediction",
           "Predictor", "Track", "draw_faces", "heat_overlay", "main_predict", "prediction_records"]
