"""``TrainConfig``: everything that decides a training run, saved verbatim in ``config.json``.

Why its own module: the CLI, the ensemble and distillation code, the report and the dashboard read
and validate recipes without importing the training loop (:mod:`fer_core.train` re-exports it).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from fer_core.augment import PRESETS


@dataclass
class TrainConfig:
    """Everything that decides a training run; saved verbatim in ``config.json`` under ``train``."""

    data: str = "synthetic"
    model: str = "cnn4"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adamw"          # adam | adamw | sgd (Nesterov momentum)
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"          # cosine | plateau | none
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    mixup: float = 0.0                # Beta(alpha, alpha) mixup; 0 = off
    ema: float = 0.0                  # weight EMA decay per step (e.g. 0.999); 0 = off
    normalize: bool = True
    aug: str = "basic"                # none | basic | strong
    early_stop: int = 0               # patience in epochs on val accuracy; 0 = off
    seed: int = 0
    split_seed: int | None = None     # seed of the train/val slice; None = ``seed`` (ensemble members
                                      # vary ``seed`` but must share one validation slice)
    val_fraction: float = 0.1
    skip_bad_rows: bool = False
    ferplus: str | None = None
    device: str = "auto"              # auto | cpu | cuda | mps
    channels_last: bool = True
    bf16: str = "auto"                # auto | on | off  (CPU autocast; fp32 where unsupported)
    threads: int = 0                  # torch intra-op threads; 0 = torch's default
    time_budget_min: float = 0.0      # >0: cosine over wall time, stop when spent (epochs = max)
    teacher: str | None = None        # run directory whose soft targets are distilled (fer_core.distill)
    kd_t: float = 4.0                 # distillation temperature T
    kd_alpha: float = 0.7             # weight of the soft (KL) term; 1 - kd_alpha on the hard CE
    kd_cache: bool = False            # teacher once per training face (un-augmented), not per batch
    relabel: str | None = None        # triage CSV applied to the training faces (fer_core.dataset.relabel)

    def __post_init__(self) -> None:
        if self.aug not in PRESETS:
            raise ValueError(f"unknown augmentation preset {self.aug!r}; choose one of {', '.join(PRESETS)}")
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose adam, adamw or sgd")
        if self.schedule not in ("cosine", "plateau", "none"):
            raise ValueError(f"unknown schedule {self.schedule!r}; choose cosine, plateau or none")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs and batch_size must be >= 1 and lr > 0")
        if self.kd_t <= 0 or not 0.0 <= self.kd_alpha <= 1.0:
            raise ValueError("--kd-t must be > 0 and --kd-alpha in [0, 1]")
        if self.kd_cache and not self.teacher:
            raise ValueError("--kd-cache caches a teacher's targets: give --teacher RUN")
        if self.kd_cache and self.mixup > 0:
            raise ValueError("--kd-cache has one target per training face, so it cannot follow mixup's "
                             "mixed faces: use --mixup 0, or the teacher on every batch (no --kd-cache)")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
