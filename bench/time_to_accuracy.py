"""Time to accuracy: follow a training run and score each epoch's weights on a split (PublicTest).

Why a watcher and not a training option: the curve is a *measurement* of the recipe, never an
input to it. The trainer chooses everything on the validation slice; this process only reads the
``last.pt`` the trainer writes after each epoch (``torch.load(weights_only=True)``), evaluates it
on ``--split`` and appends ``epoch,time_s,acc`` to ``--out`` (``time_s`` = the run's own training
wall time at that epoch, the ``metrics.csv`` clock). Run it next to a training job::

    nice -n 19 python bench/time_to_accuracy.py RUN_DIR --data PATH/fer2013_train_publictest.npz

It exits when the run is finished, and prints ``time-to-acc: run=… first epoch ≥ 0.700: E at M min``
(or that the run never got there) from the whole CSV, so it can also be re-run on a finished
curve with ``--report``.

With ``--keep DIR`` the watcher also saves each epoch's weights (fp16), and ``--from-kept DIR
--epochs 40-48 --tta tencrop`` scores those afterwards with another test-time augmentation (the
shipped model reaches 70% only with its ten-crop), so the crossing can be found without scoring
every epoch ten times during training.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def scored_epochs(out: Path) -> dict[int, tuple[float, float]]:
    if not out.exists():
        return {}
    with out.open() as f:
        return {int(r["epoch"]): (float(r["time_s"]), float(r["acc"])) for r in csv.DictReader(f)}


def parse_epochs(text: str) -> set[int]:
    """``"40-48"`` or ``"40,44,48"`` (or both, comma-separated) -> a set of epochs."""
    out: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def report(run: Path, out: Path, target: float) -> str:
    rows = sorted(scored_epochs(out).items())
    hit = next(((e, t) for e, (t, a) in rows if a >= target), None)
    best = max(rows, key=lambda r: r[1][1]) if rows else None
    head = f"time-to-acc: run={run.name} split_file={out.name} epochs_scored={len(rows)}"
    if best is not None:
        head += f" best={best[1][1]:.4f}@{best[0]}"
    if hit is None:
        return head + f" never reached {target:.3f}"
    return head + f" first epoch >= {target:.3f}: {hit[0]} at {hit[1] / 60:.1f} min"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--target", type=float, default=0.70)
    ap.add_argument("--tta", default="none", help="test-time augmentation of the scoring (none|flip|tencrop)")
    ap.add_argument("--out", default=None, help="CSV (default RUN/eval/watch_<split>.csv)")
    ap.add_argument("--poll", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--report", action="store_true", help="only print the line for the CSV there is")
    ap.add_argument("--from-kept", default=None, metavar="DIR",
                    help="score the kept epoch files in DIR (see --keep) instead of following the run")
    ap.add_argument("--epochs", default=None, metavar="A-B|E,E,…", help="with --from-kept: which epochs")
    ap.add_argument("--keep", default=None, metavar="DIR",
                    help="also save each scored epoch's weights (fp16 state_dict, epoch_N.pt) there, so the "
                         "curve can be re-scored later with another --tta without retraining")
    a = ap.parse_args(argv)
    run = Path(a.run)
    suffix = "" if a.tta == "none" else f"-tta_{a.tta}"
    out = Path(a.out) if a.out else run / "eval" / f"watch_{a.split}{suffix}.csv"
    if a.report:
        print(report(run, out, a.target))
        return 0

    import torch

    from fer_core.checkpoint import load_checkpoint, save_checkpoint
    from fer_core.data import open_dataset
    from fer_core.evaluate import predict_probs
    from fer_core.models import create_model
    from fer_core.preprocess import Preprocess
    from fer_core.runs import read_config

    torch.set_num_threads(a.threads)
    faces = open_dataset(a.data).select(a.split)
    y = faces.y.numpy()
    out.parent.mkdir(parents=True, exist_ok=True)

    def score(state_dict, epoch: int, elapsed_s: float) -> float:
        cfg = read_config(run)
        t = cfg["train"]
        model = create_model(t["model"], num_classes=len(cfg["classes"]), **t.get("model_kwargs", {}))
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()})
        model.eval()
        probs = predict_probs(model, faces.x, Preprocess.from_dict(cfg["preprocess"]), tta=a.tta)
        acc = float((np.asarray(probs).argmax(1) == y).mean())
        new = not out.exists()
        with out.open("a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["epoch", "time_s", "acc"])
            w.writerow([epoch, f"{elapsed_s:.1f}", f"{acc:.6f}"])
        print(f"epoch {epoch}: {a.split} acc {acc:.4f} (tta {a.tta})", file=sys.stderr, flush=True)
        return acc

    if a.from_kept:
        files = sorted(Path(a.from_kept).glob("epoch_*.pt"))
        want = parse_epochs(a.epochs) if a.epochs else None
        done = scored_epochs(out)
        for f in files:
            ck = load_checkpoint(f)
            e = int(ck["epoch"])
            if (want is None or e in want) and e not in done:
                score(ck["state_dict"], e, float(ck["elapsed_s"]))
        print(report(run, out, a.target))
        return 0
    seen_mtime = 0
    while True:
        cfg = read_config(run)
        last = run / "last.pt"
        mtime = last.stat().st_mtime_ns if last.exists() else 0
        if mtime and mtime != seen_mtime:
            try:
                ck = load_checkpoint(last)
            except Exception as exc:  # noqa: BLE001 - caught mid-replace: the next poll reads it
                print(f"skip: {exc}", file=sys.stderr)
                time.sleep(a.poll)
                continue
            seen_mtime = mtime
            epoch = int(ck["epoch"])
            if epoch not in scored_epochs(out):
                if a.keep:
                    keep = {"epoch": epoch, "elapsed_s": float(ck.get("elapsed_s", 0.0)),
                            "state_dict": {k: v.half() if v.is_floating_point() else v
                                           for k, v in ck["state_dict"].items()}}
                    save_checkpoint(Path(a.keep) / f"epoch_{epoch:03d}.pt", keep)
                score(ck["state_dict"], epoch, float(ck.get("elapsed_s", 0.0)))
        if cfg.get("finished"):
            break
        time.sleep(a.poll)
    print(report(run, out, a.target))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
