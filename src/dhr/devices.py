"""Device choice at the edges (pipeline, CLI, web UI): library code follows its inputs' device."""

from __future__ import annotations

import os

import torch

from dhr.checks import check_choice
from dhr.errors import ConfigError

__all__ = ["DEVICES", "resolve_device", "use_deterministic_kernels"]

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


def use_deterministic_kernels(enabled: bool = True) -> None:
    """Makes GPU results repeatable from run to run (process-wide; call it before the first GPU work).

    On a CPU dhr is deterministic under a seed already. On CUDA the default kernels are not: TF32
    convolutions and atomic-add backward passes make two runs of the same photo differ (measured on
    an H200 at 1024 px: the final out-of-domain loss 0.0188 in one run, 0.0248 in the next). This
    switches to deterministic kernels (``torch.use_deterministic_algorithms``; ops without one warn
    instead of failing), turns TF32 and cuDNN autotuning off and sets ``CUBLAS_WORKSPACE_CONFIG``
    (cuBLAS reads it when its handle is made). Costs speed on a GPU. ``enabled=False`` restores
    PyTorch's defaults. The command line: ``dhr --deterministic COMMAND`` or ``DHR_DETERMINISTIC=1``.
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.allow_tf32 = not enabled  # PyTorch's default: True for convolutions
    torch.backends.cuda.matmul.allow_tf32 = False  # PyTorch's default for matmuls
