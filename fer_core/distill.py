"""Knowledge distillation (Hinton et al. 2015): a teacher run's soft targets for :func:`fer_core.train.fit`.

The loss (:func:`kd_loss`)::

    loss = alpha * T^2 * KL(p_teacher^T || p_student^T) + (1 - alpha) * CE(student, y, label_smoothing)
    p^T  = softmax(logits / T)

A temperature ``T > 1`` softens both distributions so the student learns how the teacher ranks
the wrong classes (sad vs fear), not only its top class; the ``T^2`` factor keeps the soft term's
gradients on the scale of the hard term's whatever ``T`` is (they scale as ``1/T^2``).

Two ways to get the teacher's targets. By default the teacher runs on every training batch, on
the *same* augmented pixels as the student ("consistent" teaching: the target matches the view).
With ``kd_cache`` (``--kd-cache``) it runs once per training face, on the un-augmented face, and
the student looks its targets up by face: the teacher then costs one pass over the training set
instead of one per epoch. That matters on a CPU, where a large teacher's forward pass costs as much
as the small student's whole training step; the targets are those of the clean face, as the hard
label is, and augmentations are label-preserving. The table is stored in the run
(``teacher_logits.pt``, keyed by the teacher's config hash and a digest of the training faces) so
a resumed run reuses it instead of recomputing.

Why a :class:`~fer_core.model.LoadedRun` teacher: any run kind can teach -- our runs, imported
models (a teacher whose module is inference-only gives its log-probabilities, which divided by
``T`` give the same ``p^T`` as logits would: they differ by a per-face constant), and ensembles.
It is loaded once, in eval mode, and runs without gradients on the *same* augmented [0,1] pixels
as the student, converted to its own preprocessing (input size, mean/std).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from fer_core.model import LoadedRun, ModelUnavailable

CACHE_FILE = "teacher_logits.pt"

# config.json entries that change no output of the model (a later TTA choice), left out of its hash
VOLATILE_KEYS = ("eval_tta", "eval_tta_val")


def soft_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    """``T^2 * KL(p_teacher^T || p_student^T)``, averaged over the batch."""
    log_ps = F.log_softmax(student_logits.float() / T, dim=1)
    log_pt = F.log_softmax(teacher_logits.float() / T, dim=1)
    return (T * T) * F.kl_div(log_ps, log_pt, log_target=True, reduction="batchmean")


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor, *,
            T: float = 4.0, alpha: float = 0.7, label_smoothing: float = 0.0,
            hard: torch.Tensor | None = None) -> torch.Tensor:
    """``alpha * T^2 * KL(p_teacher^T || p_student^T) + (1 - alpha) * CE(student, y)``.

    ``hard`` replaces the cross-entropy term when the caller already has it (mixup's mixed CE).
    ``alpha=0`` is exactly the cross-entropy.
    """
    if hard is None:
        hard = F.cross_entropy(student_logits.float(), y, label_smoothing=label_smoothing)
    return alpha * soft_loss(student_logits, teacher_logits, T) + (1 - alpha) * hard


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 of a run's config (canonical JSON, :data:`VOLATILE_KEYS` left out)."""
    stable = {k: v for k, v in config.items() if k not in VOLATILE_KEYS}
    return hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()


class Teacher:
    """A run's model as a source of soft targets: ``teacher.logits(unit_pixels)``."""

    def __init__(self, run: str | os.PathLike[str], device: str | torch.device = "cpu") -> None:
        self.lm = LoadedRun(run, device=str(device))
        self._fn = self.lm.source.forward if self.lm.source.forward is not None else self.lm.model
        if self._fn is None:
            raise ModelUnavailable(f"teacher {self.lm.run.name}: {self.lm.gradient_reason}")
        if self.lm.model is not None:
            self.lm.model.eval()

    @property
    def classes(self) -> tuple[str, ...]:
        return self.lm.classes

    @property
    def identity(self) -> dict[str, str]:
        """What the student's ``config.json`` records: name, path and config hash of the teacher."""
        return {"run": self.lm.run.name, "path": str(Path(self.lm.run).resolve()),
                "config_hash": config_hash(self.lm.config)}

    def logits(self, unit: torch.Tensor) -> torch.Tensor:
        """Teacher logits (or log-probabilities) for [0,1] pixels ``N×1×S×S`` (float32, no grad)."""
        pre = self.lm.preprocess
        with self.lm.lock, torch.no_grad():
            x = pre.standardize(pre.to_unit(unit.float().to(self.lm.device)))
            out = self._fn(x).float()
        # a probability of exactly 0 from an imported model's log-probabilities would be -inf and
        # make the KL NaN; -1e4 keeps it at probability 0 in float32
        return torch.nan_to_num(out, neginf=-1e4).to(unit.device)


def load_teacher(run: str | os.PathLike[str], device: str | torch.device, classes: Sequence[str],
                 expected_hash: str | None = None) -> Teacher:
    """The teacher of a training run, checked: same classes as the data, and (on resume) the same
    config hash as when the run started -- another teacher would not continue the same training."""
    teacher = Teacher(run, device)
    if tuple(teacher.classes) != tuple(classes):
        raise ValueError(f"teacher {run} predicts {', '.join(teacher.classes)}, not the data's {', '.join(classes)}")
    if expected_hash and expected_hash != teacher.identity["config_hash"]:
        raise ValueError(f"teacher {run} changed since this run started (its config hash differs): "
                         "resuming would not continue the same training")
    return teacher


def cached_logits(teacher: Teacher, x_u8: torch.Tensor, run: str | os.PathLike[str], *,
                  preprocess_unit: Any, batch_size: int = 512, write: bool = True) -> tuple[torch.Tensor, bool]:
    """The teacher's logits for every training face (``N×C``, in ``x_u8``'s order), and whether they
    were computed now (False: reused from ``RUN/teacher_logits.pt``).

    ``preprocess_unit`` maps uint8 faces to the [0,1] pixels the student's pipeline sees before
    augmentation (``Preprocess.to_unit``); the teacher converts them to its own preprocessing.
    """
    from fer_core.checkpoint import save_checkpoint

    key = hashlib.sha256(teacher.identity["config_hash"].encode() + str(tuple(x_u8.shape)).encode()
                         + x_u8.contiguous().numpy().tobytes()).hexdigest()
    path = Path(run) / CACHE_FILE
    if path.is_file():
        try:  # plain tensors and strings: weights_only loading, nothing is unpickled
            ck = torch.load(path, map_location="cpu", weights_only=True)
            shape = (len(x_u8), len(teacher.classes))
            if isinstance(ck, dict) and ck.get("key") == key and tuple(ck["logits"].shape) == shape:
                return ck["logits"].float(), False
        except Exception:  # noqa: BLE001 - a torn or foreign file: recompute and replace it
            pass
    table = torch.cat([teacher.logits(preprocess_unit(x_u8[i:i + batch_size]))
                       for i in range(0, len(x_u8), batch_size)]).float()
    if write:
        save_checkpoint(path, {"key": key, "teacher": teacher.identity["run"], "logits": table})
    return table, True
