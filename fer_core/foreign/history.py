"""Training curves logged elsewhere -> a run's ``metrics.csv``.

Why one reader for many loggers: a model trained elsewhere comes with whatever its framework
logged -- a Keras ``CSVLogger`` file, a Lightning ``CSVLogger`` ``metrics.csv`` (one row per
logging call, mostly empty cells), our own ``metrics.csv``, a Keras ``history.history`` dump, or
TensorBoard event files. :func:`read_history` decides which from the content (a CSV's columns,
JSON, binary event records; a directory's event files or ``metrics.csv``), brings every source to
one row per 1-based epoch with our :data:`~fer_core.runs.METRIC_COLUMNS`, and keeps every column
it does not know as an extra (listed in :attr:`History.extra`, never dropped). TensorBoard files
are read by TensorBoard's own event reader, not by hand.

Column names are mapped by words (:data:`SPLIT_WORDS`, :data:`METRIC_WORDS`, ...; the one table
of names): ``val_accuracy``, ``Accuracy/val``, ``validation/epoch_accuracy`` and ``valAcc`` are
all ``val_acc``; a name with any word outside the table (``val_top3_acc``, ``test_loss``) stays an
extra. When several columns mean the same curve, our own name wins (so no extra can be named
like one of ours), then an epoch-level one, a plain one, a step-level one (Lightning's
``train_loss_epoch`` / ``loss`` / ``train_loss_step``).
"""

from __future__ import annotations

import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fer_core.checkpoint import atomic_write_text
from fer_core.runs import METRIC_COLUMNS

KIND_LABELS = {
    "fer-studio": "a FER Studio metrics.csv",
    "keras-csv": "a Keras CSVLogger file",
    "lightning-csv": "a Lightning CSVLogger metrics.csv",
    "csv": "a CSV file",
    "keras-json": "a Keras history JSON",
    "json": "a JSON list of per-epoch records",
    "tensorboard": "TensorBoard event files",
}

# ---- the column-name table --------------------------------------------------------------------
# A name is split into lower-case words (``/ _ - . space`` and camelCase), phrases are joined
# first, then it is ours when its words are: at most one split word, one metric word, fillers.
PHRASES = {"learning_rate": "lr", "sparse_categorical_accuracy": "acc", "categorical_accuracy": "acc"}
SPLIT_WORDS = {"train": "train", "training": "train", "val": "val", "valid": "val",
               "validation": "val", "eval": "val"}
METRIC_WORDS = {"loss": "loss", "acc": "acc", "accuracy": "acc", "lr": "lr"}
FILLER_WORDS = {"epoch", "mean", "avg"}   # an epoch-level value: preferred
STEP_WORDS = {"step", "batch"}            # a step-level value: used only when nothing else is
EXACT = {"time_s": "time_s"}
EPOCH_NAMES = ("epoch", "epochs")
ACC_COLUMNS = ("train_acc", "val_acc")


def _words(name: str) -> list[str]:
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name)).lower()
    s = "_".join(w for w in re.split(r"[^a-z0-9]+", s) if w)
    for phrase, word in PHRASES.items():
        s = re.sub(rf"(^|_){phrase}(_|$)", rf"\1{word}\2", s)
    return [w for w in s.split("_") if w]


def canonical_column(name: str) -> tuple[str, int] | None:
    """(our column, rank) that a logged name means -- lower rank wins -- or None for an extra.

    >>> canonical_column("val_accuracy"), canonical_column("Loss/train"), canonical_column("top3_acc")
    (('val_acc', 1), ('train_loss', 1), None)
    """
    if name in METRIC_COLUMNS or name in EXACT:
        return (EXACT.get(name, name), -1) if name != "epoch" else None
    words = _words(name)
    splits = {SPLIT_WORDS[w] for w in words if w in SPLIT_WORDS}
    metrics = {METRIC_WORDS[w] for w in words if w in METRIC_WORDS}
    rest = [w for w in words if w not in SPLIT_WORDS and w not in METRIC_WORDS and w not in FILLER_WORDS]
    step = [w for w in rest if w in STEP_WORDS]
    rest = [w for w in rest if w not in STEP_WORDS]
    if len(metrics) != 1 or len(splits) > 1:
        return None
    metric = metrics.pop()
    if metric == "lr":
        if splits == {"val"}:
            return None
        # Lightning's LearningRateMonitor logs "lr-<Optimizer>[/pg<N>]"
        return ("lr", 3) if step else ("lr", 2 if rest else (0 if FILLER_WORDS & set(words) else 1))
    if rest:
        return None
    col = f"{splits.pop() if splits else 'train'}_{metric}"
    return col, 3 if step else (0 if FILLER_WORDS & set(words) else 1)


@dataclass
class History:
    """Per-epoch curves read from another tool's log.

    ``frame``: every :data:`METRIC_COLUMNS` column (NaN where the log has no such curve; ``epoch``
    1-based ints) followed by the ``extra`` columns in the log's order. ``mapping``: our column ->
    the log's name it came from. ``notes``: what was changed on the way (units, numbering).
    """

    frame: pd.DataFrame
    extra: list[str]
    kind: str
    source: str = ""
    notes: list[str] = field(default_factory=list)
    mapping: dict[str, str] = field(default_factory=dict)

    @property
    def epochs(self) -> int:
        return len(self.frame)

    @property
    def label(self) -> str:
        return KIND_LABELS.get(self.kind, self.kind)

    def describe(self) -> str:
        """One line: ``read 30 epochs from a Keras CSVLogger file; kept extra columns: top3_acc``."""
        msg = f"read {self.epochs} epoch{'s' * (self.epochs != 1)} from {self.label}"
        renamed = [f"{src} -> {ours}" for ours, src in self.mapping.items() if src != ours]
        if renamed:
            msg += f"; columns {', '.join(renamed)}"
        return msg + (f"; kept extra columns: {', '.join(self.extra)}" if self.extra else "")

    def to_config(self) -> dict[str, Any]:
        """Where the curves came from, for the run's ``config.json`` (``"history"``)."""
        return {"file": Path(self.source).name, "kind": self.kind, "epochs": self.epochs,
                "mapping": dict(self.mapping), "extra": list(self.extra), "notes": list(self.notes)}


def read_history(path: str | os.PathLike) -> History:
    """Read any supported log (see the module docstring); ``ValueError`` naming the file and the
    problem for a missing, empty, corrupt or unrecognised one."""
    p = Path(path)
    if p.is_dir():
        if any(p.rglob("*tfevents*")):
            return _read_tensorboard(p)
        if (p / "metrics.csv").is_file():  # a Lightning version_N folder or a run directory
            return read_history(p / "metrics.csv")
        raise ValueError(f"{p} is a folder with neither TensorBoard event files (*tfevents*) nor a metrics.csv")
    if not p.is_file():
        raise ValueError(f"{p}: no such file or folder")
    data = p.read_bytes()
    if not data.strip():
        raise ValueError(f"{p} is empty")
    try:
        if b"\0" in data[:4096]:
            raise UnicodeDecodeError("utf-8", data[:1], 0, 1, "NUL byte")
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return _read_tensorboard(p)
    if text.lstrip()[:1] in ("{", "["):
        return _read_json(p, text)
    return _read_csv(p, text)


def _read_csv(p: Path, text: str) -> History:
    try:
        df = pd.read_csv(io.StringIO(text))
    except pd.errors.EmptyDataError:
        raise ValueError(f"{p} is empty") from None
    except pd.errors.ParserError as exc:
        raise ValueError(f"{p} is not a valid CSV file: {str(exc).strip()}") from None
    if df.empty:
        raise ValueError(f"{p} has a header ({', '.join(map(str, df.columns))}) but no rows")
    cols = set(df.columns)
    notes: list[str] = []
    epoch_col = next((c for c in df.columns if str(c).strip().lower() in EPOCH_NAMES), None)
    if set(METRIC_COLUMNS) <= cols:
        kind, shift = "fer-studio", 0
    elif epoch_col is not None and "step" in cols:
        kind, shift = "lightning-csv", 1
        # rows logged outside an epoch (LearningRateMonitor) have no epoch: the next row's epoch
        df[epoch_col] = pd.to_numeric(df[epoch_col], errors="coerce").bfill().ffill()
    elif epoch_col is not None and any(canonical_column(c) for c in df.columns if c != epoch_col):
        kind, shift = "keras-csv", 1
    else:
        kind, shift = "csv", None
    if epoch_col is None:
        if "step" in cols:
            epoch_col = "step"
            notes.append("no epoch column: the step column is taken as the epoch")
        else:
            df.insert(0, "epoch", np.arange(1, len(df) + 1))
            epoch_col, shift = "epoch", 0
            notes.append(f"no epoch column: rows numbered as epochs 1..{len(df)}")
    epoch = _int_epochs(p, df[epoch_col], epoch_col)
    df = df.drop(columns=[epoch_col])
    return _finish(p, df, epoch, kind, notes, shift)


def _read_json(p: Path, text: str) -> History:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p} is not valid JSON: {exc}") from None
    if isinstance(obj, dict) and isinstance(obj.get("history"), dict):
        obj = obj["history"]  # {"history": {...}, "params": {...}} as some tutorials save it
    if isinstance(obj, dict):
        kind = "keras-json"
        bad = [k for k, v in obj.items() if not isinstance(v, list)]
        if bad or not obj:
            raise ValueError(f"{p} is JSON but not a Keras history (a mapping of metric name -> list of "
                             f"per-epoch values){'; not lists: ' + ', '.join(bad) if bad else ''}")
        lengths = {k: len(v) for k, v in obj.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"{p}: the metric lists differ in length ({lengths})")
        df = pd.DataFrame(obj)
    elif isinstance(obj, list) and obj and all(isinstance(r, dict) for r in obj):
        kind, df = "json", pd.DataFrame(obj)
    else:
        raise ValueError(f"{p} is JSON but neither a Keras history (name -> list) nor a list of per-epoch records")
    if df.empty:
        raise ValueError(f"{p} holds no epochs")
    notes: list[str] = []
    epoch_col = next((c for c in df.columns if str(c).strip().lower() in EPOCH_NAMES), None)
    if epoch_col is None:
        epoch, shift = pd.Series(np.arange(1, len(df) + 1)), 0
    else:
        epoch, shift = _int_epochs(p, df[epoch_col], epoch_col), None
        df = df.drop(columns=[epoch_col])
    return _finish(p, df, epoch, kind, notes, shift)


def _int_epochs(p: Path, s: pd.Series, name: str) -> pd.Series:
    e = pd.to_numeric(s, errors="coerce")
    if e.isna().all() or (e.dropna() % 1 != 0).any():
        raise ValueError(f"{p}: column {name!r} does not hold whole epoch numbers")
    return e


def _read_tensorboard(p: Path) -> History:
    """Scalar series of every run under ``p`` (or of one event file) by TensorBoard's reader.

    A run in a sub-folder prefixes its tags (Keras writes ``train/`` and ``validation/`` runs
    with the same ``epoch_loss`` tag; ``add_scalars`` one run per curve). The step is the epoch,
    unless an ``epoch`` tag says which epoch each step belongs to (Lightning).
    """
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.backend.event_processing import event_multiplexer as em
    from tensorboard.util import tensor_util

    guidance = {ea.SCALARS: 0, ea.TENSORS: 0, ea.HISTOGRAMS: 1, ea.IMAGES: 1, ea.AUDIO: 1,
                ea.COMPRESSED_HISTOGRAMS: 1}
    mux = em.EventMultiplexer(size_guidance=guidance)
    if p.is_dir():
        mux.AddRunsFromDirectory(str(p))
    else:
        mux.AddRun(str(p), name=".")
    mux.Reload()
    runs = mux.Runs()
    parts = {r: [] if r in (".", "") else r.replace(os.sep, "/").split("/") for r in runs}
    common = os.path.commonprefix(list(parts.values())) if len(parts) > 1 else next(iter(parts.values()), [])
    series: dict[str, list[tuple[int, float, float]]] = {}
    starts = []
    for run, tags in runs.items():
        prefix = "/".join(parts[run][len(common):])
        name = (lambda t: f"{prefix}/{t}") if prefix else (lambda t: t)
        for tag in tags.get("scalars", []):
            series[name(tag)] = [(e.step, e.wall_time, float(e.value)) for e in mux.Scalars(run, tag)]
        for tag in tags.get("tensors", []):
            if mux.SummaryMetadata(run, tag).plugin_data.plugin_name != "scalars":
                continue
            vals = [(e.step, e.wall_time, tensor_util.make_ndarray(e.tensor_proto)) for e in mux.Tensors(run, tag)]
            series[name(tag)] = [(s, w, float(v)) for s, w, v in vals if np.size(v) == 1]
        try:
            starts.append(mux.FirstEventTimestamp(run))
        except ValueError:  # a run with no readable event
            pass
    series = {k: v for k, v in series.items() if v}
    if not series:
        raise ValueError(f"{p} has no scalar summaries TensorBoard can read (not an event file, empty or corrupt)")
    notes: list[str] = []
    epoch_tag = next((k for k in series if k.split("/")[-1].lower() in EPOCH_NAMES), None)
    long = pd.DataFrame([(k, s, w, v) for k, vals in series.items() if k != epoch_tag for s, w, v in vals],
                        columns=["name", "step", "wall", "value"])
    if long.empty:
        raise ValueError(f"{p} has an epoch tag but no other scalar summaries")
    if epoch_tag is not None:
        ep = pd.DataFrame(series[epoch_tag], columns=["step", "wall", "epoch"]).drop(columns="wall")
        ep = ep.sort_values("step").drop_duplicates("step", keep="last")
        long = pd.merge_asof(long.sort_values("step"), ep, on="step", direction="nearest")
        notes.append(f"epochs taken from the {epoch_tag!r} tag")
    else:
        steplike = sorted({k for k in long["name"] if set(_words(k)) & STEP_WORDS})
        if steplike:
            long = long[~long["name"].isin(steplike)]
            notes.append(f"skipped per-step series {', '.join(steplike)} (no epoch tag says which epoch "
                         "their steps belong to)")
        if long.empty:
            raise ValueError(f"{p} has only per-step scalar series and no epoch tag")
        long["epoch"] = long["step"]
        notes.append("the TensorBoard step is taken as the epoch")
    long = long.sort_values(["step", "wall"], kind="stable")
    order = list(dict.fromkeys(long["name"]))
    wide = long.pivot_table(index="epoch", columns="name", values="value", aggfunc="last")
    wide = wide.reindex(columns=order)
    wide.columns.name = None
    if starts and "time_s" not in wide.columns:
        wide.insert(0, "time_s", long.groupby("epoch")["wall"].max() - min(starts))
    epoch = pd.Series(wide.index.to_numpy())
    return _finish(p, wide.reset_index(drop=True), epoch, "tensorboard", notes, None)


def _finish(p: Path, df: pd.DataFrame, epoch: pd.Series, kind: str, notes: list[str],
            shift: int | None) -> History:
    """Number epochs from 1, one row per epoch (last logged value of each column), map names."""
    epoch = pd.Series(np.asarray(epoch, dtype=float), index=df.index)
    keep = epoch.notna()
    df, epoch = df[keep], epoch[keep].astype(np.int64)
    if shift is None:  # unknown convention: a log that starts at epoch 0 counts from 0
        shift = 1 if len(epoch) and epoch.min() == 0 else 0
        if shift:
            notes.append("epochs counted from 0 in the log: shifted to count from 1")
    df = df.assign(__epoch=(epoch + shift).to_numpy())
    df = df.groupby("__epoch", sort=True).last()  # last non-NaN value of each column per epoch
    if (df.index < 1).any():
        raise ValueError(f"{p}: negative epoch numbers in the log")
    best: dict[str, tuple[int, int, str]] = {}
    for i, c in enumerate(df.columns):
        hit = canonical_column(str(c))
        if hit and (hit[0] not in best or (hit[1], i) < best[hit[0]][:2]):
            best[hit[0]] = (hit[1], i, c)
    mapping = {ours: src for ours, (_, _, src) in sorted(best.items(), key=lambda kv: METRIC_COLUMNS.index(kv[0]))}
    curves = [c for c in ("train_loss", "train_acc", "val_loss", "val_acc") if c in mapping]
    if not curves:
        raise ValueError(f"{p}: no loss or accuracy column recognised (columns: "
                         f"{', '.join(map(str, df.columns))}), so it is not a training history")
    out = pd.DataFrame({"epoch": df.index.to_numpy(dtype=np.int64)})
    for col in METRIC_COLUMNS[1:]:
        if col not in mapping:
            out[col] = np.nan
            continue
        raw = df[mapping[col]]
        vals = pd.to_numeric(raw, errors="coerce")
        if (vals.isna() & raw.notna()).any():
            raise ValueError(f"{p}: column {mapping[col]!r} has non-numeric values "
                             f"(e.g. {raw[vals.isna() & raw.notna()].iloc[0]!r})")
        out[col] = vals.to_numpy(dtype=float)
        if col in ACC_COLUMNS and np.nanmax(np.r_[out[col].to_numpy(), -np.inf]) > 1.5:
            out[col] = out[col] / 100.0
            notes.append(f"{mapping[col]} is in percent: divided by 100")
        if col == "train_loss" and best[col][0] == 3:
            notes.append(f"train_loss is the last step's value of each epoch ({mapping[col]}); "
                         "log it per epoch for epoch means")
    used = set(mapping.values())
    extra = [str(c) for c in df.columns if c not in used]
    for c in extra:
        out[c] = df[c].to_numpy()
    return History(frame=out, extra=extra, kind=kind, source=str(p), notes=notes, mapping=mapping)


def write_history(run_dir: str | os.PathLike, history: History) -> Path:
    """Write the curves as the run's ``metrics.csv`` (atomically; ours first, extras after)."""
    path = Path(run_dir) / "metrics.csv"
    buf = io.StringIO()
    history.frame[list(METRIC_COLUMNS) + list(history.extra)].to_csv(buf, index=False, float_format="%.7g")
    atomic_write_text(path, buf.getvalue())
    return path


def import_history(run_dir: str | os.PathLike, path: str | os.PathLike) -> History:
    """``python -m fer_core history RUN PATH``: replace RUN's ``metrics.csv`` with PATH's curves
    and record where they came from in its ``config.json`` (``"history"``)."""
    from fer_core.runs import is_run_dir, read_config, write_config

    run = Path(run_dir)
    if not is_run_dir(run):
        raise ValueError(f"{run} is not a run directory (no config.json): make the run first "
                         "(`python -m fer_core import` or fer_core.RunLogger)")
    history = read_history(path)
    config = read_config(run)
    write_history(run, history)
    config["history"] = history.to_config()
    write_config(run, config)
    return history
