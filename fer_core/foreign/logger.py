""":class:`RunLogger`: a user's own training loop writes a FER Studio run as it goes.

Why a logger and not an import afterwards: the dashboard shows a run while it trains (its curves
grow, "training…" until it is finished), and a loop that crashes or is killed still leaves a run
that opens. So the run directory and ``config.json`` exist from the first line, each epoch
rewrites ``metrics.csv`` atomically, the model file is written before ``config.json`` names it,
and nothing is ever half-written (:func:`fer_core.checkpoint.atomic_write_bytes`).

    >>> with RunLogger("runs/my-cnn", data="synthetic:n=3000", epochs=10) as log:
    ...     for epoch in range(1, 11):
    ...         ...  # the user's own training
    ...         log.epoch(epoch=epoch, train_loss=tl, train_acc=ta, val_loss=vl, val_acc=va, lr=lr)
    ...     log.save_model(model)            # TorchScript model.pt; the run now has kind "foreign"

A saved run loads with :class:`fer_core.model.LoadedRun` through the ``foreign`` kind
(:mod:`fer_core.foreign.kinds`), like a model imported with ``python -m fer_core import``.
"""

from __future__ import annotations

import io
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch
import torch.nn as nn

from fer_core.checkpoint import atomic_write_bytes, atomic_write_text
from fer_core.labels import EMOTIONS
from fer_core.preprocess import Preprocess
from fer_core.runs import METRIC_COLUMNS, is_run_dir, read_config, read_metrics, write_config

LOGGED_BY = "fer_core.RunLogger"
MODEL_FILE = "model.pt"
NO_MODEL = "(no model saved yet)"
SAVE_HOW = ("torchscript", "state_dict")


def as_preprocess(preprocess: None | dict[str, Any] | Preprocess) -> Preprocess:
    """None -> 48×48 [0,1] pixels; a dict as stored in ``config.json``; or a Preprocess."""
    if preprocess is None:
        return Preprocess(size=48)
    if isinstance(preprocess, Preprocess):
        return preprocess
    if isinstance(preprocess, dict):
        return Preprocess.from_dict(preprocess)
    raise TypeError("preprocess must be None, a dict or a fer_core.preprocess.Preprocess, "
                    f"not {type(preprocess).__name__}")


def _number(name: str, value: Any) -> float:
    if value is None:
        return math.nan
    try:
        return float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError):
        raise ValueError(f"log.epoch: {name} must be a number, got {value!r}") from None


class RunLogger:
    """A run directory written by the user's training loop.

    ``classes``: the model's output classes in its output order (our seven emotions in any order
    or spelling are mapped to FER2013's order, extras such as ``contempt`` dropped, as for
    ``import``). ``preprocess``: how uint8 faces become the model input (default 48×48 [0,1]
    pixels). ``data``: the dataset spec the model was trained on (e.g. ``synthetic:n=3000`` or a
    FER2013 CSV), so pages can evaluate it. ``config``: the user's settings, stored as the run's
    ``train`` section (``val_fraction`` / ``seed`` there describe the data split, as in our runs).
    ``epochs``: the planned number, so the dashboard shows the run as training until then.

    Opening an existing RunLogger run continues it (rows are kept, wall time carries on, the run
    is unfinished again); an ``epoch`` logged again replaces that row and every later one, as after
    resuming from an earlier checkpoint.
    """

    def __init__(self, run_dir: str | os.PathLike, *, classes: Sequence[str] = EMOTIONS,
                 preprocess: None | dict[str, Any] | Preprocess = None, data: str | None = None,
                 config: dict[str, Any] | None = None, epochs: int | None = None) -> None:
        from fer_core.foreign.adapter import class_mapping
        from fer_core.device import versions

        self.run = Path(run_dir)
        self.preprocess = as_preprocess(preprocess)
        self.model_classes = [str(c) for c in classes]
        if not self.model_classes:
            raise ValueError("RunLogger: classes is empty")
        self.classes, self.columns, self.dropped = class_mapping(self.model_classes)
        if is_run_dir(self.run):
            cfg = read_config(self.run)
            if cfg.get("logged_by") != LOGGED_BY:
                raise ValueError(f"{self.run} is an existing run not written by RunLogger: choose a new directory")
            rows = read_metrics(self.run)
        else:
            cfg = {"model": NO_MODEL, "logged_by": LOGGED_BY, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            rows = pd.DataFrame(columns=list(METRIC_COLUMNS))
        spec = str(data) if data is not None else str(cfg.get("data", "") or "")
        train = {**(cfg.get("train") or {}), **(config or {})}
        if epochs is not None:
            train["epochs"] = int(epochs)
        cfg.update(classes=list(self.classes), preprocess=self.preprocess.to_dict(), data=spec,
                   synthetic=spec.startswith("synthetic"), train=train, versions=versions())
        cfg.pop("finished", None)
        self.config = cfg
        self.run.mkdir(parents=True, exist_ok=True)
        write_config(self.run, cfg)
        self.rows: list[dict[str, Any]] = rows.to_dict("records")
        done = [r["time_s"] for r in self.rows if not math.isnan(r["time_s"])]
        self._offset = float(done[-1]) if done else 0.0
        self._t0 = time.monotonic()

    # ---- curves ---------------------------------------------------------------------------------
    def epoch(self, epoch: int | None = None, *, train_loss: Any = None, train_acc: Any = None,
              val_loss: Any = None, val_acc: Any = None, lr: Any = None, time_s: Any = None,
              **extra: Any) -> dict[str, Any]:
        """Append one epoch's row (missing values NaN) and rewrite ``metrics.csv`` atomically.

        ``epoch`` defaults to the next one (1-based); ``time_s`` to the wall seconds since the
        logger started (plus the time already logged when continuing a run). Extra keyword
        values (``top3_acc=...``) become extra columns. Returns the row.
        """
        n = int(epoch) if epoch is not None else (int(self.rows[-1]["epoch"]) + 1 if self.rows else 1)
        if n < 1:
            raise ValueError(f"log.epoch: epochs count from 1, got {n}")
        if "epoch" in extra:
            raise ValueError("log.epoch: 'epoch' is given twice")
        t = self._offset + time.monotonic() - self._t0 if time_s is None else _number("time_s", time_s)
        row: dict[str, Any] = {"epoch": n, "time_s": t, "lr": _number("lr", lr),
                               "train_loss": _number("train_loss", train_loss),
                               "train_acc": _number("train_acc", train_acc),
                               "val_loss": _number("val_loss", val_loss), "val_acc": _number("val_acc", val_acc)}
        row.update({str(k): _number(k, v) for k, v in extra.items()})
        self.rows = [r for r in self.rows if int(r["epoch"]) < n] + [row]
        self._write_metrics()
        return row

    def _write_metrics(self) -> None:
        df = pd.DataFrame(self.rows)
        extras = [c for c in df.columns if c not in METRIC_COLUMNS]
        buf = io.StringIO()
        df[list(METRIC_COLUMNS) + extras].to_csv(buf, index=False, float_format="%.7g")
        atomic_write_text(self.run / "metrics.csv", buf.getvalue())

    # ---- the model ------------------------------------------------------------------------------
    def save_model(self, model: nn.Module, example_input: torch.Tensor | None = None, how: str = "torchscript",
                   code: str | None = None, kwargs: dict[str, Any] | None = None, output: str = "logits") -> Path:
        """Write ``<run>/model.pt`` atomically, then mark the run ``kind: "foreign"`` in ``config.json``.

        ``how="torchscript"``: ``torch.jit.script(model)``, or ``torch.jit.trace(model,
        example_input)`` where scripting fails (then the saved module is checked against the
        model on that input). ``how="state_dict"``: the weights only; ``code="FILE.py:ClassName"``
        (copied into the run) and ``kwargs`` rebuild the network when the run is opened, which
        runs that file (``trust_code`` is recorded as true). ``example_input``: one model input
        batch (N×C×S×S; default zeros with 1, else 3, channels at the preprocess size) to find the
        channel count and check the output width against the classes. ``output``: ``"logits"``,
        or ``"probs"`` for a network ending in a softmax.
        """
        if how not in SAVE_HOW:
            raise ValueError(f"how must be one of {', '.join(SAVE_HOW)}, not {how!r}")
        if output not in ("logits", "probs"):
            raise ValueError(f"output must be logits or probs, not {output!r}")
        if how == "state_dict" and not code:
            raise ValueError("how='state_dict' needs code='FILE.py:ClassName' (the network's class) to load it")
        if code:
            code = self._copy_code(code)
        was_training = model.training
        model.eval()
        try:
            x, out = self._example(model, example_input)
            if out.shape[1] != len(self.model_classes):
                raise ValueError(f"the model outputs {out.shape[1]} values per face but {len(self.model_classes)} "
                                 f"classes were given ({', '.join(self.model_classes)})")
            path = self.run / MODEL_FILE
            if how == "torchscript":
                scripted = self._script(model, x)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)
                    atomic_write_bytes(path, lambda f: torch.jit.save(scripted, f))
            else:
                state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
                atomic_write_bytes(path, lambda f: torch.save(state, f))
        finally:
            model.train(was_training)
        self.config.update(kind="foreign", model=type(model).__name__, preprocess=self.preprocess.to_dict(),
                           classes=list(self.classes))
        self.config["foreign"] = {
            "format": how, "file": MODEL_FILE, "source": f"RunLogger.save_model ({type(model).__name__})",
            "input": {"channels": int(x.shape[1]), "size": int(self.preprocess.size), "layout": "nchw"},
            "output": output, "model_classes": list(self.model_classes), "columns": self.columns,
            "dropped_classes": list(self.dropped), "code": code, "kwargs": kwargs, "trust_code": bool(code)}
        write_config(self.run, self.config)
        return path

    def _example(self, model: nn.Module, example_input: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(model input, its output N×K): the given input, else zeros with 1 then 3 channels."""
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        s = int(self.preprocess.size)
        tries = [example_input] if example_input is not None else [torch.zeros(2, c, s, s) for c in (1, 3)]
        error: Exception | None = None
        for x in tries:
            try:
                with torch.no_grad():
                    out = model(x.to(device))
            except Exception as exc:  # noqa: BLE001 - the user's model rejects this input: try the next
                error = exc
                continue
            if isinstance(out, (tuple, list)):
                out = out[0]
            return x.to(device), torch.as_tensor(out).reshape(len(x), -1)
        what = "example_input" if example_input is not None else f"1×{s}×{s} or 3×{s}×{s} inputs"
        raise ValueError(f"the model does not run on {what} ({type(error).__name__}: {error}); "
                         "pass example_input= (one input batch)")

    @staticmethod
    def _script(model: nn.Module, x: torch.Tensor) -> torch.jit.ScriptModule:
        try:
            with warnings.catch_warnings():  # TorchScript is the format the foreign loader reads
                warnings.simplefilter("ignore", FutureWarning)
                return torch.jit.script(model)
        except Exception as script_error:  # noqa: BLE001 - not scriptable (Python features): trace instead
            try:
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    traced = torch.jit.trace(model, x)
            except Exception as exc:  # noqa: BLE001
                raise ValueError(f"the model can be neither scripted ({script_error}) nor traced ({exc}); "
                                 "save it with how='state_dict' and code='FILE.py:ClassName'") from None
            with torch.no_grad():
                a, b = model(x), traced(x)
            a, b = (a[0], b[0]) if isinstance(a, (tuple, list)) else (a, b)
            if not torch.allclose(a, b, atol=1e-4, rtol=1e-4):
                raise ValueError("the traced model differs from the model on example_input (data-dependent "
                                 "control flow?); save it with how='state_dict' and code='FILE.py:ClassName'")
            return traced

    def _copy_code(self, code: str) -> str:
        """``FILE.py:ClassName`` -> the file copied into the run, named relative to it."""
        if ":" not in code:
            raise ValueError(f"code expects FILE.py:ClassName, got {code!r}")
        file, cls = code.rsplit(":", 1)
        src = Path(file)
        if not src.is_file():
            raise ValueError(f"code file {file} does not exist")
        dst = self.run / src.name
        if src.resolve() != dst.resolve():
            data = src.read_bytes()
            atomic_write_bytes(dst, lambda f: f.write(data))
        return f"{src.name}:{cls}"

    # ---- end ------------------------------------------------------------------------------------
    def finish(self) -> None:
        """Mark the run finished (the dashboard stops showing it as training)."""
        self.config["finished"] = True
        write_config(self.run, self.config)

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is None:
            self.finish()
        return False  # an exception leaves the run unfinished (resumable) and propagates

    def __repr__(self) -> str:
        return f"RunLogger({str(self.run)!r}, epochs={len(self.rows)})"
