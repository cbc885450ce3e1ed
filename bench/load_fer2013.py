"""Seconds to load a full-size (35,887-row, ~290 MB) fer2013.csv: ``open_dataset`` vs torchvision.

Why: loading the user's FER2013 copy happens on every training run, evaluation and dashboard start,
so it has to take seconds, not the minute-plus of a per-number Python parse. torchvision's
``datasets.FER2013`` is the reference everyone already has; it parses each row with
``int()`` per pixel inside ``csv.DictReader``.

What is timed (file already in the page cache, one run each, wall clock or ``--clock cpu``; both
loaders are single-threaded, so CPU time is the fair measure when other jobs share the cores):
- ours: ``open_dataset(csv)`` -> FaceSet with all faces as one uint8 tensor, labels, splits.
- torchvision: ``FER2013(root, split="train")`` + ``FER2013(root, split="test")`` (together they
  cover every row) and materialising every item as a tensor (``PILToTensor``), stacked.
  torchvision's md5 check is replaced by an existence check (a generated or user copy does not
  match the Kaggle md5; hashing is not parsing anyway). Both results are compared face by face.

Without ``--csv`` a file of that size is written to a temporary directory (never the repo): SynthFER
faces (a pool of ``--pool`` distinct faces, repeated to 35,887 rows: parsing cost does not depend on
uniqueness) with FER2013's Usage counts 28,709 Training / 3,589 PublicTest / 3,589 PrivateTest.

Last line: ``load_fer2013: ours=…s torchvision=…s speedup=…x rows=35887``
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torchvision.datasets.fer2013 as tvfer  # noqa: E402  (imported before any timing)
from torchvision.transforms import PILToTensor  # noqa: E402

from fer_core.data.spec import open_dataset  # noqa: E402

ROWS = 35887
USAGE_COUNTS = (("Training", 28709), ("PublicTest", 3589), ("PrivateTest", 3589))


def synth_pool(n: int) -> tuple[np.ndarray, np.ndarray, str]:
    try:
        from fer_core.data.synthetic import generate

        x, y = generate(n=n, seed=0)
        return np.asarray(x, dtype=np.uint8), np.asarray(y, dtype=np.int64), "SynthFER"
    except ImportError:   # SynthFER not available: random pixels exercise the parser just as well
        rng = np.random.default_rng(0)
        return (rng.integers(0, 256, (n, 48, 48)).astype(np.uint8), rng.integers(0, 7, n),
                "random pixels")


def write_fer2013_csv(path: Path, rows: int, pool: int) -> str:
    x, y, kind = synth_pool(min(pool, rows))
    tab = np.array([str(i) for i in range(256)], dtype=object)
    texts = [" ".join(tab[f.ravel()]) for f in x]
    usage = [u for u, k in USAGE_COUNTS for _ in range(k)]
    usage = (usage + ["Training"] * rows)[:rows]
    with open(path, "w", newline="") as f:
        f.write("emotion,pixels,Usage\n")
        for i in range(rows):
            j = i % len(texts)
            f.write(f"{int(y[j])},{texts[j]},{usage[i]}\n")
    return f"{kind}, {len(texts)} distinct faces"


def load_torchvision(root: Path) -> tuple[dict[str, torch.Tensor], dict[str, list]]:
    tvfer.check_integrity = lambda fpath, md5=None: os.path.isfile(fpath)   # see docstring
    xs, ys = {}, {}
    for split in ("train", "test"):
        ds = tvfer.FER2013(str(root), split=split, transform=PILToTensor())
        items = [ds[i] for i in range(len(ds))]
        xs[split] = torch.stack([img[0] for img, _ in items]) if items else torch.zeros(0, 48, 48)
        ys[split] = [t for _, t in items]
    return xs, ys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--csv", type=Path, help="a real fer2013.csv / icml_face_data.csv to load")
    ap.add_argument("--rows", type=int, default=ROWS, help="rows of the generated file")
    ap.add_argument("--pool", type=int, default=4000,
                    help="distinct SynthFER faces in the generated file (generation is slow)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall time, or this process's CPU time (steadier on a busy machine)")
    a = ap.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="load_fer2013_") as tmp:
        root = Path(tmp)
        (root / "fer2013").mkdir()
        if a.csv:
            src = a.csv.resolve()
            with open(src, encoding="utf-8-sig") as f:
                header = f.readline()
            name = "icml_face_data.csv" if ", " in header else "fer2013.csv"   # icml: ", Usage"
            (root / "fer2013" / name).symlink_to(src)
            what = f"{src}"
        else:
            src = root / "fer2013" / "fer2013.csv"
            t0 = time.perf_counter()
            what = write_fer2013_csv(src, a.rows, a.pool)
            print(f"wrote {src} ({src.stat().st_size / 1e6:.0f} MB, {what}) "
                  f"in {time.perf_counter() - t0:.1f}s", flush=True)
        src.read_bytes()   # warm the page cache so neither side pays for the disk

        t0, c0 = time.perf_counter(), time.process_time()
        fs = open_dataset(str(src))
        w_ours, c_ours = time.perf_counter() - t0, time.process_time() - c0
        print(f"ours: {fs.describe()}: wall {w_ours:.2f}s, cpu {c_ours:.2f}s", flush=True)

        t0, c0 = time.perf_counter(), time.process_time()
        tv_x, tv_y = load_torchvision(root)
        w_tv, c_tv = time.perf_counter() - t0, time.process_time() - c0
        print(f"torchvision: train={len(tv_x['train'])} test={len(tv_x['test'])}: "
              f"wall {w_tv:.2f}s, cpu {c_tv:.2f}s", flush=True)
        t_ours, t_tv = (c_ours, c_tv) if a.clock == "cpu" else (w_ours, w_tv)

        # same faces? (torchvision: Training rows, then Public+PrivateTest rows, each in file order)
        with open(src, newline="", encoding="utf-8-sig") as f:
            rdr = csv.reader(f)
            cols = [c.strip() for c in next(rdr)]
            ui = cols.index("Usage")
            usage = np.array([r[ui] for r in rdr])
        order = np.argsort(fs.row, kind="stable")
        x_ours, y_ours = fs.x[order], fs.y[order]
        tr, te = usage == "Training", np.isin(usage, ["PublicTest", "PrivateTest"])
        same = (torch.equal(x_ours[torch.from_numpy(tr)], tv_x["train"])
                and torch.equal(x_ours[torch.from_numpy(te)], tv_x["test"])
                and y_ours[torch.from_numpy(tr)].tolist() == tv_y["train"])
        print(f"identical faces and labels: {same}")
        rows = len(usage)
    print(f"load_fer2013: ours={t_ours:.2f}s torchvision={t_tv:.2f}s "
          f"speedup={t_tv / t_ours:.1f}x rows={rows}")


if __name__ == "__main__":
    main()
