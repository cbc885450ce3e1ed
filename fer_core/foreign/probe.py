"""The import probe: run SynthFER faces through a user's model and say what its conventions are.

Why a probe: a wrong convention does not crash, it silently gives a model at chance level (NHWC
read as NCHW, [0,255] pixels fed to a [0,1] model, classes in another order). What can be
checked is checked -- the input shape the model accepts (from its own metadata where it says,
else the declared ``--input``/``--layout``, confirmed by a forward pass), the output width
against the classes, and whether rows are probabilities (non-negative, summing to 1) -- and what
cannot (the value range, the class order) is declared by options and printed back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from fer_core.preprocess import Preprocess

RANGES = ("unit", "255", "standard")
PROBE_FACES = 8


@dataclass(frozen=True)
class InputSpec:
    channels: int = 1
    size: int = 48
    layout: str = "nchw"

    @classmethod
    def parse(cls, text: str, layout: str | None = None) -> "InputSpec":
        """``CxHxW`` (``1x48x48``, ``3x64x64``; H must equal W)."""
        parts = text.lower().replace("×", "x").split("x")
        try:
            c, h, w = (int(p) for p in parts)
        except ValueError:
            raise ValueError(f"--input expects CxHxW such as 1x48x48 or 3x224x224, got {text!r}") from None
        if c not in (1, 3) or h != w or h < 8:
            raise ValueError(f"--input {text}: channels must be 1 or 3 and the input square (H = W >= 8)")
        return cls(c, h, layout or "nchw")

    def shape(self, n: int) -> tuple[int, ...]:
        return (n, self.size, self.size, self.channels) if self.layout == "nhwc" else (n, self.channels, self.size,
                                                                                      self.size)

    def describe(self) -> str:
        return f"{self.layout.upper()} {self.channels}×{self.size}×{self.size} input"


def from_shape(shape: tuple[int | None, ...] | None) -> InputSpec | None:
    """The spec a model's declared 4-D input shape implies (layout from where the 1/3 channels sit)."""
    if not shape or len(shape) != 4:
        return None
    _, a, b, c = shape
    if a in (1, 3) and b and c and b == c:
        return InputSpec(int(a), int(b), "nchw")
    if c in (1, 3) and a and b and a == b:
        return InputSpec(int(c), int(a), "nhwc")
    return None


def make_preprocess(spec: InputSpec, value_range: str, mean: float | None, std: float | None) -> Preprocess:
    """The run's stored preprocessing for a value range (resize to the model's input size)."""
    if value_range not in RANGES:
        raise ValueError(f"--range must be one of {', '.join(RANGES)}, not {value_range!r}")
    if value_range == "unit":
        return Preprocess(size=spec.size)
    if value_range == "255":
        return Preprocess(size=spec.size, mean=0.0, std=1.0 / 255.0, normalize=True)
    if mean is None or std is None or std <= 0:
        raise ValueError("--range standard needs --mean M and --std S (on [0,1] pixels, S > 0)")
    return Preprocess(size=spec.size, mean=float(mean), std=float(std), normalize=True)


def probe_faces(n: int = PROBE_FACES) -> torch.Tensor:
    from fer_core.data.synthetic import generate

    x, _ = generate(n=n, seed=123)
    return torch.as_tensor(np.asarray(x), dtype=torch.uint8)


def run_probe(call: Callable[[torch.Tensor], Any], spec: InputSpec, preprocess: Preprocess) -> np.ndarray:
    """The raw model output (N×K) for the probe faces laid out as ``spec`` says; raises with the reason."""
    x = preprocess(probe_faces())
    if spec.channels == 3:
        x = x.expand(-1, 3, -1, -1)
    if spec.layout == "nhwc":
        x = x.permute(0, 2, 3, 1)
    with torch.no_grad():
        out = call(x.contiguous())
    if isinstance(out, dict):
        out = next(iter(out.values()))
    if isinstance(out, (tuple, list)):
        out = out[0]
    out = torch.as_tensor(out).float().reshape(len(x), -1)
    if not torch.isfinite(out).all():
        raise ValueError("the model's output has NaN/inf values on the probe faces")
    return out.numpy()


def output_kind(out: np.ndarray) -> str:
    """``"probs"`` when every row is non-negative and sums to 1 (± 1e-3), else ``"logits"``."""
    return "probs" if (out >= 0).all() and np.allclose(out.sum(1), 1.0, atol=1e-3) else "logits"
