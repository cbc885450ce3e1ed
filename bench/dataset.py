"""Bench: the Dataset view's embedding map of 7,000 faces, and label-issue precision at k vs FER+.

* **Embedding**: the shipped FER2013 model (``checkpoints/fer2013-vgg``) on PublicTest (3,589
  faces) plus the first Training faces up to ``--n``, read from ``fer2013_train_publictest.npz``
  (``--data``, default ``../shared/data/fer2013/``). The cold path of
  :func:`fer_core.dataset.embedding.load_or_compute_embedding` is timed on a temporary copy of the
  run (so ``checkpoints/`` is never written): penultimate features, then the UMAP layout, then the
  cache write; then the cached reload. UMAP's one-off numba compilation (paid by the first map of
  a process) is timed apart on a small warm-up set. Without the FER2013 file: SynthFER ``--n``
  faces and ``checkpoints/synth-cnn4-aug``, said in the line.
* **Precision at k** on PublicTest: of the top-k faces of each ranking, the share whose FER+ crowd
  majority disagrees with the FER2013 label (:func:`fer_core.dataset.label_issues.ferplus_disagrees`).
  Rankings: cleanlab on the model's stored PublicTest probabilities (``eval/test.npz``, out of
  sample), cleanlab on 5-fold logistic-regression probabilities of the penultimate features (when
  the faces are here), the least confident predictions first, and random orders (mean of 20).

Lines printed (the last two carry the figures)::

    dataset_embedding: n=7000 features=…s layout=…s total=…s umap_jit=…s cached_reload=…s …
    dataset_precision: split=PublicTest … cleanlab=…/…/… kfold=…/…/… low_confidence=… random=… base=…

Run: ``python bench/dataset.py [--n 7000] [--data PATH.npz]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fer_core.dataset.embedding import layout, load_or_compute_embedding  # noqa: E402
from fer_core.dataset.label_issues import (baseline_orders, ferplus_disagrees, kfold_probs,  # noqa: E402
                                           precision_at_k, rank_label_issues)
from fer_core.model import LoadedRun  # noqa: E402
from fer_core.rundata import RunData  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fer2013" / "fer2013_train_publictest.npz"
KS = (50, 200, 1000)


def fer2013_faces(path: Path, n: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(faces, labels, how many are PublicTest): PublicTest in the order of ``rows`` (the stored
    predictions' row ids), then Training faces in file order up to ``n``."""
    with np.load(path, allow_pickle=False) as z:
        x, y, usage, row = z["x"], z["y"], z["usage"], z["row"]
    pos = {int(r): i for i, r in enumerate(row)}
    test = np.array([pos[int(r)] for r in rows], dtype=np.int64)
    train = np.flatnonzero(usage == "Training")[:max(0, n - len(test))]
    idx = np.concatenate([test, train])[:n]
    return x[idx], y[idx], min(len(test), n)


def copy_run(run: Path, tmp: Path) -> Path:
    """config.json + checkpoint in a temp folder: the cache file is written there, not into the repo."""
    out = tmp / run.name
    out.mkdir()
    for name in ("config.json", "best.pt"):
        shutil.copy2(run / name, out / name)
    return out


def fmt(p: dict[int, float]) -> str:
    return "/".join(f"{p[k]:.3f}" if k in p else "-" for k in KS)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=7000, help="faces to embed")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="fer2013_train_publictest.npz")
    ap.add_argument("--run", default=str(ROOT / "checkpoints" / "fer2013-vgg"))
    a = ap.parse_args()
    run = Path(a.run)
    pred = RunData(run, "").stored_predictions("test")
    real = Path(a.data).is_file() and pred is not None
    if real:
        faces, labels, n_test = fer2013_faces(Path(a.data), a.n, pred.row)
        if not np.array_equal(labels[:n_test], pred.label[:n_test]):
            raise SystemExit(f"{a.data} does not match {run}/eval/test.npz (labels differ)")
        what = f"{run.name} on PublicTest {n_test} + Training {len(faces) - n_test} faces of {Path(a.data).name}"
    else:
        from fer_core.data.synthetic import generate

        faces, labels = generate(a.n, seed=1, label_noise=0.0)
        n_test, run = 0, ROOT / "checkpoints" / "synth-cnn4-aug"
        what = f"{run.name} on SynthFER {a.n} faces (note: FER2013 file not found at {a.data})"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"settings: {what} loadavg={load:.1f} cores={os.cpu_count()}", flush=True)

    # ---------------------------------------------------------------- embedding
    t = time.perf_counter()
    layout(np.random.default_rng(0).normal(size=(200, 16)).astype(np.float32))  # UMAP's numba compile
    jit = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        lm = LoadedRun(copy_run(run, Path(tmp)))
        marks: dict[str, float] = {}

        def progress(fraction: float, text: str) -> None:
            if "layout" in text and "layout" not in marks:
                marks["layout"] = time.perf_counter()

        t0 = time.perf_counter()
        emb = load_or_compute_embedding(lm, faces, split="bench", data_key="bench", progress=progress)
        t1 = time.perf_counter()
        load_or_compute_embedding(lm, faces, split="bench", data_key="bench")
        t2 = time.perf_counter()
    t_feat = marks.get("layout", t0) - t0
    print(f"dataset_embedding: n={len(faces)} features={t_feat:.1f}s layout={t1 - t0 - t_feat:.1f}s "
          f"total={t1 - t0:.1f}s umap_jit={jit:.1f}s cached_reload={t2 - t1:.2f}s method={emb.method} "
          f"source={emb.source!r} loadavg={os.getloadavg()[0]:.1f}", flush=True)

    # ---------------------------------------------------------------- precision at k vs FER+
    if not real or pred.ferplus_votes is None:
        print("dataset_precision: skipped (needs the FER2013 file and FER+ votes in eval/test.npz)")
        return
    truth = ferplus_disagrees(pred.label, pred.ferplus_votes, RunData(run, "").classes)
    rows, flagged = precision_rows(pred.label, pred.probs, truth,
                                   emb.features[:n_test] if n_test == len(pred) else None)
    for name, p in rows.items():
        print(f"  {name:15s} " + "  ".join(f"p@{k}={p[k]:.3f}" for k in KS if k in p))
    print(f"dataset_precision: split=PublicTest n={len(pred)} flagged={flagged} "
          f"k={'/'.join(map(str, KS))} " + " ".join(f"{k}={fmt(p)}" for k, p in rows.items())
          + f" base={truth.mean():.3f}", flush=True)


def precision_rows(labels: np.ndarray, probs: np.ndarray, truth: np.ndarray,
                   features: np.ndarray | None) -> tuple[dict[str, dict[int, float]], int]:
    """Precision at k of each ranking (k-fold only when the split's features are given), and how
    many faces cleanlab flags."""
    ours = rank_label_issues(labels, probs)
    rows = {"cleanlab": precision_at_k(ours.order, truth, KS)}
    if features is not None:
        kp = kfold_probs(features, labels, k=5, seed=0, num_classes=probs.shape[1])
        rows["kfold"] = precision_at_k(rank_label_issues(labels, kp).order, truth, KS)
    rows["low_confidence"] = precision_at_k(baseline_orders(labels, probs)["low confidence"], truth, KS)
    rnd = [precision_at_k(baseline_orders(labels, probs, seed=s)["random"], truth, KS) for s in range(20)]
    rows["random"] = {k: float(np.mean([r[k] for r in rnd])) for k in rnd[0]}
    return rows, int(ours.flagged.sum())


if __name__ == "__main__":
    main()
