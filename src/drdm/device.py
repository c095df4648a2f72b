"""Choosing the compute device from a ``device="auto"|"cpu"|"cuda"`` setting."""

from __future__ import annotations

import torch

from .errors import InputError


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else the CPU; ``"cuda"`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device {name}: CUDA is not available on this machine")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise InputError(f"device {name}: expected auto, cpu or cuda")
