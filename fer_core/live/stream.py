"""Live video: per-stream face tracking, smoothing and per-stage timings around a shared model.

Why a separate per-stream object: the model is loaded once and shared by every session and the
CLI, so it holds no per-caller state. Everything that belongs to one video stream -- face tracks,
smoothed probabilities, frame counters, timings, its detector instances -- lives in a
:class:`LiveProcessor`, one per stream.

Why the live path keeps up with a webcam on two cores: faces are detected on a downscaled frame
and only every ``detect_every``-th frame; in between, the tracked boxes are reused (faces move a
few pixels between frames) and only the cheap classifier runs -- by default the model's
``live_backend`` (ONNX Runtime where it works, see :mod:`fer_core.live.onnx_runtime`). Tracks are
matched between detections by IoU, and each track smooths its probabilities (EMA or a moving
window) so labels do not flicker. ``bench/live.py`` measures the whole path.

The processor talks to the model only through :class:`LiveModel` (``model_inputs``, ``classify``,
``live_backend``, ``attribute``, ``classes``), so any loaded-model object with those members
serves a stream.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from fer_core.live.draw import draw_faces, draw_text_box
from fer_core.live.faces import Box, Detector, create_detector, crop_box, crop_face, detector_class, iou, to_gray


class LiveModel(Protocol):
    """What a :class:`LiveProcessor` needs from the (shared) loaded model."""

    classes: tuple[str, ...]

    @property
    def live_backend(self) -> str: ...

    def model_inputs(self, crops: list[np.ndarray]) -> tuple[torch.Tensor, np.ndarray]: ...

    def classify(self, x: torch.Tensor, backend: str = "torch") -> np.ndarray: ...

    def attribute(self, x: torch.Tensor, target: Any = "pred", method: str = "gradcam") -> np.ndarray: ...


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
    backend: str = "auto"            # classifier backend: "auto" = the model's live_backend, or one of BACKENDS
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

    One instance per video stream/session; the (shared) model (:class:`LiveModel`, attribute
    ``predictor``) and the :class:`LiveSettings` can be swapped at any time from another thread
    (plain attribute assignment; each frame reads them once). :meth:`stats` returns a snapshot
    for a readout.
    """

    def __init__(self, predictor: LiveModel, settings: LiveSettings | None = None) -> None:
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
            self._draw_gradcam(out, tracks[big].box, x[big:big + 1], seen[big])
        draw_faces(out, shown, pred.classes, bars=s.bars)
        t4 = time.perf_counter()
        self._record({"detect": t1 - t0, "preprocess": t2 - t1, "classify": t3 - t2, "draw": t4 - t3}, shown,
                     pred.classes)
        if s.readout:
            self._draw_readout(out)
        return out

    def _draw_gradcam(self, out: np.ndarray, box: Box, x: torch.Tensor, seen: np.ndarray) -> None:
        """Grad-CAM of one face, blended over its crop square in ``out`` (in place)."""
        import cv2

        from fer_core.explain.colour import heat_overlay

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
        st_ = self.stats()
        text = (f"det {st_['detect_ms']:.1f} pre {st_['preprocess_ms']:.1f} cls {st_['classify_ms']:.1f} "
                f"draw {st_['draw_ms']:.1f} ms | {st_['fps']:.0f} fps")
        draw_text_box(out, text, max(0.4, out.shape[0] / 1000))

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


__all__ = ["STAGES", "FaceTracker", "LiveModel", "LiveProcessor", "LiveSettings", "Track"]
