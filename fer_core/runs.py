"""The run directory format, and the only code that reads or lays it out.

```
<run>/config.json        everything needed to rebuild: model + kwargs, data spec, preprocess,
                         class names, train config, seed, versions
<run>/metrics.csv        one row per epoch: epoch,time_s,lr,train_loss,train_acc,val_loss,val_acc
<run>/best.pt, last.pt   checkpoints (fer_core.checkpoint); an exported/shipped run may have best.pt only
<run>/eval/<split>.json  accuracy, per-class precision/recall/F1, confusion matrix
<run>/eval/<split>.npz   per-image index, row, label, probs, pred (a recomputable cache)
```
Roots: ``checkpoints/`` (shipped with the project), ``runs/`` (the user's, git-ignored), and any
folders in ``FER_RUNS`` (``os.pathsep``-separated). Readers never raise for a broken run while
listing: a :class:`RunInfo` carries an ``error`` string instead, so one bad run cannot take a page
down.
"""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from fer_core.checkpoint import CheckpointError, atomic_write_text, load_checkpoint
from fer_core.preprocess import Preprocess

PROJECT_ROOT = Path(__file__).resolve().parent.parent
METRIC_COLUMNS = ("epoch", "time_s", "lr", "train_loss", "train_acc", "val_loss", "val_acc")
RUNNING_WINDOW_S = 600.0  # a run whose metrics.csv changed this recently and is unfinished is "running"


class RunError(RuntimeError):
    """A run directory that is missing or malformed; the message says which file and why."""


def run_roots() -> list[Path]:
    """Shipped ``checkpoints/``, the user's ``runs/`` (project and cwd), and ``FER_RUNS`` entries."""
    roots = [PROJECT_ROOT / "checkpoints", PROJECT_ROOT / "runs", Path.cwd() / "runs"]
    roots += [Path(p) for p in os.environ.get("FER_RUNS", "").split(os.pathsep) if p.strip()]
    out: list[Path] = []
    for r in roots:
        r = r.resolve()
        if r not in out:
            out.append(r)
    return out


@dataclass
class RunInfo:
    path: Path
    name: str
    config: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    epochs_done: int = 0
    running: bool = False
    modified: float = 0.0     # when the run last changed (newest metrics.csv / config.json write)
    has_model: bool = True    # False for a RunLogger run whose loop has not saved a model yet (curves only)

    @property
    def label(self) -> str:
        return f"{self.path.parent.name}/{self.name}"

    @property
    def synthetic(self) -> bool:
        return str(self.config.get("data", "")).startswith("synthetic")


def is_run_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def list_runs(roots: list[Path] | None = None) -> list[RunInfo]:
    """Every run under the roots (a root itself may be a run), each with ``error`` set if broken."""
    found: list[RunInfo] = []
    for root in roots if roots is not None else run_roots():
        if not root.is_dir():
            continue
        candidates = [root] if is_run_dir(root) else sorted(p for p in root.iterdir() if p.is_dir())
        for p in candidates:
            if is_run_dir(p) or (p / "metrics.csv").exists() or list(p.glob("*.pt")):
                found.append(inspect_run(p))
    return found


def inspect_run(path: str | os.PathLike) -> RunInfo:
    """Cheap metadata for one run (no checkpoint is loaded)."""
    path = Path(path)
    info = RunInfo(path=path, name=path.name)
    try:
        info.config = read_config(path)
        metrics = read_metrics(path)
        info.epochs_done = int(metrics["epoch"].max()) if len(metrics) else 0
        target = int(info.config.get("train", {}).get("epochs", 0) or 0)
        mtime = (path / "metrics.csv").stat().st_mtime if (path / "metrics.csv").exists() else 0
        info.modified = max(mtime, (path / "config.json").stat().st_mtime)
        info.running = (info.epochs_done < target and not info.config.get("finished")
                        and time.time() - mtime < RUNNING_WINDOW_S)
        if not checkpoint_file(path, config=info.config).exists() and info.config.get("logged_by"):
            info.has_model = False  # a user's loop logging curves; its model comes with save_model()
        elif not checkpoint_file(path, config=info.config).exists():
            info.error = ("no checkpoint (best.pt / last.pt) in this run"
                          if info.config.get("kind", "registry") == "registry" else
                          "its model file is missing")
    except RunError as exc:
        info.error = str(exc)
    return info


def read_config(run: str | os.PathLike) -> dict[str, Any]:
    p = Path(run) / "config.json"
    if not p.is_file():
        raise RunError(f"{p} is missing: not a run directory")
    try:
        cfg = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{p} is not valid JSON: {exc}") from None
    if not isinstance(cfg, dict) or "model" not in cfg:
        raise RunError(f"{p} has no 'model' entry")
    return cfg


def write_config(run: str | os.PathLike, config: dict[str, Any]) -> None:
    atomic_write_text(Path(run) / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")


def read_metrics(run: str | os.PathLike) -> pd.DataFrame:
    """metrics.csv as a DataFrame (empty, with the right columns, before the first epoch)."""
    p = Path(run) / "metrics.csv"
    if not p.exists():
        return pd.DataFrame(columns=list(METRIC_COLUMNS))
    try:
        df = pd.read_csv(p)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=list(METRIC_COLUMNS))
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise RunError(f"{p} is corrupt: {exc}") from None
    missing = [c for c in METRIC_COLUMNS if c not in df.columns]
    if missing:
        raise RunError(f"{p} is corrupt: missing column(s) {', '.join(missing)}")
    try:
        df = df.astype({c: float for c in METRIC_COLUMNS if c != "epoch"}).astype({"epoch": int})
    except (ValueError, TypeError) as exc:
        raise RunError(f"{p} is corrupt: non-numeric value ({exc})") from None
    return df


def eval_path(run: str | os.PathLike, split: str, suffix: str = ".json", tta: str = "none") -> Path:
    name = split if tta == "none" else f"{split}-tta_{tta}"
    return Path(run) / "eval" / f"{name}{suffix}"


def read_eval(run: str | os.PathLike, split: str, tta: str = "none") -> dict[str, Any] | None:
    """Stored evaluation metrics of a split, or None when the run has not been evaluated on it."""
    p = eval_path(run, split, ".json", tta)
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise RunError(f"{p} is not valid JSON: {exc}") from None


def read_predictions(run: str | os.PathLike, split: str, tta: str = "none") -> dict[str, np.ndarray] | None:
    p = eval_path(run, split, ".npz", tta)
    if not p.is_file():
        return None
    with np.load(p, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def checkpoint_file(run: str | os.PathLike, which: str = "best", config: dict[str, Any] | None = None) -> Path:
    """The file the run's model is loaded from (its version keys the caches).

    Our runs: ``best.pt`` / ``last.pt``. Imported runs (``kind: foreign``): the model file named in
    ``config.json``; predictions-only runs: ``config.json`` itself (they have no model).
    """
    run = Path(run)
    if config is None:
        try:
            config = read_config(run)
        except RunError:
            config = {}
    kind = config.get("kind", "registry")
    if kind == "foreign":
        return run / str((config.get("foreign") or {}).get("file", "model"))
    if kind in ("predictions", "ensemble"):
        return run / "config.json"
    p = run / f"{which}.pt"
    if not p.exists() and which == "best" and (run / "last.pt").exists():
        p = run / "last.pt"  # a run killed before its first best.pt still has a model
    return p


def new_run_dir(root: str | os.PathLike = "runs", name: str | None = None) -> Path:
    """A fresh, not yet existing run directory ``root/<name or timestamp>``."""
    root = Path(root)
    base = name or time.strftime("%Y%m%d-%H%M%S")
    path, k = root / base, 1
    while path.exists():
        k += 1
        path = root / f"{base}-{k}"
    path.mkdir(parents=True)
    return path


def export_run(src: str | os.PathLike, dst: str | os.PathLike, *, half: bool = True) -> Path:
    """Copy a finished run into a compact, shippable run: config, metrics and ``best.pt`` only.

    Floating-point weights are stored as fp16 when ``half`` (they are cast back to fp32 on load);
    the optimizer state and ``last.pt`` are dropped (an exported run is for inspection, not for
    resuming). Evaluate the exported run afterwards so its ``eval/`` figures describe exactly the
    weights that ship. The data spec is stored without its directory (``data_ref`` names the
    file), so no absolute path of the training machine ships.
    """
    from fer_core.checkpoint import save_checkpoint

    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    from fer_core.rundata import data_ref, portable_spec

    config = read_config(src)
    config["exported"] = {"from": src.name, "dtype": "float16" if half else "float32"}
    # no path of the training machine ships: the data is found on the user's machine by file name
    spec = str(config.get("data", ""))
    if spec:
        config["data_ref"] = data_ref(spec)
        config["data"] = portable_spec(spec)
        if isinstance(config.get("train"), dict):
            config["train"]["data"] = config["data"]
    # a distilled student names its teacher by run name only, like its data
    if isinstance(config.get("train"), dict) and config["train"].get("teacher"):
        config["train"]["teacher"] = Path(str(config["train"]["teacher"])).name
    if isinstance(config.get("teacher"), dict) and config["teacher"].get("path"):
        config["teacher"]["path"] = Path(str(config["teacher"]["path"])).name
    ck = load_checkpoint(checkpoint_file(src, "best"))
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in ck["state_dict"].items()}
    keep = {k: ck[k] for k in ("epoch", "best_val_acc", "best_epoch", "val_acc", "elapsed_s") if k in ck}
    save_checkpoint(dst / "best.pt", {"state_dict": state, "config": config, **keep})
    write_config(dst, config)
    atomic_write_text(dst / "metrics.csv", (src / "metrics.csv").read_text())
    return dst


def split_seed_of(train_cfg: dict[str, Any], default: int = 0) -> int:
    """The seed that drew a run's train/val slice (``split_seed``, else the run's ``seed``)."""
    v = train_cfg.get("split_seed")
    return int(v) if v is not None else int(train_cfg.get("seed", default))


def append_metrics(run_dir: Path, row: dict[str, float]) -> None:
    """Rewrite metrics.csv atomically with one more row (a kill never leaves a torn line)."""
    p = run_dir / "metrics.csv"
    text = p.read_text() if p.exists() else ",".join(METRIC_COLUMNS) + "\n"
    line = ",".join(str(int(row[c])) if c == "epoch" else f"{row[c]:.6g}" for c in METRIC_COLUMNS)
    atomic_write_text(p, text + line + "\n")


def truncate_metrics(run_dir: Path, last_epoch: int) -> None:
    """Drop rows after the checkpointed epoch: they will be recomputed identically on resume."""
    df = read_metrics(run_dir)
    keep = df[df["epoch"] <= last_epoch]
    buf = io.StringIO()
    keep.to_csv(buf, index=False, float_format="%.6g")
    atomic_write_text(run_dir / "metrics.csv", buf.getvalue())
