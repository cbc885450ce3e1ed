"""Live webcam pipeline latency: per-frame detect / preprocess / classify / draw on 640×480 frames.

Frames: one SynthFER (synthetic) face upscaled to ~170 px on a gradient background, drifting a few
pixels per frame with sensor noise, so detection and tracking see motion (a fixed, dependency-free
stand-in for a webcam; no photo is shipped). Model: a shipped synthetic cnn4 run from
``checkpoints/`` when there is one, else a tiny cnn4 trained here in a temp dir (or ``--run``).

Two paths over the same frames, in one process:

* **live** -- :class:`fer_core.live.stream.LiveProcessor` as the dashboard runs it: Haar detection on
  a copy downscaled to ``--detect-side`` px, only every ``--detect-every``-th frame, IoU tracking in
  between, classification (``--backend``, default ONNX Runtime) + smoothing + drawing (boxes,
  labels, bars, latency text) every frame;
* **naive** -- full-resolution Haar detection on every frame, then ``LoadedRun.predict`` (PyTorch
  fp32, the upload path) and the same drawing.

``--recall`` instead measures the detector's recall on the real faces available offline.

Last line: ``live: fps=… detect=…ms preprocess=…ms classify=…ms draw=…ms classify_share=…% naive_fps=… speedup=…x
cpu_fps=… cpu_naive_fps=… backend=…`` (ms are wall-clock means per frame; ``detect`` is amortised over the
frames that skip detection; ``cpu_fps`` counts the thread's CPU time instead of wall time, i.e. the
rate when a core is free -- wall time is inflated whenever other jobs share the cores).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def find_run() -> Path | None:
    ck = ROOT / "checkpoints"
    if not ck.is_dir():
        return None
    for p in sorted(ck.iterdir()):
        try:
            cfg = json.loads((p / "config.json").read_text())
        except (OSError, ValueError):
            continue
        if cfg.get("model") == "cnn4" and str(cfg.get("data", "")).startswith("synthetic") and \
                any((p / f).exists() for f in ("best.pt", "last.pt")):
            return p
    return None


def tiny_run(root: Path) -> Path:
    from fer_core.train import TrainConfig, fit

    cfg = TrainConfig(data="synthetic:n=600", model="cnn4", epochs=1, batch_size=64)
    return Path(fit(cfg, run_dir=root / "bench-cnn4", runs_root=str(root)))


def make_frames(n: int, seed: int = 0) -> list[np.ndarray]:
    import cv2

    from fer_core.data.synthetic import generate

    from fer_core.live.faces import create_detector, iou

    x, _ = generate(40, seed=1)
    bg = np.tile(np.linspace(80, 170, 640, dtype=np.float32), (480, 1))
    det = create_detector("haar")
    face = None
    for f in x:                       # the first synthetic face Haar finds at this size and place
        cand = cv2.resize(f, (170, 170), interpolation=cv2.INTER_CUBIC)
        img = bg.copy()
        img[150:320, 235:405] = cand
        if any(iou(b, (235, 150, 170, 170)) > 0.5 for b in det.detect(img.astype(np.uint8))):
            face = cand
            break
    if face is None:
        raise SystemExit("no SynthFER face was detected: cannot build benchmark frames")
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        img = bg.copy()
        dx = int(round(235 + 12 * np.sin(k / 7)))
        dy = int(round(150 + 6 * np.cos(k / 9)))
        img[dy:dy + 170, dx:dx + 170] = face
        img += rng.normal(0, 3, img.shape).astype(np.float32)
        g = np.clip(img, 0, 255).astype(np.uint8)
        frames.append(np.ascontiguousarray(np.repeat(g[:, :, None], 3, axis=2)))
    return frames


def run_live(predictor, frames, settings, warmup: int):
    from fer_core.live.stream import LiveProcessor

    proc = LiveProcessor(predictor, settings)
    rows, faces, cpu = [], 0, []
    for k, f in enumerate(frames):
        c0 = time.thread_time()
        proc.process(f)
        c1 = time.thread_time()
        if k >= warmup:
            rows.append(proc.last_timings)
            faces += proc.stats()["faces"]
            cpu.append(1e3 * (c1 - c0))
    out = {s: float(np.mean([r[s] for r in rows])) for s in rows[0]}
    return out, faces / len(rows), float(np.mean(cpu))


def run_naive(predictor, frames, warmup: int, min_face: float):
    import time as _t

    from fer_core.live.draw import draw_faces
    from fer_core.live.faces import HaarDetector

    det = HaarDetector(max_side=None, min_face=min_face)
    rows, faces, cpu = [], 0, []
    for k, f in enumerate(frames):
        c0 = _t.thread_time()
        t0 = _t.perf_counter()
        boxes = det.detect(f)
        t1 = _t.perf_counter()
        pred = predictor.predict(f, boxes=boxes)
        t2 = _t.perf_counter()
        out = f.copy()
        draw_faces(out, [(fc.box, fc.probs, "") for fc in pred.faces], predictor.classes)
        t3 = _t.perf_counter()
        if k >= warmup:
            rows.append({"detect": 1e3 * (t1 - t0), "predict": 1e3 * (t2 - t1), "draw": 1e3 * (t3 - t2)})
            faces += len(pred.faces)
            cpu.append(1e3 * (_t.thread_time() - c0))
    return {s: float(np.mean([r[s] for r in rows])) for s in rows[0]}, faces / len(rows), float(np.mean(cpu))


def recall(n: int = 100, side: int = 320) -> None:
    """Detector recall, CPU time per frame and FER2013 framing on the real faces usable offline (a line per detector).

    FER2013 (``../shared/data/fer2013`` or ``$FER_DATA`` .npz): faces upscaled 4× and edge-padded
    into a 640×480 frame; scikit-image's LFW subset (100 faces, 25×25) upscaled 6×; its astronaut.
    Each source is skipped when absent. ``scale`` = FER face side / Haar box side (median),
    ``shift_y`` = (face centre - box centre) / box side: what ``fer_core.live.faces.CROP_SCALE``/``CROP_SHIFT_Y``
    are set from.
    """
    import cv2

    from fer_core.live.faces import HaarDetector, iou

    sources: dict[str, tuple[list[np.ndarray], int]] = {}
    npz = Path(os.environ.get("FER_DATA", ROOT.parent / "shared/data/fer2013/fer2013_train_publictest.npz"))
    if npz.suffix == ".npz" and npz.is_file():
        z = np.load(npz)
        idx = np.random.default_rng(0).choice(len(z["x"]), n, replace=False)
        sources["fer2013"] = (list(z["x"][idx]), 4)
    astro = None
    try:
        from skimage import data as skdata

        sources["lfw"] = (list((skdata.lfw_subset()[:n] * 255).astype(np.uint8)), 6)
        astro = skdata.astronaut()
    except ImportError:
        print("scikit-image not installed: LFW subset and astronaut skipped", file=sys.stderr)

    def scene(face: np.ndarray, up: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        f = cv2.resize(face, (face.shape[1] * up, face.shape[0] * up), interpolation=cv2.INTER_CUBIC)
        y0, x0 = 60, 200
        img = cv2.copyMakeBorder(f, y0, 480 - y0 - f.shape[0], x0, 640 - x0 - f.shape[1], cv2.BORDER_REPLICATE)
        return img, (x0, y0, f.shape[1], f.shape[0])

    detectors: list[tuple[str, object]] = [
        (f"{c.removeprefix('haarcascade_frontalface_').removesuffix('.xml')} eq={int(eq)}:",
         HaarDetector(c, max_side=side, equalize=eq, min_neighbors=5 if "default" in c else 4))
        for c, eq in (("haarcascade_frontalface_default.xml", False), ("haarcascade_frontalface_default.xml", True),
                      ("haarcascade_frontalface_alt2.xml", False))]
    try:
        from fer_core.live.faces import MTCNNDetector

        detectors.append(("mtcnn:", MTCNNDetector(max_side=side)))
    except RuntimeError as exc:  # facenet-pytorch not installed
        print(f"mtcnn skipped: {exc}", file=sys.stderr)
    for label, det in detectors:
        parts = [label]
        cpu: list[float] = []
        for name, (faces, up) in sources.items():
            hits, scales, shifts = 0, [], []
            for f in faces:
                img, gt = scene(f, up)
                c0 = time.thread_time()
                found = det.detect(img)
                cpu.append(time.thread_time() - c0)
                m = [b for b in found if iou(b, gt) > 0.3]
                if m:
                    hits += 1
                    scales.append(gt[2] / m[0][2])
                    shifts.append(((gt[1] + gt[3] / 2) - (m[0][1] + m[0][3] / 2)) / m[0][2])
            parts.append(f"{name} recall={hits / len(faces):.2f}")
            if name == "fer2013" and scales:
                parts.append(f"scale={np.median(scales):.3f} shift_y={np.median(shifts):+.3f}")
        if cpu:
            parts.append(f"cpu={1e3 * float(np.median(cpu)):.1f}ms/frame")
        if astro is not None:
            parts.append(f"astronaut boxes={det.detect(astro)}")
        print(" ".join(parts), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default=None, help="run directory (default: shipped synthetic cnn4, else train one)")
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--detect-every", type=int, default=3)
    ap.add_argument("--detect-side", type=int, default=320)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch and OpenCV threads (default 1: one small face per frame gains nothing from "
                         "intra-op threads, and their spin-waits collapse when other jobs share the cores)")
    ap.add_argument("--backend", default="auto", choices=["auto", "torch", "torch-bf16", "onnx", "onnx-int8"],
                    help="classifier backend for the live path: auto "
                    "(LoadedRun.live_backend: ONNX Runtime when installed), torch, torch-bf16 or onnx")
    ap.add_argument("--recall", action="store_true", help="measure detector recall (Haar cascades, MTCNN if installed) on real faces instead")
    a = ap.parse_args()
    if a.recall:
        import cv2
        import torch

        torch.set_num_threads(a.threads)
        cv2.setNumThreads(a.threads)
        recall()
        return

    import cv2
    import torch

    from fer_core.live.stream import LiveSettings
    from fer_core.model import LoadedRun

    torch.set_num_threads(a.threads)
    cv2.setNumThreads(a.threads)
    tmp = None
    run = Path(a.run) if a.run else find_run()
    if run is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-live-")
        print("no shipped synthetic cnn4 run: training a tiny one (1 epoch, 600 faces)…", file=sys.stderr)
        run = tiny_run(Path(tmp.name))
    predictor = LoadedRun(run)
    frames = make_frames(a.frames + a.warmup)
    settings = LiveSettings(detect_every=a.detect_every, detect_side=a.detect_side, bars=True, readout=True,
                            backend=a.backend)
    backend = predictor.live_backend if a.backend == "auto" else a.backend
    predictor.classify(predictor.model_inputs([frames[0][:48, :48, 0]])[0], backend)  # build it before timing
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    live, live_faces, live_cpu = run_live(predictor, frames, settings, a.warmup)
    naive, naive_faces, naive_cpu = run_naive(predictor, frames, a.warmup, settings_min_face())
    wall = time.perf_counter() - t
    total = sum(live.values())
    naive_total = sum(naive.values())
    fps, naive_fps = 1e3 / total, 1e3 / naive_total
    print(f"run {run} ({predictor.config.get('model')}), {a.frames} frames 640x480 after {a.warmup} warm-up, "
          f"threads={a.threads}, classifier {backend}, detect every {a.detect_every} frame(s) at {a.detect_side}px, "
          f"load average {load0:.1f} -> {os.getloadavg()[0]:.1f} (other jobs share these cores), {wall:.0f}s")
    print(f"faces per frame: live {live_faces:.2f}, naive {naive_faces:.2f}")
    print(f"CPU time per frame (this thread; what the frame costs when a core is free): live {live_cpu:.2f}ms "
          f"naive {naive_cpu:.2f}ms")
    print("naive: " + " ".join(f"{k}={v:.2f}ms" for k, v in naive.items()) + f" fps={naive_fps:.1f}")
    print(f"live: fps={fps:.1f} detect={live['detect']:.2f}ms preprocess={live['preprocess']:.2f}ms "
          f"classify={live['classify']:.2f}ms draw={live['draw']:.2f}ms "
          f"classify_share={100 * live['classify'] / total:.1f}% naive_fps={naive_fps:.1f} "
          f"speedup={naive_total / total:.1f}x cpu_fps={1e3 / live_cpu:.1f} cpu_naive_fps={1e3 / naive_cpu:.1f} "
          f"backend={backend}")
    if tmp is not None:
        tmp.cleanup()


def settings_min_face() -> float:
    from fer_core.live.faces import HaarDetector

    return HaarDetector.__init__.__kwdefaults__["min_face"]


if __name__ == "__main__":
    main()
