"""Evaluation: per-image predictions, confusion matrix, per-class metrics, calibration, TTA.

Results are cached in the run (``eval/<split>.json`` for metrics, ``eval/<split>.npz`` for the
per-image predictions the dashboard's error gallery browses), so the dashboard never recomputes
what a previous ``evaluate`` already knows.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torchvision.transforms.v2.functional as TF

from fer_core.checkpoint import atomic_write_bytes, atomic_write_text
from fer_core.data.faceset import FaceSet
from fer_core.data.ferplus import FERPLUS_VOTE_NAMES
from fer_core.preprocess import Preprocess
from fer_core.runs import eval_path, read_config

TTA_MODES: tuple[str, ...] = ("none", "flip", "tencrop")
TENCROP_SIZE = 44  # crops of 44 px from 48 px faces, resized back to the model's input


@torch.inference_mode()
def predict_probs(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], x_u8: torch.Tensor,
                  preprocess: Preprocess, *, tta: str = "none", batch_size: int = 512,
                  device: str | torch.device = "cpu") -> np.ndarray:
    """Softmax probabilities (N×C float32) in eval mode; ``tta`` averages over views.

    ``model`` is a module or any callable from model input to logits (e.g. ONNX Runtime on an
    imported graph); a module is put in eval mode for the call and restored afterwards.
    """
    if tta not in TTA_MODES:
        raise ValueError(f"unknown TTA mode {tta!r}; choose one of {', '.join(TTA_MODES)}")
    is_module = isinstance(model, nn.Module)
    was_training = model.training if is_module else False
    if is_module:
        model.eval()
    out = []
    try:
        for i in range(0, len(x_u8), batch_size):
            x = preprocess.to_unit(x_u8[i:i + batch_size].to(device))
            if tta == "none":
                views = [x]
            elif tta == "flip":
                views = [x, TF.horizontal_flip(x)]
            else:
                crops = TF.ten_crop(x, [TENCROP_SIZE, TENCROP_SIZE])
                views = [TF.resize(c, [preprocess.size, preprocess.size], antialias=True) for c in crops]
            p = torch.stack([model(preprocess.standardize(v)).float().softmax(1) for v in views]).mean(0)
            out.append(p.cpu())
    finally:
        if is_module:
            model.train(was_training)
    return torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, 0), np.float32)


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows = true class, columns = predicted class."""
    return np.bincount(labels * num_classes + preds, minlength=num_classes**2).reshape(num_classes, num_classes)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    conf, pred = probs.max(1), probs.argmax(1)
    correct = (pred == labels).astype(np.float64)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def compute_metrics(labels: np.ndarray, probs: np.ndarray, classes: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """accuracy, macro-F1, per-class precision/recall/F1/support, confusion matrix, ECE."""
    k = len(classes)
    preds = probs.argmax(1)
    cm = confusion_matrix(labels, preds, k)
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(1), cm.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    present = support > 0
    return {
        "n": int(len(labels)),
        "accuracy": float((preds == labels).mean()) if len(labels) else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "ece": expected_calibration_error(probs, labels) if len(labels) else 0.0,
        "classes": list(classes),
        "per_class": {c: {"precision": float(precision[i]), "recall": float(recall[i]),
                          "f1": float(f1[i]), "support": int(support[i])} for i, c in enumerate(classes)},
        "confusion": cm.tolist(),
    }


def mislabel_scores(probs: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """"Likely mislabeled" scores per face.

    * ``self_confidence`` (confident learning, Northcutt et al.): the model's probability of the
      given label; low = suspicious.
    * ``mistakenness`` (FiftyOne-style): how confidently the model disagrees, ``p_pred`` when
      pred != label, else ``0``; high = suspicious.
    """
    self_conf = probs[np.arange(len(labels)), labels]
    pred = probs.argmax(1)
    mistakenness = np.where(pred != labels, probs.max(1), 0.0)
    return {"self_confidence": self_conf, "mistakenness": mistakenness}


def evaluate_run(run: str | os.PathLike, *, data: str | None = None, split: str = "test",
                 tta: str = "none", which: str = "best", write: bool = True,
                 faces: FaceSet | None = None, batch_size: int = 512,
                 ferplus: str | None = None, model: Any = None) -> dict[str, Any]:
    """Evaluate a run's model on a split of its own data (or of ``data``) and cache the results.

    The model's stored preprocessing is applied whatever the source, so a user can point a run at
    their own copy of FER2013 (or a PrivateTest-only file) and get comparable figures. Without
    ``data`` the run's own data is found by :func:`fer_core.rundata.resolve_data` (``FER_DATA``
    included); ``model`` is an already loaded :class:`fer_core.model.LoadedRun` of the run.
    """
    from fer_core.model import LoadedRun

    run = Path(run)
    cfg = read_config(run)
    if faces is None:
        from fer_core.data.spec import open_dataset
        from fer_core.rundata import DataUnavailable, resolve_data

        choice = resolve_data(cfg if data is None else {**cfg, "data": data}, None if data is None else "")
        if data is None and choice.spec is None:
            raise DataUnavailable(choice.note or "no data")
        spec = data or str(choice.spec)  # an explicit --data is used as given (its errors name it)
        faces = open_dataset(spec, val_fraction=choice.val_fraction, seed=choice.seed,
                             ferplus=ferplus or (choice.ferplus if data is None else None))
    else:
        spec = data or cfg["data"]
    part = faces.select(split)
    labels = part.y.numpy()
    if (labels < 0).any():
        raise ValueError(f"the {split!r} split of {spec} is unlabeled: accuracy cannot be computed "
                         "(use `python -m fer_core predict` for unlabeled faces)")
    lm = model if model is not None and model.which == which else LoadedRun(run, which=which)
    probs = lm.probs(part.x, tta=tta, batch_size=batch_size)
    result = compute_metrics(labels, probs, lm.classes or faces.classes)
    result.update({"split": split, "data": spec, "tta": tta, "checkpoint": lm.checkpoint.name,
                   "epoch": lm.epoch})
    if part.ferplus_votes is not None:
        result["ferplus"] = ferplus_error_report(labels, probs.argmax(1), part.ferplus_votes)
    if write:
        atomic_write_text(eval_path(run, split, ".json", tta), json.dumps(result, indent=1) + "\n")
        arrays = {"index": np.flatnonzero(faces.split == split).astype(np.int64),
                  "row": part.row.astype(np.int64), "label": labels.astype(np.int64),
                  "probs": probs, "pred": probs.argmax(1).astype(np.int64)}
        if part.ferplus_votes is not None:
            arrays["ferplus_votes"] = part.ferplus_votes.astype(np.int16)

        def _write(f: Any) -> None:
            np.savez_compressed(f, **arrays)

        atomic_write_bytes(eval_path(run, split, ".npz", tta), _write)
    return result


def choose_tta(run: str | os.PathLike, *, data: str | None = None, modes: tuple[str, ...] = TTA_MODES,
               faces: FaceSet | None = None) -> str:
    """Pick the run's default test-time augmentation on its **validation** split and store it.

    Why store it: TTA is part of how a model is meant to be used (as the preprocessing is), so
    ``evaluate`` applies the run's choice unless told otherwise. Why validation: choosing on the
    test split would leak it. Ties go to the cheaper mode (``modes`` is ordered by cost). Writes
    ``eval_tta`` and the validation accuracies per mode (``eval_tta_val``) into ``config.json``.
    """
    from fer_core.runs import write_config

    accs = {m: evaluate_run(run, data=data, split="val", tta=m, faces=faces)["accuracy"] for m in modes}
    best = max(modes, key=lambda m: (accs[m], -modes.index(m)))
    cfg = read_config(run)
    cfg["eval_tta"], cfg["eval_tta_val"] = best, {m: round(float(a), 6) for m, a in accs.items()}
    write_config(run, cfg)
    return best


# FER+ vote columns (fer2013new.csv order) -> FER2013 class index; contempt/unknown/NF have none.
FERPLUS_TO_FER = {"neutral": 6, "happiness": 3, "surprise": 5, "sadness": 4, "anger": 0,
                  "disgust": 1, "fear": 2}


def ferplus_top_vote(votes: np.ndarray) -> np.ndarray:
    """Per face, the column (in ``FERPLUS_VOTE_NAMES``, all ten FER+ categories) with the most
    crowd votes, or -1 for a tie at the top or no votes."""
    v = np.asarray(votes, dtype=np.int64)
    top = v.max(1)
    ok = (top > 0) & ((v == top[:, None]).sum(1) == 1)
    return np.where(ok, v.argmax(1), -1)


def ferplus_majority(votes: np.ndarray) -> np.ndarray:
    """FER+ crowd majority per face as a FER2013 class index, or -1 when the majority is
    contempt/unknown/not-a-face, there is a tie, or FER+ has no votes for the face."""
    col = ferplus_top_vote(votes)
    to_fer = np.array([FERPLUS_TO_FER.get(name, -1) for name in FERPLUS_VOTE_NAMES] + [-1], dtype=np.int64)
    return to_fer[col]  # col == -1 picks the trailing -1


def ferplus_error_report(labels: np.ndarray, preds: np.ndarray, votes: np.ndarray) -> dict[str, Any]:
    """How many of the model's "errors" the FER+ crowd sides with the model on.

    Among faces where the prediction differs from the FER2013 label: the share whose FER+
    majority equals the prediction (the model is arguably right), equals the FER2013 label, or
    is something else / undecided.
    """
    wrong = preds != labels
    maj = ferplus_majority(votes)
    has = wrong & (votes.sum(1) > 0)
    n = int(wrong.sum())
    agree_model = int((has & (maj == preds)).sum())
    agree_label = int((has & (maj == labels)).sum())
    return {"errors": n, "with_votes": int(has.sum()), "ferplus_agrees_with_model": agree_model,
            "ferplus_agrees_with_label": agree_label,
            "other_or_undecided": int(has.sum()) - agree_model - agree_label,
            "share_model_right": agree_model / max(1, int(has.sum()))}
