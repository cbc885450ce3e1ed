"""Which faces are most likely labelled wrong: confident learning (cleanlab) on a run's probabilities.

Why cleanlab: its ``filter.find_label_issues`` estimates, per class pair, how many labels are
flipped (the confident joint) and flags that many faces, and ``rank.get_label_quality_scores``
orders faces within that; it is the maintained reference implementation of Northcutt et al.'s
confident learning, so nothing here re-derives it. The ranking puts flagged faces first (by
score), then the rest (by score), so a page can show "the suspicious ones" and a long tail.

Why out-of-sample probabilities matter: a model scores its own training faces with their given
labels, right or wrong (it has memorised them), so issues there are hidden. The validation and
test splits are held out for our own runs; for the training split :func:`kfold_probs` gives
cheap out-of-sample probabilities from a logistic regression on the penultimate features
(StratifiedKFold ``cross_val_predict``, no CNN retraining). :func:`out_of_sample_note` says which
case a run and split are.

How it is measured: :func:`precision_at_k` of a ranking against a known truth -- SynthFER's
planted label flips (``fer_core.data.synthetic.clean_labels``), or for FER2013 whether the FER+
crowd majority disagrees with the label (:func:`ferplus_disagrees`) -- next to
:func:`baseline_orders` (a random order; the least confident predictions first, which ignores
the label).

API: :class:`LabelIssues`, :func:`rank_label_issues`, :func:`kfold_probs`,
:func:`out_of_sample_note`, :func:`precision_at_k`, :func:`ferplus_disagrees`,
:func:`baseline_orders`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from fer_core.labels import EMOTIONS

__all__ = ["RANK_METHODS", "LabelIssues", "baseline_orders", "ferplus_disagrees", "kfold_probs",
           "out_of_sample_note", "precision_at_k", "rank_label_issues"]

RANK_METHODS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")
FILTER_BY = "prune_by_noise_rate"  # cleanlab's default: flags as many faces as the estimated noise


@dataclass
class LabelIssues:
    """Per face (the order of the labels given): ``score`` (higher = label more likely wrong,
    ``1 - cleanlab label quality``, NaN for unlabeled faces), ``flagged`` (cleanlab's
    ``find_label_issues``), ``order`` (face indices, most suspicious first: flagged by score, then
    the rest by score, unlabeled last), ``method``, ``out_of_sample`` and ``note`` (from
    :func:`out_of_sample_note`, as the caller passes them)."""

    score: np.ndarray
    flagged: np.ndarray
    order: np.ndarray
    method: str
    out_of_sample: bool = True
    note: str = ""

    def __len__(self) -> int:
        return len(self.score)


def _by_score_desc(idx: np.ndarray, score: np.ndarray) -> np.ndarray:
    """``idx`` sorted by ``score`` descending, ties by index (a stable, reproducible order)."""
    return idx[np.lexsort((idx, -score[idx]))]


def rank_label_issues(labels: Any, probs: Any, *, method: str = "self_confidence", out_of_sample: bool = True,
                      note: str = "") -> LabelIssues:
    """Rank faces by how likely their label is wrong (cleanlab on ``probs``, N×C rows summing to 1).

    ``labels`` are class indices 0..C-1; -1 (unlabeled) faces get score NaN, are never flagged and
    come last. ``method`` is cleanlab's label-quality score (:data:`RANK_METHODS`).
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    if method not in RANK_METHODS:
        raise ValueError(f"method must be one of {', '.join(RANK_METHODS)}, not {method!r}")
    y = np.asarray(labels).astype(np.int64)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or len(p) != len(y):
        raise ValueError(f"probs must be N×C with N = {len(y)} labels, got shape {p.shape}")
    if (y >= p.shape[1]).any() or (y < -1).any():
        raise ValueError(f"labels must be 0..{p.shape[1] - 1} (or -1 for unlabeled)")
    n = len(y)
    score = np.full(n, np.nan)
    flagged = np.zeros(n, bool)
    has = np.flatnonzero(y >= 0)
    if len(has):
        ph = p[has] / p[has].sum(1, keepdims=True)  # cleanlab wants rows summing to 1 exactly
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "too few examples in class k": small splits
            score[has] = 1.0 - get_label_quality_scores(y[has], ph, method=method)
            flagged[has] = find_label_issues(y[has], ph, filter_by=FILTER_BY, n_jobs=1)
    rest = np.setdiff1d(has, np.flatnonzero(flagged))
    order = np.concatenate([_by_score_desc(np.flatnonzero(flagged), score), _by_score_desc(rest, score),
                            np.flatnonzero(y < 0)]).astype(np.int64)
    return LabelIssues(score=score, flagged=flagged, order=order,
                       method=f"cleanlab {method} (find_label_issues: {FILTER_BY})",
                       out_of_sample=bool(out_of_sample), note=note)


def kfold_probs(features: Any, labels: Any, *, k: int = 5, seed: int = 0,
                num_classes: int | None = None) -> np.ndarray:
    """Out-of-sample probabilities (N×C) from a logistic regression on ``features``.

    Each labelled face is predicted by a model fitted on the other folds (sklearn
    ``cross_val_predict`` with ``StratifiedKFold(k, shuffle, seed)``; features standardised
    inside each fold). Unlabeled (-1) faces get the prediction of a model fitted on all labelled
    faces. C = ``num_classes`` (default: the largest label + 1); classes absent from a fold's
    training part get probability 0 there. ``k`` shrinks when no class has ``k`` faces.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    y = np.asarray(labels).astype(np.int64)
    c = int(num_classes) if num_classes is not None else int(y.max(initial=-1)) + 1
    has = np.flatnonzero(y >= 0)
    present, counts = np.unique(y[has], return_counts=True)
    out = np.full((len(y), max(c, 1)), 1.0 / max(c, 1))
    if len(present) < 2:
        raise ValueError("k-fold predictions need labelled faces of at least two classes")
    folds = int(min(k, counts.max()))
    if folds < 2:
        raise ValueError("k-fold predictions need at least two faces of some class")

    def clf() -> Any:
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))

    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    unl = np.flatnonzero(y < 0)
    # One BLAS thread: these matrices are small, and threaded OpenBLAS next to torch's threads on a
    # few cores spends its time spinning (many times slower than one thread).
    with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"):
        warnings.simplefilter("ignore", UserWarning)  # classes with fewer faces than folds
        p = cross_val_predict(clf(), x[has], y[has], cv=cv, method="predict_proba")
        if len(unl):
            full = clf().fit(x[has], y[has]).predict_proba(x[unl])
    out[has] = 0.0
    out[np.ix_(has, present)] = p
    if len(unl):
        out[unl] = 0.0
        out[np.ix_(unl, present)] = full
    return out.astype(np.float32)


def out_of_sample_note(config: dict[str, Any], split: str) -> tuple[bool, str]:
    """(whether the run's probabilities on ``split`` are out-of-sample, one sentence saying why)."""
    kind = str(config.get("kind", "registry"))
    if split == "train":
        return False, ("the model was trained on these faces, so it tends to agree with their labels, "
                       "wrong ones included: use k-fold predictions for an out-of-sample ranking")
    if kind in ("foreign", "predictions"):
        return True, (f"the {split} split is held out from FER Studio's training split, but this model was "
                      "trained elsewhere: FER Studio cannot tell whether it saw these faces")
    return True, f"the {split} split was held out from this run's training"


def precision_at_k(order: Any, truth_wrong: Any, ks: Sequence[int] = (50, 200, 1000)) -> dict[int, float]:
    """Share of the first ``k`` faces of ``order`` whose label is wrong according to ``truth_wrong``
    (bool per face), for each k; ks larger than the number of ranked faces are left out."""
    order = np.asarray(order, dtype=np.int64)
    truth = np.asarray(truth_wrong, dtype=bool)
    return {int(k): float(truth[order[:k]].mean()) for k in ks if 0 < int(k) <= len(order)}


def ferplus_disagrees(labels: Any, votes: Any, classes: Sequence[str] = EMOTIONS) -> np.ndarray:
    """Per face: the FER+ crowd majority differs from the FER2013 label.

    The majority is :func:`fer_core.evaluate.ferplus_majority` (one of the 7 FER2013 classes, mapped
    by name onto ``classes``); a tie, a majority of contempt / unknown / not-a-face, no votes or
    an unlabeled face count as "no disagreement" (False).
    """
    from fer_core.evaluate import ferplus_majority
    from fer_core.foreign.adapter import canonical_class

    y = np.asarray(labels).astype(np.int64)
    if votes is None:
        raise ValueError("these faces have no FER+ votes (load the data with its fer2013new.csv)")
    maj = ferplus_majority(np.asarray(votes))
    names = [canonical_class(c) for c in classes]
    to_run = np.array([names.index(e) if e in names else -1 for e in EMOTIONS] + [-1], dtype=np.int64)
    mapped = to_run[maj]  # maj == -1 picks the trailing -1
    return (mapped >= 0) & (y >= 0) & (mapped != y)


def baseline_orders(labels: Any, probs: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """Orders to compare a ranking with: ``"random"`` (a seeded permutation) and ``"low confidence"``
    (lowest top probability first: the model is unsure, whatever the label says). Labelled faces
    first in both, unlabeled (-1) last, as in :func:`rank_label_issues`."""
    y = np.asarray(labels).astype(np.int64)
    p = np.asarray(probs, dtype=np.float64)
    has, unl = np.flatnonzero(y >= 0), np.flatnonzero(y < 0)
    rng = np.random.default_rng(seed)
    top = p.max(1)
    low = has[np.lexsort((has, top[has]))]
    return {"random": np.concatenate([rng.permutation(has), unl]).astype(np.int64),
            "low confidence": np.concatenate([low, unl]).astype(np.int64)}
