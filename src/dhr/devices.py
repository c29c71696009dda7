"""Device choice at the edges (pipeline, CLI, web UI): library code follows its inputs' device."""

from __future__ import annotations

import contextlib
import os
import warnings

import torch

from dhr.checks import check_choice
from dhr.errors import ConfigError

__all__ = ["DEVICES", "PRECISIONS", "autocast", "native_bf16", "resolve_device", "use_deterministic_kernels"]

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
"""Arithmetic of the optimisation stages (``InvertConfig.precision``), see :func:`autocast`."""


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


def native_bf16(device: str | torch.device) -> bool:
    """Whether ``device`` computes bfloat16 convolutions and matmuls in hardware.

    CUDA: ``torch.cuda.is_bf16_supported()`` (Ampere and newer). CPU: AVX512-BF16 or AMX tiles (recent
    Xeon and EPYC); elsewhere oneDNN emulates bfloat16 and it is slower than fp32. MPS: False (PyTorch's
    MPS autocast support for bfloat16 depends on the macOS version; not measured).
    """
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        try:  # newer torch counts emulated bf16 (pre-Ampere) as supported unless asked not to
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:
            return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = (getattr(cpu, "_is_avx512_bf16_supported", None), getattr(cpu, "_is_amx_tile_supported", None))
        return any(bool(c()) for c in checks if callable(c))
    return False


def autocast(device: str | torch.device, precision: str = "fp32") -> contextlib.AbstractContextManager:
    """The context in which optimisation runs at ``precision`` on ``device``.

    ``fp32``: nothing (full precision). ``bf16``: ``torch.autocast(device.type, torch.bfloat16)``:
    convolutions and matrix products in bfloat16 (parameters, gradients, Adam's state and the loss
    reductions stay fp32), about 2x faster per convolution where :func:`native_bf16` holds (measured on
    this project's CPU, AVX512-BF16: DHR on a 20 M-parameter 64 px generator at the reference's
    budget 2.25x the faithful loop, final losses within 0.3 %; docs/performance.md "bfloat16"). On
    a device without native bfloat16 it warns (it still runs, slower).

    Raises:
        ConfigError: Unknown precision, or bf16 on a device type autocast does not support.
    """
    check_choice(precision, PRECISIONS, "precision")
    device = torch.device(device)
    if precision == "fp32":
        return contextlib.nullcontext()
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"precision='bf16' is not supported on device {device}; use precision='fp32'")
    if not native_bf16(device):
        warnings.warn(f"precision='bf16' on {device}: this device has no native bfloat16 arithmetic "
                      "(CPU: AVX512-BF16 or AMX; GPU: Ampere or newer), so it runs slower than fp32; "
                      "use precision='fp32'", RuntimeWarning, stacklevel=2)
    with warnings.catch_warnings(record=True) as caught:  # torch disables an unsupported autocast with a warning
        warnings.simplefilter("always")
        ctx = torch.autocast(device.type, dtype=torch.bfloat16)
    if not getattr(ctx, "_enabled", True):
        why = "; ".join(str(w.message) for w in caught) or "autocast is disabled"
        raise ConfigError(f"precision='bf16' is not supported by this PyTorch on {device} ({why}); "
                          "use precision='fp32'")
    return ctx
