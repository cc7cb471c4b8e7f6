"""Device choice in one place: numerical functions take a ``torch.device``, they never pick one."""
from __future__ import annotations

import torch

from core._validation import InputError

__all__ = ["resolve_device"]


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Map ``'auto' | 'cpu' | 'cuda' | 'cuda:N'`` to a ``torch.device``; 'auto' prefers CUDA when present."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(
                f"device '{name}' was requested but no CUDA device is available on this machine; "
                "use --device cpu or --device auto", field="device")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise InputError(f"expected one of auto, cpu, cuda, cuda:N; found {name!r}", field="device")
