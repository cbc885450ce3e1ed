"""Where training runs: the device, the process group for ``torchrun``, bf16 support, versions.

Why apart from the training loop: the dashboard and the live path ask whether this CPU computes
bfloat16 natively, and the logger records versions, without importing the trainer.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

import fer_core


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device) -> DistInfo:
    """Join the process group when started by ``torchrun`` (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank=torch_dist.get_rank(), world=torch_dist.get_world_size(),
                    local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but no CUDA GPU is available; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError("--device mps requested but MPS is not available; use --device cpu or auto")
    if name not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {name!r}; choose auto, cpu, cuda or mps")
    return torch.device(name, local_rank) if name == "cuda" else torch.device(name)


def cpu_bf16_supported() -> bool:
    """True when this CPU has native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


def versions() -> dict[str, str]:
    import torchvision

    # str(): torch.__version__ is a TorchVersion object, which weights_only loading rejects.
    return {"fer_core": str(fer_core.__version__), "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__), "python": platform.python_version()}
