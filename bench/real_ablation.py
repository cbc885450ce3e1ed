"""What the weight EMA and test-time augmentation add, measured on one finished training run.

Why a script and not more training runs: an EMA run's ``last.pt`` holds both weight sets of the
same final step (``state_dict`` = EMA, ``train_state_dict`` = the raw optimiser weights), and TTA
is a choice at evaluation time -- so both ablations cost only inference, not another 2-hour run.
(Label smoothing, normalisation and augmentation need their own training runs: see the README's
study runs.)

Run: ``python bench/real_ablation.py RUN_DIR --data PATH/fer2013_train_publictest.npz``
(RUN_DIR must be the full run with ``last.pt``, not an exported one). Prints one line per
(weights, TTA, split) and a last line with the PublicTest accuracies.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/…` from anywhere

import torch  # noqa: E402

from fer_core.checkpoint import load_checkpoint  # noqa: E402
from fer_core.data.spec import open_dataset  # noqa: E402
from fer_core.evaluate import predict_probs  # noqa: E402
from fer_core.model import LoadedRun  # noqa: E402
from fer_core.runs import read_config  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("--data", default=None, help="dataset spec (default: the run's own)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tta", default="none,flip,tencrop", help="comma-separated TTA modes")
    ap.add_argument("--weights", default="best,last,raw",
                    help="comma-separated: best (EMA at the best val epoch), last (EMA), raw (last, no EMA)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    run = Path(a.run)
    cfg = read_config(run)
    tr = cfg.get("train", {})
    faces = open_dataset(a.data or cfg["data"], val_fraction=float(tr.get("val_fraction", 0.1)),
                         seed=int(tr.get("seed", 0)))
    last = load_checkpoint(run / "last.pt")
    if "train_state_dict" not in last:
        raise SystemExit(f"{run}/last.pt has no raw weights (trained without --ema?): nothing to compare")
    want = {w.strip() for w in a.weights.split(",")}
    variants = {}
    best = LoadedRun(run, which="best")
    if "best" in want:
        variants[f"best epoch {best.epoch} (EMA)"] = best.model
    ema_last = LoadedRun(run, which="last")
    if "last" in want:
        variants[f"last epoch {ema_last.epoch} (EMA)"] = ema_last.model
    if "raw" in want:
        raw = LoadedRun(run, which="last")
        raw.model.load_state_dict(last["train_state_dict"])
        variants[f"last epoch {ema_last.epoch} (raw, no EMA)"] = raw.model

    summary = []
    for name, model in variants.items():
        for tta in [t.strip() for t in a.tta.split(",") if t.strip()]:
            for split in ("val", "test"):
                part = faces.select(split)
                t = time.perf_counter()
                probs = predict_probs(model, part.x, best.preprocess, tta=tta)
                acc = float((probs.argmax(1) == part.y.numpy()).mean())
                print(f"{name:32s} tta={tta:8s} {split:4s} acc={acc:.4f} n={len(part)} "
                      f"({time.perf_counter() - t:.1f}s)", flush=True)
                if split == "test":
                    summary.append(f"{name.split(' (')[0].replace(' ', '')}"
                                   f"{'-raw' if 'raw' in name else '-ema'}/{tta}={acc:.4f}")
    print("real_ablation: " + " ".join(summary))


if __name__ == "__main__":
    main()
