"""Where computation runs and how randomness is fixed.

A notebook calls :func:`device` once and :func:`seed_everything` once; every other function in
``tlcourse`` takes its device from the tensors or modules it is given.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["device", "seed_everything"]


def device(prefer: str | None = None) -> torch.device:
    """Pick the best available device: CUDA, then Apple MPS, then the CPU.

    ``prefer`` (or the environment variable ``TLCOURSE_DEVICE``) forces one, e.g. ``"cpu"``;
    asking for a device that is not available raises ``RuntimeError`` instead of silently
    falling back, so a reader who expects a GPU learns at once that they do not have one.

    >>> device("cpu")
    device(type='cpu')
    """
    prefer = prefer or os.environ.get("TLCOURSE_DEVICE") or None
    if prefer is not None:
        kind = torch.device(prefer).type
        available = {
            "cpu": True,
            "cuda": torch.cuda.is_available(),
            "mps": _mps_available(),
        }
        if kind not in available:
            raise ValueError(f"unknown device {prefer!r}: use 'cuda', 'mps' or 'cpu'")
        if not available[kind]:
            raise RuntimeError(
                f"device {prefer!r} was requested but is not available on this machine; "
                "unset TLCOURSE_DEVICE or pass prefer=None to use the best available device"
            )
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def seed_everything(seed: int, deterministic: bool = False) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (all devices); return a ``torch.Generator`` seeded alike.

    With ``deterministic=True`` cuDNN picks deterministic kernels as well (slower on a GPU).

    >>> g = seed_everything(0)
    >>> a = torch.rand(2); _ = seed_everything(0); b = torch.rand(2)
    >>> bool(torch.equal(a, b))
    True
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)
