"""Checkpoint files: atomic saves and safe loads.

Why this shape: a checkpoint is a dict of plain types plus tensors (``state_dict``), so it loads
with ``torch.load(weights_only=True)`` — a file that needs arbitrary unpickling is refused, never
executed. Saves go to a temp file in the same directory followed by ``os.replace`` so a process
killed mid-write (SIGKILL, power loss) leaves either the old or the new file, never a torn one.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, or unsafe to load."""


def atomic_write_bytes(path: str | os.PathLike, write: Any) -> None:
    """Call ``write(fileobj)`` on a temp file beside ``path``, fsync it, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a run should be readable like any file
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode("utf-8")))


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Atomically save ``payload`` (plain types + tensors) with ``"format"`` added."""
    payload = {"format": FORMAT, **payload}
    atomic_write_bytes(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True``; refuse anything that would need arbitrary unpickling."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if "Unsupported" in ln or "GLOBAL" in ln]
        raise CheckpointError(
            f"refusing to load {path}: it contains objects that only full unpickling could build "
            f"(which can run arbitrary code), so it is not a FER Studio checkpoint. Detail: "
            f"{(lines or [str(exc).splitlines()[0]])[0]}") from None
    except Exception as exc:  # truncated / not a torch file
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a FER Studio checkpoint (no 'state_dict' entry)")
    if ckpt.get("format", 0) > FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {ckpt['format']}; this version reads "
                              f"up to {FORMAT} — upgrade fer_core")
    return ckpt
