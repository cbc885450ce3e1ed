"""A run's data on this machine: where its faces are, its predictions per split, and their alignment.

Why here and not in the dashboard: the same rules serve the CLI (``evaluate`` without ``--data``),
the report and every page, and they are unit-tested without Streamlit. The rules:

* **Where the faces are** (:func:`resolve_data`): SynthFER specs regenerate anywhere. A file spec
  is tried as written (absolute, or relative to the working directory or the project). Shipped
  runs store a *portable* reference -- the file's name plus what it is (``data_ref``), never a
  path of the machine that trained them -- so the user's copy is found through the sidebar's data
  path or ``FER_DATA`` (a file, or a folder holding the file by name). When nothing is found, the
  note says which file is needed and where to put its path.
* **Predictions** (:meth:`RunData.predictions`): ``eval/<split>.npz`` when present, otherwise
  computed once by :func:`fer_core.evaluate.evaluate_run` and saved back (in memory when the run
  folder is read-only).
* **Alignment** (:meth:`RunData.aligned`): stored predictions point at faces by ``index``; when the
  data is another copy or layout of the same set, faces are matched by dataset row id. Labels
  must agree either way, so a different data set is refused rather than shown as wrong faces.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fer_core.labels import EMOTIONS
from fer_core.runs import PROJECT_ROOT, RunError, eval_path, read_config, read_predictions

DATA_ENV = "FER_DATA"
SPLITS = ("test", "val", "train")


class DataUnavailable(RuntimeError):
    """The faces (or predictions) of a run cannot be produced on this machine; message says why."""


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime_ns / 1e9
    except OSError:
        return 0.0


def data_stamp(spec: str) -> float:
    """A version stamp of a data spec's files (0 for SynthFER, which is generated)."""
    if spec.startswith("synthetic"):
        return 0.0
    p = Path(spec.split(":split=")[0])
    if p.is_dir():
        return max([_mtime(p)] + [_mtime(c) for c in p.iterdir()])
    return _mtime(p)


@dataclass(frozen=True)
class DataChoice:
    """Where a run's faces come from on this machine: a spec to open, or why there is none."""

    spec: str | None
    synthetic: bool
    val_fraction: float
    seed: int
    note: str | None = None      # e.g. "using your copy at …" or why the data is missing
    ferplus: str | None = None   # the run's FER+ votes file, when it is on this machine

    @property
    def key(self) -> tuple[Any, ...]:
        """Identity of the faces this choice opens (includes the files' version)."""
        return (self.spec, self.val_fraction, self.seed, self.ferplus,
                data_stamp(self.spec) if self.spec else 0.0)


def data_ref(spec: str) -> dict[str, str]:
    """The portable reference stored with a run: the data file's name (no machine's path)."""
    name = spec.split(":split=")[0]
    return {} if name.startswith("synthetic") else {"file": Path(name).name}


def portable_spec(spec: str) -> str:
    """A spec with any directory part removed (for shipped runs): ``/a/b/x.npz:split=1`` -> ``x.npz:split=1``."""
    from fer_core.data.spec import parse_spec

    name, _ = parse_spec(spec)
    if name == "synthetic":
        return spec
    return Path(name).name + spec[len(name):]


def _in_folder(folder: Path, names: list[str]) -> Path | None:
    for n in names:
        if n and (folder / n).exists():
            return folder / n
    return None


def resolve_data(config: dict[str, Any], user_path: str | None = None) -> DataChoice:
    """The run's data spec if it can be opened here, else the user's copy, else a reason.

    ``user_path`` is the sidebar's field; ``None`` means "use ``$FER_DATA``". A folder is searched
    for the run's data file by name (then ``fer2013.csv``). Any ``:split=`` option is kept.
    """
    from fer_core.data.spec import parse_spec
    from fer_core.runs import split_seed_of

    spec = str(config.get("data", "") or "")
    train = config.get("train", {}) or {}
    vf, seed = float(train.get("val_fraction", 0.1)), split_seed_of(train, config.get("seed", 0))
    fp = train.get("ferplus")
    ferplus = str(Path(fp).expanduser()) if fp and Path(fp).expanduser().is_file() else None
    if not spec:
        return DataChoice(None, False, vf, seed, "the run's config.json names no data spec")
    try:
        name, _ = parse_spec(spec)
    except ValueError as exc:
        return DataChoice(None, False, vf, seed, f"the run's data spec {spec!r} is invalid: {exc}")
    if name == "synthetic":
        return DataChoice(spec, True, vf, seed)
    tail = spec[len(name):]  # ":split=..." or ""
    for cand in (Path(name).expanduser(), PROJECT_ROOT / name):
        if cand.exists():
            return DataChoice(str(cand) + tail, False, vf, seed, ferplus=ferplus)
    wanted = (config.get("data_ref") or {}).get("file") or Path(name).name
    user = (os.environ.get(DATA_ENV, "") if user_path is None else user_path).strip()
    if user:
        up = Path(user).expanduser()
        found = _in_folder(up, [wanted, "fer2013.csv"]) if up.is_dir() else (up if up.exists() else None)
        if found is not None:
            return DataChoice(str(found) + tail, False, vf, seed,
                              f"the run was trained on {wanted}; using your copy at {found} "
                              "(faces matched by dataset row id)", ferplus=ferplus)
        return DataChoice(None, False, vf, seed,
                          f"the run's data file {wanted} is not on this machine, and the data path "
                          f"you gave ({user}) "
                          + ("has no such file either" if up.is_dir() else "does not exist either"))
    return DataChoice(None, False, vf, seed,
                      f"the run was trained on {wanted}, which is not on this machine. Put the path "
                      f"of your copy ({wanted}, or the original fer2013.csv: same row ids) in the "
                      "sidebar field “FER2013 data path” or in the FER_DATA environment variable "
                      "(`python -m fer_core evaluate` takes `--data PATH`)")


@dataclass(frozen=True)
class FaceBatch:
    """uint8 faces (N×H×W) with a content key, so caches need no key strings from their callers."""

    x: np.ndarray
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", "px:" + hashlib.sha1(np.ascontiguousarray(self.x).tobytes()).hexdigest())

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class Predictions:
    """Per-face predictions of a run on one split (position = order of the split).

    ``index`` = position in the run's FaceSet, ``row`` = dataset row id (the join key with the
    user's file and FER+), ``metrics`` as :func:`fer_core.evaluate.compute_metrics` returns them.
    """

    split: str
    index: np.ndarray
    row: np.ndarray
    label: np.ndarray
    probs: np.ndarray
    pred: np.ndarray
    metrics: dict[str, Any]
    source: str
    ferplus_votes: np.ndarray | None = None
    key: str = field(default="", compare=False)

    @property
    def cm(self) -> np.ndarray:
        return np.asarray(self.metrics["confusion"], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.label)

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], classes: tuple[str, ...], split: str, source: str,
                    key: str = "") -> "Predictions":
        from fer_core.evaluate import compute_metrics

        probs = np.asarray(arrays["probs"], dtype=np.float32)
        label = np.asarray(arrays["label"]).astype(np.int64)
        pred = np.asarray(arrays["pred"]).astype(np.int64) if "pred" in arrays else probs.argmax(1).astype(np.int64)
        index = np.asarray(arrays["index"]).astype(np.int64)
        row = np.asarray(arrays["row"]).astype(np.int64) if "row" in arrays else index
        votes = arrays.get("ferplus_votes")
        return cls(split=split, index=index, row=row, label=label, probs=probs, pred=pred,
                   metrics=compute_metrics(label, probs, classes), source=source,
                   ferplus_votes=None if votes is None else np.asarray(votes), key=key)


def align_faces(pred: Predictions, faces: Any, spec: str) -> np.ndarray:
    """Each prediction's position in ``faces`` (a FaceSet), or DataUnavailable saying why not."""
    from fer_core.gallery import align_rows

    idx = pred.index
    y = faces.y.numpy()
    if len(idx) == 0 or (idx.min() >= 0 and idx.max() < len(faces) and np.array_equal(faces.row[idx], pred.row)
                         and np.array_equal(y[idx], pred.label)):
        return idx
    pos = align_rows(pred.row, faces.row)
    if pos is None:
        raise DataUnavailable(f"the data at {spec} does not contain the rows this run was evaluated on, "
                              "so it is not the same data")
    bad = int((y[pos] != pred.label).sum())
    if bad:
        raise DataUnavailable(f"the data at {spec} does not match the stored predictions ({bad} of {len(pos)} "
                              "labels differ), so its faces would be the wrong ones")
    return pos


def open_faces(data: DataChoice) -> Any:
    """The FaceSet of a resolved data choice; DataUnavailable with the reason when it can't be opened."""
    from fer_core.data.spec import open_dataset

    if data.spec is None:
        raise DataUnavailable(data.note or "no data")
    try:
        return open_dataset(data.spec, val_fraction=data.val_fraction, seed=data.seed, ferplus=data.ferplus)
    except (ValueError, OSError) as exc:  # DataError is a ValueError with file/line in its text
        raise DataUnavailable(f"could not open {data.spec}: {exc}") from None


def mean_face(faces: Any) -> np.ndarray:
    """Mean training face in [0,1] pixels (all faces when there is no train split): the "mean"
    baseline of Integrated Gradients and Occlusion."""
    import torch

    x = faces.x[torch.from_numpy(np.flatnonzero(faces.split == "train"))] if "train" in faces.splits else faces.x
    return (x.float().mean(0) / 255.0).numpy()


class RunData:
    """The data side of one run on this machine (no model is loaded until predictions must be computed)."""

    def __init__(self, run: str | os.PathLike[str], user_path: str | None = None,
                 config: dict[str, Any] | None = None) -> None:
        self.run = Path(run)
        self.user_path = user_path
        self.config = config if config is not None else read_config(self.run)
        self.classes: tuple[str, ...] = tuple(self.config.get("classes") or EMOTIONS)
        self.data = resolve_data(self.config, user_path)

    @property
    def synthetic(self) -> bool:
        return self.data.synthetic or str(self.config.get("data", "")).startswith("synthetic")

    def available_splits(self) -> list[str]:
        """Splits the run knows of (its data summary or stored predictions), test first."""
        present = set((self.config.get("data_summary") or {}).keys())
        present |= {s for s in SPLITS if eval_path(self.run, s, ".npz").exists()}
        return [s for s in SPLITS if s in present] or ["test"]

    def stored_key(self, split: str) -> str:
        p = eval_path(self.run, split, ".npz")
        return f"{self.run.resolve()}|{split}|{_mtime(p)}"

    def stored_predictions(self, split: str) -> Predictions | None:
        """``eval/<split>.npz`` as Predictions, or None when absent; DataUnavailable when unreadable."""
        p = eval_path(self.run, split, ".npz")
        try:
            arrays = read_predictions(self.run, split)
        except (OSError, ValueError, KeyError) as exc:
            raise DataUnavailable(f"{p} is unreadable ({exc}); delete it to recompute") from None
        if arrays is None:
            return None
        return Predictions.from_arrays(arrays, self.classes, split, f"stored eval/{split}.npz", self.stored_key(split))

    def compute_predictions(self, split: str, faces: Any, model: Any = None) -> Predictions:
        """Evaluate the run's model on ``split`` of ``faces`` and save eval/<split>.* (or keep
        them in memory when the run folder is read-only)."""
        from fer_core.evaluate import evaluate_run

        if not self.data.spec:
            raise DataUnavailable(f"no stored predictions for the {split} split, and they cannot be computed: "
                                  f"{self.data.note}")
        own = str(self.config.get("data", ""))
        try:
            try:
                evaluate_run(self.run, data=None if self.data.spec == own else self.data.spec, split=split,
                             faces=faces, write=True, model=model)
                stored = self.stored_predictions(split)
                if stored is not None:
                    return replace(stored, source=f"computed now, saved to eval/{split}.npz")
            except OSError:
                pass  # a read-only run folder: predict in memory instead
            part_idx = np.flatnonzero(faces.split == split)
            if len(part_idx) == 0:
                raise DataUnavailable(f"{self.data.spec} has no {split!r} split")
            if model is None:
                from fer_core.model import LoadedRun

                model = LoadedRun(self.run)
            probs = model.probs(faces.x[part_idx].numpy())
            arrays = {"index": part_idx, "row": faces.row[part_idx], "label": faces.y[part_idx].numpy(),
                      "probs": probs}
            if faces.ferplus_votes is not None:
                arrays["ferplus_votes"] = faces.ferplus_votes[part_idx]
            return Predictions.from_arrays(arrays, self.classes, split,
                                           "computed now (in memory; the run folder is read-only)",
                                           f"mem|{self.run.resolve()}|{split}|{self.data.key}")
        except DataUnavailable:
            raise
        except (RunError, ValueError, RuntimeError) as exc:
            raise DataUnavailable(f"could not compute predictions: {exc}") from None

    def aligned(self, pred: Predictions, faces: Any) -> np.ndarray:
        """Positions of ``pred``'s faces in ``faces`` (see :func:`align_faces`)."""
        return align_faces(pred, faces, str(self.data.spec))

    def reevaluate(self, split: str, faces: Any, model: Any = None) -> None:
        """Evaluate again on this machine's data and overwrite eval/<split>.{json,npz} (for stored
        predictions that no longer match the faces)."""
        from fer_core.evaluate import evaluate_run

        own = str(self.config.get("data", ""))
        try:
            evaluate_run(self.run, data=None if self.data.spec == own else self.data.spec, split=split,
                         faces=faces, write=True, model=model)
        except (RunError, ValueError, OSError, RuntimeError) as exc:
            raise DataUnavailable(f"could not re-evaluate {self.run.name}: {exc}") from None
