"""FaceSet: the one in-memory form every data source is converted to.

Why one container: the trainer, the evaluator, the dashboard's error gallery and the predictor all
need the same four facts per face (pixels, label, split, the row it came from in the user's file),
so every reader behind :func:`fer_core.data.spec.open_dataset` produces exactly this and nothing
downstream knows which file format it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from fer_core.labels import EMOTIONS

SPLITS: tuple[str, ...] = ("train", "val", "test")
UNLABELED = -1

# FER2013's ``Usage`` column (and the folder/file names of its other layouts) -> our split names.
USAGE_ALIASES = {
    "training": "train", "train": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "publictest": "PublicTest", "privatetest": "PrivateTest",
}


@dataclass
class FaceSet:
    """Faces as a uint8 tensor ``N x 48 x 48`` plus per-face label, split and source row id.

    ``y`` is ``-1`` for unlabeled faces (e.g. torchvision's ``test.csv``). ``row`` is the index of
    the face in the user's original file (the join key for FER+ votes and for showing the user
    which line of *their* file a face came from).
    """

    x: torch.Tensor
    y: torch.Tensor
    split: np.ndarray
    row: np.ndarray
    source: str = ""
    synthetic: bool = False
    ferplus_votes: np.ndarray | None = None
    classes: tuple[str, ...] = field(default=EMOTIONS)

    def __post_init__(self) -> None:
        n = len(self.x)
        if self.x.dtype != torch.uint8 or self.x.ndim != 3:
            raise ValueError(f"FaceSet.x must be uint8 N×H×W, got {self.x.dtype} {tuple(self.x.shape)}")
        for name, arr in (("y", self.y), ("split", self.split), ("row", self.row)):
            if len(arr) != n:
                raise ValueError(f"FaceSet.{name} has {len(arr)} entries for {n} faces")
        if self.ferplus_votes is not None and len(self.ferplus_votes) != n:
            raise ValueError("FaceSet.ferplus_votes length does not match the faces")
        bad = set(np.unique(self.split)) - set(SPLITS)
        if bad:
            raise ValueError(f"unknown split names {sorted(bad)}; expected {SPLITS}")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def splits(self) -> list[str]:
        """Split names present, in canonical order."""
        present = set(np.unique(self.split).tolist())
        return [s for s in SPLITS if s in present]

    @property
    def labeled(self) -> bool:
        return bool(len(self.y)) and bool((self.y >= 0).all())

    def subset(self, index: np.ndarray | torch.Tensor | list[int]) -> "FaceSet":
        idx = np.asarray(index, dtype=np.int64)
        t = torch.from_numpy(idx)
        return replace(
            self, x=self.x[t], y=self.y[t], split=self.split[idx], row=self.row[idx],
            ferplus_votes=None if self.ferplus_votes is None else self.ferplus_votes[idx],
        )

    def select(self, split: str) -> "FaceSet":
        """The faces of one split; a clear error names the splits that do exist."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        idx = np.flatnonzero(self.split == split)
        if len(idx) == 0:
            raise ValueError(
                f"data source {self.source or '(in memory)'} has no {split!r} split; "
                f"it has: {', '.join(self.splits) or 'no faces'}")
        return self.subset(idx)

    def class_counts(self) -> dict[str, int]:
        counts = torch.bincount(self.y[self.y >= 0], minlength=len(self.classes)).tolist()
        return dict(zip(self.classes, counts))

    def describe(self) -> str:
        kind = "SynthFER (synthetic faces)" if self.synthetic else (self.source or "in-memory faces")
        parts = [f"{s}={int((self.split == s).sum())}" for s in self.splits]
        return f"{kind}: {len(self)} faces ({', '.join(parts)})"


def stratified_holdout(y: np.ndarray, candidates: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices (a subset of ``candidates``) forming a seeded, per-class stratified ``fraction``.

    Written by hand rather than with scikit-learn to avoid a heavy dependency for ten lines; the
    rule must be exactly reproducible from (labels, fraction, seed) because a checkpoint's
    validation split is rebuilt from its stored data spec.
    """
    rng = np.random.default_rng(seed)
    picked: list[np.ndarray] = []
    cand_y = y[candidates]
    for c in np.unique(cand_y):
        members = candidates[cand_y == c]
        k = int(round(len(members) * fraction))
        if k == 0 and len(members) > 1 and fraction > 0:
            k = 1
        if k:
            picked.append(rng.permutation(members)[:k])
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def splits_from_usage(usage: np.ndarray | None, y: np.ndarray, *, val_fraction: float = 0.1,
                      seed: int = 0, default: str = "train") -> np.ndarray:
    """Map FER2013 ``Usage`` values (or train/val/test names) to our split names.

    The rule (DESIGN.md): Training -> train; with both PublicTest and PrivateTest present they
    become val and test; with only one of them, that one is test. Whenever no val split results,
    a seeded stratified ``val_fraction`` of the labeled train faces becomes val.
    """
    n = len(y)
    if usage is None:
        out = np.full(n, default, dtype=object)
    else:
        norm, seen = [], {}   # seen: each distinct value is interpreted once
        for u in np.asarray(usage).tolist():
            split = seen.get(u)
            if split is None:
                key = str(u).strip().lower().replace("_", "").replace(" ", "")
                if key not in USAGE_ALIASES:
                    raise ValueError(f"unknown Usage/split value {u!r}; expected Training, "
                                     "PublicTest, PrivateTest or train/val/test")
                split = seen[u] = USAGE_ALIASES[key]
            norm.append(split)
        out = np.array(norm, dtype=object)
        has_pub, has_priv = (out == "PublicTest").any(), (out == "PrivateTest").any()
        if has_pub and has_priv:
            out[out == "PublicTest"], out[out == "PrivateTest"] = "val", "test"
        else:
            out[(out == "PublicTest") | (out == "PrivateTest")] = "test"
    if not (out == "val").any() and val_fraction > 0:
        cand = np.flatnonzero((out == "train") & (np.asarray(y) >= 0))
        if len(cand) > 1:
            out[stratified_holdout(np.asarray(y), cand, val_fraction, seed)] = "val"
    return out.astype(str)
