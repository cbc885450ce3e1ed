"""Model-randomisation sanity check for attribution maps (Adebayo et al. 2018).

Why: a map that looks the same for a model whose learned weights were replaced by random ones
explains the input (edges, contrast), not the model. :func:`sanity_check` compares maps of the
model with maps of a copy whose top layers are re-initialised; :func:`cascading_randomization`
repeats that for the top 1, 2, ... layers. Similarity is the Spearman rank correlation per face.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from fer_core.explain.attribution import as_batch, explain, resolve_target

__all__ = ["SanityResult", "cascading_randomization", "parameter_layers", "randomize_top", "sanity_check",
           "spearman"]

# Normalisation layers whose reset_parameters() sets an identity affine (γ=1, β=0).
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
          nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def parameter_layers(model: nn.Module) -> list[str]:
    """Modules owning parameters, in definition (≈ forward) order, shallow to deep."""
    return [name for name, m in model.named_modules()
            if name and any(True for _ in m.parameters(recurse=False))]


def randomize_top(model: nn.Module, n_layers: int | None = None, seed: int = 0) -> tuple[nn.Module, list[str]]:
    """A deep copy with the top ``n_layers`` parameter layers re-initialised (cascading from the
    output; ``None`` = all). The original is untouched. Returns ``(copy, randomised layer names)``."""
    layers = parameter_layers(model)
    n = len(layers) if n_layers is None else max(0, min(int(n_layers), len(layers)))
    chosen = layers[len(layers) - n:][::-1]
    clone = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(int(seed))
        for name in chosen:
            m = clone.get_submodule(name)
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
                if isinstance(m, _NORMS) and m.affine:
                    # the reset is the identity; draw γ and β so the layer is random too
                    m.weight.normal_(1.0, 0.5)
                    m.bias.normal_(0.0, 0.5)
            else:
                for p in m.parameters(recurse=False):
                    p.normal_(0.0, 0.05)
    return clone, chosen


def spearman(a: np.ndarray, b: np.ndarray, *, absolute: bool = True) -> np.ndarray:
    """Spearman rank correlation per map pair (``N×H×W`` each -> ``N``), ties get average ranks.

    ``absolute`` compares |maps| (Adebayo et al. 2018 report both; sign flips under
    randomisation would otherwise read as change). ``scipy.stats.spearmanr`` correlates every
    column with every other; here each pair of maps is one row, so the ranks come from
    ``scipy.stats.rankdata`` and the correlation of the ranks is computed per row.
    """
    from scipy.stats import rankdata

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim == 2:
        a, b = a[None], b[None]
    if absolute:
        a, b = np.abs(a), np.abs(b)
    ra = rankdata(a.reshape(len(a), -1), axis=1)
    rb = rankdata(b.reshape(len(b), -1), axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    den = np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
    # A constant map (e.g. an all-zero Grad-CAM) has no ranking: NaN, shown as "n/a".
    return np.divide((ra * rb).sum(1), den, out=np.full(len(a), np.nan), where=den > 0)


@dataclass
class SanityResult:
    layers: list[str]            # layers randomised, top first
    original: np.ndarray         # N×H×W
    randomized: np.ndarray       # N×H×W
    similarity: np.ndarray       # Spearman per face
    cascade: list[tuple[int, str, float]] = field(default_factory=list)

    @property
    def mean_similarity(self) -> float:
        ok = np.isfinite(self.similarity)
        return float(np.mean(self.similarity[ok])) if ok.any() else float("nan")


def sanity_check(model: nn.Module, x: torch.Tensor, target: Any, method: str, *, n_layers: int | None = None,
                 seed: int = 0, original: np.ndarray | None = None, **opts: Any) -> SanityResult:
    """Maps of a copy whose top ``n_layers`` are re-initialised vs the original maps. High
    similarity = the map does not depend on what the model learned. The targets are fixed from
    the original model (``"pred"`` is resolved first)."""
    x4, _ = as_batch(x)
    targets = resolve_target(model, x4, target)
    orig = np.asarray(original) if original is not None else explain(model, x4, targets, method, **opts)
    orig = orig.reshape(len(x4), *x4.shape[-2:])
    rand_model, layers = randomize_top(model, n_layers, seed)
    rnd = explain(rand_model, x4, targets, method, **opts)
    return SanityResult(layers, orig, rnd, spearman(orig, rnd))


def cascading_randomization(model: nn.Module, x: torch.Tensor, target: Any, method: str, *,
                            steps: Sequence[int] | None = None, seed: int = 0,
                            **opts: Any) -> list[tuple[int, str, float]]:
    """Mean Spearman similarity after randomising the top 1, 2, ... layers: ``(k, deepest
    randomised layer, similarity)`` per step (one batched explain per step)."""
    x4, _ = as_batch(x)
    targets = resolve_target(model, x4, target)
    orig = explain(model, x4, targets, method, **opts).reshape(len(x4), *x4.shape[-2:])
    n = len(parameter_layers(model))
    out = []
    for k in (steps if steps is not None else range(1, n + 1)):
        res = sanity_check(model, x4, targets, method, n_layers=k, seed=seed, original=orig, **opts)
        out.append((int(k), res.layers[-1] if res.layers else "", res.mean_similarity))
    return out
