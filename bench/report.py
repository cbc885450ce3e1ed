"""Time to build the one-command report of a shipped run, cold and warm, in one process.

Cold = the first :func:`fer_core.report.build_report` in a fresh process (loads the model, opens
or regenerates the faces, builds every figure). Warm = the same call again: the model and the
faces are reused from the report's in-process memos, so what is left is the figures themselves --
what the dashboard pays when the inputs of its cached report change but the model and data did not.
The HTML is written once to ``--out`` so its size is that of the real file. The last line printed
carries the figures::

    report: run=synth-cnn4-aug seconds=… (cold) seconds_warm=… bytes=…

Run: ``python bench/report.py [--run checkpoints/synth-cnn4-aug] [--compare checkpoints/synth-cnn4-plain]
[--threads 2]`` on a quiet machine (no training job or test suite sharing the cores).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default=str(ROOT / "checkpoints" / "synth-cnn4-aug"))
    ap.add_argument("--compare", nargs="*", default=[str(ROOT / "checkpoints" / "synth-cnn4-plain")])
    ap.add_argument("--split", default="test")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="where to write the HTML (default: a temp file)")
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    from fer_core.checkpoint import atomic_write_text
    from fer_core.report import build_report

    t = time.perf_counter()
    html = build_report(a.run, compare=a.compare, split=a.split)
    cold = time.perf_counter() - t
    t = time.perf_counter()
    html = build_report(a.run, compare=a.compare, split=a.split)
    warm = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(a.out) if a.out else Path(tmp) / "report.html"
        atomic_write_text(out, html)
        size = out.stat().st_size
    print(f"settings: threads={a.threads} split={a.split} compare={len(a.compare)}", file=sys.stderr)
    print(f"report: run={Path(a.run).name} seconds={cold:.2f} (cold) seconds_warm={warm:.2f} bytes={size}")


if __name__ == "__main__":
    main()
