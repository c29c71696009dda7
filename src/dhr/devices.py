"""Device choice at the edges (pipeline, CLI, web UI): library code follows its inputs' device."""

from __future__ import annotations

import torch

from dhr.checks import check_choice
from dhr.errors import ConfigError

__all__ = ["DEVICES", "resolve_device"]

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks cuda > mps > cpu; other names are checked for availability.

    Args:
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``, or a :class:`torch.device` (returned as is).

    Raises:
        ConfigError: Unknown name, or a device that is not available on this machine.
    """
    if isinstance(device, torch.device):
        return device
    base = str(device).split(":")[0]
    check_choice(base, DEVICES, "device")
    mps = getattr(torch.backends, "mps", None)
    mps_ok = bool(mps is not None and mps.is_available())
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_ok else torch.device("cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise ConfigError("the cuda device was requested but no CUDA GPU is available; use device='auto' or 'cpu'")
    if base == "mps" and not mps_ok:
        raise ConfigError("device='mps' but Apple MPS is not available; use device='auto' or 'cpu'")
    return torch.device(str(device))
