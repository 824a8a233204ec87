"""Devices and seeds."""
from __future__ import annotations

import torch


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> cuda when available else cpu; 'cpu' / 'cuda' / 'cuda:N' as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device} asked for, but torch sees no CUDA device")
    return torch.device(device)


def generator(seed: int) -> torch.Generator:
    """A CPU torch generator seeded with ``seed`` (draw on CPU, move to the device after)."""
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g
