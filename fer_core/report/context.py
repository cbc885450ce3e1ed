"""What a report is made from: the run's model, data, faces and predictions -- or why each is missing.

Why gathered once, up front: several sections need the same things (the split's predictions, the
faces behind them, the model), and a section that cannot have one of them must say *why* in the
report rather than fail the whole report. So each is loaded once here with its reason on failure
(``LoadedRun`` -> ``ModelUnavailable`` for a predictions-only run; ``RunData.data.note`` when the
data file is not on this machine; ``gradient_reason`` for an inference-only import).

Why in-process memos (:func:`shared_model`, :func:`shared_faces`): the CLI/bench build a report
more than once per process, and a second build should cost only the figures. The model is keyed by
its checkpoint file's version, the faces by the resolved data choice (which includes the data
file's version). The dashboard passes its own cached ``LoadedRun`` and face set instead.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fer_core.model import LoadedRun, ModelUnavailable
from fer_core.rundata import DataChoice, DataUnavailable, Predictions, RunData, open_faces
from fer_core.runs import checkpoint_file, read_config

__all__ = ["ReportContext", "gather", "shared_faces", "shared_model"]


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


@functools.lru_cache(maxsize=4)
def _model(path: str, stamp: int) -> LoadedRun:
    return LoadedRun(path)


def shared_model(run: str | os.PathLike[str]) -> LoadedRun:
    """The run's LoadedRun, loaded once per checkpoint file version in this process."""
    run = Path(run).resolve()
    return _model(str(run), _mtime(checkpoint_file(run)))


@functools.lru_cache(maxsize=2)
def _faces(data: DataChoice, key: tuple[Any, ...]) -> Any:
    return open_faces(data)


def shared_faces(data: DataChoice) -> Any:
    """The FaceSet of a resolved data choice, opened once per data file version in this process."""
    return _faces(data, data.key)


@dataclass
class ReportContext:
    """Everything the sections read; each ``*_reason`` says why the thing next to it is None."""

    run: Path
    config: dict[str, Any]
    rd: RunData
    split: str
    model: LoadedRun | None = None
    model_reason: str | None = None
    faceset: Any = None
    faces_reason: str | None = None
    pred: Predictions | None = None
    pred_reason: str | None = None
    face_index: np.ndarray | None = None   # each prediction's position in ``faceset``
    _rows: list[Any] | None = field(default=None, repr=False)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.model.classes) if self.model is not None else self.rd.classes

    @property
    def synthetic(self) -> bool:
        return self.rd.synthetic

    @property
    def data_label(self) -> str:
        """The data as shown everywhere in the report (SynthFER always marked synthetic)."""
        spec = str(self.config.get("data", "") or "?")
        return f"{spec} (SynthFER: synthetic faces)" if self.synthetic else spec

    def gradient_reason(self) -> str | None:
        """Why no gradient can be taken (no model, or an inference-only one), else None."""
        if self.model is None:
            return self.model_reason
        return self.model.gradient_reason

    def hook_reason(self) -> str | None:
        """Why the model's layers cannot be hooked (Grad-CAM, filters), else None."""
        return self.model_reason if self.model is None else self.model.layer_reason

    def layer_rows(self) -> list[Any]:
        """The model's layer table (computed once per report; ModelUnavailable without a module)."""
        if self._rows is None:
            if self.model is None:
                raise ModelUnavailable(self.model_reason or "no model")
            self._rows = list(self.model.layer_rows())
        return self._rows

    def split_faces(self) -> np.ndarray:
        """The faces behind ``pred`` in its order (N×H×W uint8); DataUnavailable saying why not."""
        if self.pred is None:
            raise DataUnavailable(self.pred_reason or "no predictions")
        if self.faceset is None or self.face_index is None:
            raise DataUnavailable(self.faces_reason or "the faces are not available")
        return self.faceset.x[self.face_index].numpy()

    def faces_source(self) -> str:
        """Where the shown faces come from, in words."""
        if self.synthetic:
            return "SynthFER (synthetic) faces, regenerated from the run's data spec"
        return self.rd.data.note or f"faces from {self.rd.data.spec}"


def gather(run: str | os.PathLike[str] | LoadedRun, *, data: str | None = None, split: str = "test",
           faces: Any = None) -> ReportContext:
    """Load what the report needs for ``run``; nothing here raises for a missing model or data.

    ``data``: the user's copy of the run's data (a file or a folder, as the dashboard's data
    path; ``None`` = ``$FER_DATA``). ``faces``: the run's FaceSet when the caller has it open.
    A :class:`LoadedRun` may be passed for ``run`` (the dashboard's shared one).
    """
    model = run if isinstance(run, LoadedRun) else None
    path = model.run if model is not None else Path(run)
    config = read_config(path)  # a path that is not a run is the caller's error: RunError
    ctx = ReportContext(run=path, config=config, rd=RunData(path, data, config=config), split=split)
    if model is None:
        try:
            model = shared_model(path)
        except ModelUnavailable as exc:
            ctx.model_reason = str(exc)
        except Exception as exc:  # noqa: BLE001 - a broken checkpoint is a reason, not a failed report
            ctx.model_reason = f"the model could not be loaded ({type(exc).__name__}: {exc})"
    ctx.model = model
    if faces is not None:
        ctx.faceset = faces
    elif ctx.rd.data.spec is None:
        ctx.faces_reason = ctx.rd.data.note or "the run names no data"
    else:
        try:
            ctx.faceset = shared_faces(ctx.rd.data)
        except DataUnavailable as exc:
            ctx.faces_reason = str(exc)
    try:
        pred = ctx.rd.stored_predictions(split)
        if pred is None:
            if ctx.faceset is None:
                raise DataUnavailable(f"no stored predictions (eval/{split}.npz) and no faces to compute "
                                      f"them: {ctx.faces_reason}")
            if ctx.model is None:
                raise DataUnavailable(f"no stored predictions (eval/{split}.npz) and no model to compute "
                                      f"them: {ctx.model_reason}")
            pred = ctx.rd.compute_predictions(split, ctx.faceset, model=ctx.model)
        ctx.pred = pred
    except DataUnavailable as exc:
        ctx.pred_reason = str(exc)
    if ctx.pred is not None and ctx.faceset is not None:
        try:
            ctx.face_index = ctx.rd.aligned(ctx.pred, ctx.faceset)
        except DataUnavailable as exc:
            ctx.faces_reason = str(exc)
    return ctx
