"""Batched explanations vs one call per item, measured in one run.

* Feature visualisation: all 64 filters of cnn4's ``features.conv2`` optimised together (batch
  dimension = filter index) vs a Python loop of 64 single-filter calls, same mode and steps.
* Attribution: a page of 24 faces in one :func:`fer_core.explain.attribution.explain` call vs 24
  calls with one face each, per method, same options.

Untrained cnn4 (seeded) on SynthFER test faces: timing does not depend on the weights. The two
variants are measured alternately, ``--repeats`` times each, and each figure is the minimum (the
machine is shared with other jobs; alternating keeps a load change from favouring one side, and
the minimum is the least disturbed run).
The last line printed carries the figures::

    explain: featviz_batched=…s featviz_loop=…s speedup=…x | saliency …x ig …x smoothgrad …x …

Run: ``python bench/explain.py [--steps 32] [--repeats 2] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from fer_core.data import open_dataset  # noqa: E402
from fer_core.explain.attribution import explain  # noqa: E402
from fer_core.explain.featviz import visualize_filters  # noqa: E402
from fer_core.models import create_model  # noqa: E402
from fer_core.preprocess import Preprocess  # noqa: E402

SHORT = {"saliency": "saliency", "integrated_gradients": "ig", "smoothgrad": "smoothgrad",
         "guided_backprop": "guided_backprop", "gradcam": "gradcam", "occlusion": "occlusion"}


def alternate(batched, loop, repeats: int) -> tuple[float, float]:
    """Minimum wall time of each callable, measured alternately ``repeats`` times."""
    tb = tl = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        batched()
        tb = min(tb, time.perf_counter() - t)
        t = time.perf_counter()
        loop()
        tl = min(tl, time.perf_counter() - t)
    return tb, tl


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=32, help="gradient-ascent steps (both variants)")
    ap.add_argument("--mode", default="regularized", choices=("naive", "regularized"))
    ap.add_argument("--layer", default="features.conv2")
    ap.add_argument("--faces", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 by default: on 2 shared cores, 2 threads stall each other)")
    ap.add_argument("--methods", default=",".join(SHORT))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = create_model("cnn4").eval()
    fs = open_dataset("synthetic:n=400,seed=0").select("test")
    pre = Preprocess.fit(fs.x, normalize=True)
    x = pre(fs.x[:a.faces])
    print(f"threads={a.threads} model=cnn4 layer={a.layer} mode={a.mode} steps={a.steps} faces={len(x)}",
          flush=True)

    # ---------------------------------------------------------------- feature visualisation
    n_filters = model.get_submodule(a.layer).out_channels
    visualize_filters(model, a.layer, filters=[0], steps=2, preprocess=pre, mode=a.mode)  # warm-up
    t_batched, t_loop = alternate(
        lambda: visualize_filters(model, a.layer, mode=a.mode, steps=a.steps, preprocess=pre),
        lambda: [visualize_filters(model, a.layer, filters=[k], mode=a.mode, steps=a.steps, preprocess=pre)
                 for k in range(n_filters)], a.repeats)
    print(f"featviz: {n_filters} filters x {a.steps} steps, one batch {t_batched:.2f}s, "
          f"{n_filters} single-filter calls {t_loop:.2f}s", flush=True)

    # ---------------------------------------------------------------- attribution
    ratios: dict[str, float] = {}
    targets = torch.arange(len(x)) % 7
    for method in [m.strip() for m in a.methods.split(",") if m.strip()]:
        kw = {"preprocess": pre}
        explain(model, x[:2], targets[:2], method, **kw)  # warm-up (imports, allocator)
        tb, tl = alternate(lambda: explain(model, x, targets, method, **kw),
                           lambda: [explain(model, x[i:i + 1], targets[i:i + 1], method, **kw)
                                    for i in range(len(x))], a.repeats)
        ratios[method] = tl / tb
        print(f"{method:22s} batched {tb:7.3f}s  {len(x)} single calls {tl:7.3f}s  {tl / tb:5.1f}x", flush=True)

    parts = " ".join(f"{SHORT.get(m, m)} {r:.1f}x" for m, r in ratios.items())
    print(f"explain: featviz_batched={t_batched:.2f}s featviz_loop={t_loop:.2f}s "
          f"speedup={t_loop / t_batched:.1f}x | {parts}")


if __name__ == "__main__":
    main()
