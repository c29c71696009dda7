"""Argument checks used at public boundaries (shape contracts, choices)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

from dhr.errors import ConfigError, ShapeError

__all__ = ["check_shape", "check_choice"]


def check_shape(x: torch.Tensor, dims: Sequence[str | int], name: str = "tensor") -> dict[str, int]:
    """Checks that ``x`` matches a symbolic shape and returns the bound symbols.

    Args:
        x: The tensor to check.
        dims: One entry per dimension: an int (exact size), a digit string (exact size), a
            symbol such as ``"B"`` (any size, bound consistently) or ``"*"`` (anything).
        name: Argument name used in the error message.

    Returns:
        A dict from symbol to the size it was bound to.

    Raises:
        ShapeError: If the rank or a size does not match.
    """
    if not isinstance(x, torch.Tensor):
        raise ShapeError(f"{name} must be a torch.Tensor of shape {list(dims)}, got {type(x).__name__}")
    if x.ndim != len(dims):
        raise ShapeError(f"{name} must have shape {list(dims)} ({len(dims)} dims), got {list(x.shape)}")
    bound: dict[str, int] = {}
    for axis, (want, got) in enumerate(zip(dims, x.shape)):
        if isinstance(want, int) or (isinstance(want, str) and want.isdigit()):
            if int(want) != got:
                raise ShapeError(f"{name} must have shape {list(dims)}, got {list(x.shape)} (dim {axis})")
        elif want != "*":
            if want in bound and bound[want] != got:
                raise ShapeError(
                    f"{name} must have shape {list(dims)}: '{want}' is {bound[want]} and {got}, got {list(x.shape)}"
                )
            bound[want] = got
    return bound


def check_choice(value: object, allowed: Iterable[object], name: str) -> None:
    """Raises :class:`ConfigError` unless ``value`` is one of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not valid; choose one of {allowed}")


def check_non_negative(obj: object, names: Iterable[str]) -> None:
    """Raises ConfigError unless each named attribute of ``obj`` is a finite number >= 0."""
    for name in names:
        v = getattr(obj, name)
        if not math.isfinite(v) or v < 0:
            raise ConfigError(f"{name}={v} must be a finite number >= 0")
