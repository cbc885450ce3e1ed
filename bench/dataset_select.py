"""Bench: a box/lasso selection on the Dataset page's map -> the gallery of the selected faces.

Why this shape: the goal (≤ 0.2 s once the map is cached) is about the whole rerun a selection
causes -- app + sidebar + Dataset page: the memoised map figure, the selection turned into faces,
the label-issue sort, one page of faces with their triage buttons, the inspector with its
saliency map -- so it is timed through ``AppTest`` (the script run Streamlit does for a
selection, minus the websocket), like ``bench/dashboard.py`` times a confusion-cell click. The
run is a temporary copy of a shipped SynthFER run (the page writes its map cache and triage marks
into the run folder). Selections are windows of growing size around points of the map, set as
the chart's selection state exactly as Plotly reports it. The last line carries the figures::

    map selection -> gallery: 0.12 s (median of 7 selections, …) …

Run: ``python bench/dataset_select.py [--run checkpoints/synth-cnn4-aug] [--split test] [--repeats 7]``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # before bench/ itself, whose dashboard.py would shadow the package


def _arr(v: object) -> np.ndarray:
    if isinstance(v, dict) and "bdata" in v:
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
    return np.asarray(v)


def _traces(at: object) -> list[tuple[np.ndarray, np.ndarray]]:
    chart = next(c for c in at.get("plotly_chart") if '"dragmode":"select"' in c.proto.spec.replace(" ", ""))
    spec = json.loads(chart.proto.spec)
    return [(_arr(t["x"]).astype(float), _arr(t["y"]).astype(float)) for t in spec["data"]]


def _select(at: object, traces: list[tuple[np.ndarray, np.ndarray]], box: tuple[float, float, float, float]) -> int:
    from streamlit.typing import PlotlyState

    x0, x1, y0, y1 = box
    points = []
    for c, (x, y) in enumerate(traces):
        for i in np.flatnonzero((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)):
            points.append({"curve_number": c, "point_number": int(i), "point_index": int(i),
                           "x": float(x[i]), "y": float(y[i])})
    at.session_state["ds_map"] = PlotlyState({"selection": {
        "points": points, "point_indices": sorted({p["point_index"] for p in points}),
        "box": [{"x": [x0, x1], "y": [y0, y1]}], "lasso": []}})
    return len(points)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default=str(ROOT / "checkpoints" / "synth-cnn4-aug"))
    ap.add_argument("--split", default="test")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    # A real server compiles each page once; AppTest builds a fresh ScriptCache per run. Share one,
    # so the timing is what a selection costs.
    import streamlit.testing.v1.app_test as app_test_mod
    from streamlit.runtime.scriptrunner.script_cache import ScriptCache
    from streamlit.testing.v1 import AppTest

    from fer_core.gallery import order_positions, selection_positions

    shared_cache = ScriptCache()
    app_test_mod.ScriptCache = lambda: shared_cache  # type: ignore[assignment]

    with tempfile.TemporaryDirectory(prefix="fer-bench-dataset-") as tmp:
        src = Path(args.run)
        run = Path(tmp) / "runs" / src.name
        shutil.copytree(src, run, ignore=shutil.ignore_patterns("triage", "*_embedding.npz"))
        os.environ["FER_RUNS"] = str(run.parent)
        os.environ["FER_RUNS_ONLY"] = "1"
        at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=900)
        at.run()
        t0 = time.perf_counter()
        at.switch_page(str(ROOT / "dashboard" / "views" / "dataset.py")).run()
        assert not at.exception, [e.value for e in at.exception]
        if at.selectbox(key="ds_split").value != args.split:
            at.selectbox(key="ds_split").set_value(args.split).run()
        first_map = time.perf_counter() - t0
        assert not at.exception, [e.value for e in at.exception]
        at.run()  # settle: every cache warm

        traces = _traces(at)
        xy = np.concatenate([np.stack(t, 1) for t in traces])
        span = float(np.ptp(xy, axis=0).max())
        rng = np.random.default_rng(0)
        times, cpus, sizes = [], [], []
        for r in range(args.repeats):
            cx, cy = xy[rng.integers(len(xy))]
            half = span * (0.04 + 0.3 * r / max(args.repeats - 1, 1))  # from a few faces to a large part
            n = _select(at, traces, (cx - half, cx + half, cy - half, cy + half))
            t, c = time.perf_counter(), time.process_time()
            at.run()
            times.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
            assert not at.exception, [e.value for e in at.exception]
            head = [m.value for m in at.markdown if "selected on the map" in m.value]
            assert head and head[0].startswith(f"#### {n} faces selected"), (head, n)
            sizes.append(n)

        # the pure part: selection -> positions -> gallery order
        sel = at.session_state["ds_map"]["selection"]
        curves = []
        start = 0
        for x, _ in traces:  # positions per trace are only needed for their count here
            curves.append(np.arange(start, start + len(x)))
            start += len(x)
        scores = np.random.default_rng(1).random(len(xy))
        t = time.perf_counter()
        for _ in range(20):
            pos = selection_positions(sel, curves)
            order_positions(pos, np.full((len(xy), 7), 1 / 7), np.zeros(len(xy), int), None, "issue", scores=scores)
        pure = (time.perf_counter() - t) / 20

    med = statistics.median(times)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"selections timed (faces selected): {sizes}; per-selection wall s: "
          + ", ".join(f"{v:.3f}" for v in times))
    print(f"map selection -> gallery: {med:.3f} s (median of {len(times)} selections, max {max(times):.3f} s; "
          f"CPU {statistics.median(cpus):.3f} s; AppTest full rerun) pure_select_sort={pure * 1000:.1f}ms "
          f"first_map={first_map:.1f}s n={len(xy)} loadavg={load:.1f} cores={os.cpu_count()}")


if __name__ == "__main__":
    main()
