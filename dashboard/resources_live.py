"""The Live page's cached resources (to be folded into ``dashboard/resources.py``).

Why ``st.cache_resource`` and why this key: a :class:`fer_core.predictor.Predictor` is thread-safe
and holds no per-session state, so *one* instance per checkpoint file serves every browser session
and the webcam frame threads. It is keyed by run path + which checkpoint + the checkpoint file's
mtime, so a retrained or replaced checkpoint is loaded afresh and an unchanged one never is.

Self-contained on purpose (no import from ``dashboard.resources``) so it can be pasted into that
module as is.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from fer_core.checkpoint import CheckpointError
from fer_core.predictor import Predictor
from fer_core.runs import checkpoint_file


def _ckpt_mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime_ns / 1e9
    except OSError:
        return 0.0


@st.cache_resource(show_spinner="Loading model…", max_entries=4)
def _live_predictor(path: str, which: str, stamp: float) -> Predictor:
    return Predictor(path, which=which)


def live_predictor(run: str | Path, which: str = "best") -> Predictor:
    """The run's shared :class:`Predictor` (loaded once per checkpoint file version)."""
    ckpt = checkpoint_file(Path(run), which)
    if not ckpt.exists():
        raise CheckpointError(f"checkpoint not found: {ckpt}")
    return _live_predictor(str(run), which, _ckpt_mtime(ckpt))
