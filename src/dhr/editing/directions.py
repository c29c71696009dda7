"""Typed edit directions and edit application on W+ codes.

An edit moves a W+ code ``ws (B, L, D)`` along a :class:`Direction` by a strength. Three families
are supported, all of which end up as a direction vector in W:

* **InterFaceGAN** boundaries (``kind="interfacegan"``): the unit normal of a linear attribute
  boundary; ``ws' = ws + strength * n`` on the direction's layers (all by default).
* **GANSpace** components (``kind="ganspace"``): principal axis ``comp[idx]`` of W with its
  standard deviation ``std[idx]`` and the PCA mean. Two rules (see :class:`GanSpaceParams`):
  ``"absolute"`` (e4e's convention: ``strength`` is the target coordinate, in units of
  ``std[idx]``, measured on layer 0) and ``"increment"`` (``strength`` standard deviations added).
* **SeFa** eigenvectors and plain **vectors** (``kind="sefa"`` / ``"vector"``): ``ws + strength * v``.

A direction is either one vector ``(D,)`` (``space="w"``, the same offset on every layer it
touches) or one vector per W+ layer ``(L, D)`` (``space="w+"``). ``layers=(start, stop)`` limits
it to W+ indices ``start <= i < stop``.

The file formats (:func:`load_direction`, :func:`load_ganspace_pca`) and :class:`DirectionSet`,
the named directions of a model, live in :mod:`dhr.editing.registry`; they are re-exported here
(``from dhr.editing.directions import DirectionSet`` keeps working). Discovery of new directions
is in :mod:`dhr.editing.sefa`, :mod:`dhr.editing.ganspace` and :mod:`dhr.editing.interfacegan`.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from dhr.checks import check_shape
from dhr.errors import EditError

__all__ = [
    "MAX_STRENGTH",
    "check_strength",
    "Direction",
    "DirectionKind",
    "GanSpaceMode",
    "GanSpaceParams",
    "Space",
    "apply_edits",
    "describe_value",
    "parse_edit_spec",
    "sweep_codes",
    "validate_edits",
]

DirectionKind = Literal["interfacegan", "ganspace", "sefa", "vector"]
Space = Literal["w", "w+"]
GanSpaceMode = Literal["absolute", "increment"]
_KINDS = ("interfacegan", "ganspace", "sefa", "vector")
_SPACES = ("w", "w+")
_GANSPACE_MODES = ("absolute", "increment")
MAX_STRENGTH = 100.0
"""Largest edit strength accepted (in units of the direction; useful edits are within about ±5)."""
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


# --------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True, eq=False)
class GanSpaceParams:
    """What a GANSpace edit needs beyond its component vector (e4e convention).

    Attributes:
        component: Index ``idx`` of the principal component in the PCA file.
        mean: ``(D,)`` PCA mean of W.
        std: Standard deviation of W along ``comp[idx]`` (``std[idx]``), > 0.
        mode: ``"absolute"``: the strength is the target coordinate ``c*``; with
            ``c = (ws[:, 0] - mean) . comp[idx] / std`` (layer 0 only) the code moves by
            ``(c* - c) * comp[idx] * std`` on the direction's layers, as e4e does.
            ``"increment"``: the code moves by ``strength * comp[idx] * std``.
    """

    component: int
    mean: torch.Tensor
    std: float
    mode: GanSpaceMode = "absolute"

    def __post_init__(self) -> None:
        if self.mode not in _GANSPACE_MODES:
            raise EditError(f"GANSpace mode={self.mode!r} is not valid; choose one of {list(_GANSPACE_MODES)}")
        if not isinstance(self.mean, torch.Tensor) or self.mean.ndim != 1:
            raise EditError(f"GANSpace mean must be a (D,) tensor, got {describe_value(self.mean)}")
        if not (math.isfinite(float(self.std)) and float(self.std) > 0):
            raise EditError(f"GANSpace std must be a finite number > 0, got {self.std!r}")
        if int(self.component) < 0:
            raise EditError(f"GANSpace component must be >= 0, got {self.component}")
        object.__setattr__(self, "std", float(self.std))
        object.__setattr__(self, "component", int(self.component))


@dataclass(frozen=True, eq=False)
class Direction:
    """A named edit direction in W or W+.

    Attributes:
        name: Identifier used in edit specs (``"smile=+1"``): letters, digits, ``_ . -``.
        vector: ``(D,)`` for ``space="w"`` or ``(L, D)`` for ``space="w+"`` (one row per W+ layer),
            float, finite.
        layers: W+ indices ``[start, stop)`` the edit touches; ``None`` = every layer.
        space: ``"w"`` or ``"w+"`` (must match ``vector.ndim``).
        source: Provenance, e.g. the file it was read from or ``"sefa(layers=0:4)"``.
        kind: ``"interfacegan"``, ``"ganspace"``, ``"sefa"`` or ``"vector"``.
        ganspace: GANSpace parameters; required when ``kind="ganspace"``, else None.

    Example:
        >>> d = Direction("smile", torch.randn(512))
        >>> ws2 = apply_edits(ws, [(d, 1.5)])  # ws: (B, 18, 512)
    """

    name: str
    vector: torch.Tensor
    layers: tuple[int, int] | None = None
    space: Space = "w"
    source: str = ""
    kind: DirectionKind = "vector"
    ganspace: GanSpaceParams | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise EditError(
                f"direction name {self.name!r} is not valid: use letters, digits, '_', '.' or '-' "
                "(not starting with '.' or '-')"
            )
        if self.kind not in _KINDS:
            raise EditError(f"direction {self.name!r}: kind={self.kind!r} is not one of {list(_KINDS)}")
        if self.space not in _SPACES:
            raise EditError(f"direction {self.name!r}: space={self.space!r} is not one of {list(_SPACES)}")
        v = self.vector
        if not isinstance(v, torch.Tensor) or not v.is_floating_point():
            raise EditError(f"direction {self.name!r}: vector must be a float tensor, got {describe_value(v)}")
        want_ndim = 1 if self.space == "w" else 2
        if v.ndim != want_ndim:
            raise EditError(
                f"direction {self.name!r}: space={self.space!r} needs a vector of shape "
                f"{'(D,)' if want_ndim == 1 else '(L, D)'}, got {list(v.shape)}"
            )
        if v.numel() == 0 or not bool(torch.isfinite(v).all()):
            raise EditError(f"direction {self.name!r}: vector is empty or holds NaN/inf values")
        if self.layers is not None:
            try:
                start, stop = (int(x) for x in self.layers)
            except (TypeError, ValueError):
                raise EditError(
                    f"direction {self.name!r}: layers must be a pair of ints (start, stop), got {self.layers!r}"
                ) from None
            if not 0 <= start < stop:
                raise EditError(
                    f"direction {self.name!r}: layers=({start}, {stop}) must satisfy 0 <= start < stop "
                    "(stop is exclusive)"
                )
            if self.space == "w+" and stop > v.shape[0]:
                raise EditError(
                    f"direction {self.name!r}: layers=({start}, {stop}) exceed the {v.shape[0]} rows of its vector"
                )
            object.__setattr__(self, "layers", (start, stop))
        if self.kind == "ganspace":
            if self.ganspace is None:
                raise EditError(f"direction {self.name!r}: kind='ganspace' needs ganspace=GanSpaceParams(...)")
            if self.space != "w" or self.ganspace.mean.shape[0] != v.shape[0]:
                raise EditError(
                    f"direction {self.name!r}: a GANSpace direction is a (D,) W vector with a (D,) mean; "
                    f"got vector {list(v.shape)} and mean {list(self.ganspace.mean.shape)}"
                )
        elif self.ganspace is not None:
            raise EditError(f"direction {self.name!r}: ganspace parameters given but kind={self.kind!r}")

    @property
    def dim(self) -> int:
        """Width D of W the direction lives in."""
        return int(self.vector.shape[-1])

    @property
    def num_layers(self) -> int | None:
        """Number of W+ layers a ``w+`` direction was made for; None for ``w``."""
        return int(self.vector.shape[0]) if self.space == "w+" else None

    def layer_range(self, num_ws: int) -> tuple[int, int]:
        """The ``[start, stop)`` W+ range on a model with ``num_ws`` layers."""
        return (0, num_ws) if self.layers is None else self.layers

    def with_layers(self, layers: tuple[int, int] | None) -> Direction:
        """A copy restricted to other W+ layers."""
        return Direction(self.name, self.vector, layers, self.space, self.source, self.kind, self.ganspace)

    def renamed(self, name: str) -> Direction:
        """A copy with another name."""
        return Direction(name, self.vector, self.layers, self.space, self.source, self.kind, self.ganspace)


# --------------------------------------------------------------------------------------------
# Applying edits


def _check_strength(direction: Direction, strength: object) -> float:
    if isinstance(strength, torch.Tensor) and strength.numel() == 1:
        strength = strength.item()
    elif isinstance(strength, np.ndarray) and strength.size == 1:
        strength = strength.item()
    if isinstance(strength, bool) or not isinstance(strength, numbers.Real):
        raise EditError(
            f"edit {direction.name!r}: strength must be a real number, got {type(strength).__name__} {strength!r}"
        )
    value = float(strength)
    if not math.isfinite(value):
        raise EditError(f"edit {direction.name!r}: strength must be finite, got {value}")
    return value


def validate_edits(ws: torch.Tensor, edits: Sequence[tuple[Direction, float]]) -> list[tuple[Direction, float]]:
    """Checks every edit against ``ws`` without changing anything (call before rendering).

    Args:
        ws: ``(B, L, D)`` W+ codes.
        edits: ``(direction, strength)`` pairs.

    Returns:
        The edits with strengths converted to ``float``.

    Raises:
        ShapeError: If ``ws`` is not a ``(B, L, D)`` float tensor.
        EditError: On a dimension mismatch (D), a layer count mismatch (``w+`` directions made for
            another depth), a layer range outside the model, or a non-numeric / non-finite strength.
    """
    dims = check_shape(ws, ["B", "L", "D"], "ws")
    if not ws.is_floating_point():
        raise EditError(f"ws must be a float tensor, got dtype {ws.dtype}")
    num_ws, dim = dims["L"], dims["D"]
    if isinstance(edits, (str, bytes)) or not isinstance(edits, Sequence):
        raise EditError(f"edits must be a sequence of (Direction, strength) pairs, got {type(edits).__name__}")
    checked: list[tuple[Direction, float]] = []
    for i, item in enumerate(edits):
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], Direction)):
            raise EditError(f"edits[{i}] must be a (Direction, strength) pair, got {item!r}")
        direction, strength = item
        value = _check_strength(direction, strength)
        if direction.dim != dim:
            raise EditError(
                f"edit {direction.name!r}: direction has D={direction.dim} but the codes have D={dim}; "
                f"it was made for another model (source: {direction.source or 'unknown'})"
            )
        if direction.space == "w+" and direction.num_layers != num_ws:
            raise EditError(
                f"edit {direction.name!r}: per-layer direction has {direction.num_layers} W+ layers but the "
                f"model has {num_ws}; use a direction made for this model (source: {direction.source or 'unknown'})"
            )
        start, stop = direction.layer_range(num_ws)
        if stop > num_ws:
            raise EditError(
                f"edit {direction.name!r}: layers [{start}, {stop}) lie outside the model's W+ layers "
                f"[0, {num_ws}); pick a range with stop <= {num_ws}"
            )
        checked.append((direction, value))
    return checked


def _delta(ws: torch.Tensor, direction: Direction, strength: float) -> torch.Tensor:
    """Offset ``(B, stop-start, D)`` or broadcastable to it, for one edit on ``ws``."""
    start, stop = direction.layer_range(ws.shape[1])
    v = direction.vector.to(device=ws.device, dtype=ws.dtype)
    if direction.space == "w+":
        return strength * v[start:stop][None]
    if direction.kind == "ganspace":
        gp = direction.ganspace
        assert gp is not None  # guaranteed by Direction.__post_init__
        if gp.mode == "absolute":
            mean = gp.mean.to(device=ws.device, dtype=ws.dtype)
            coord = ((ws[:, 0] - mean) * v).sum(-1) / gp.std  # (B,)
            return ((strength - coord) * gp.std)[:, None, None] * v[None, None]
        return (strength * gp.std) * v[None, None]
    return strength * v[None, None]


def apply_edits(ws: torch.Tensor, edits: Sequence[tuple[Direction, float]]) -> torch.Tensor:
    """Applies several edits to W+ codes, in order.

    All edits are validated before any is applied. Edits compose sequentially: each sees the
    codes produced by the ones before it. Plain vector edits commute; an ``"absolute"`` GANSpace
    edit measures its coordinate on the codes as they are when it runs.

    Args:
        ws: ``(B, L, D)`` W+ codes (float; device and dtype are kept).
        edits: ``(direction, strength)`` pairs. Strength is a finite real number.

    Returns:
        ``(B, L, D)`` edited codes (a new tensor; ``ws`` is not modified). Differentiable in ``ws``.

    Raises:
        ShapeError: If ``ws`` is not ``(B, L, D)``.
        EditError: See :func:`validate_edits`.

    Example:
        >>> ws2 = apply_edits(ws, [(smile, 1.5), (age, -2.0)])
    """
    checked = validate_edits(ws, edits)
    out = ws.clone()
    for direction, strength in checked:
        start, stop = direction.layer_range(ws.shape[1])
        delta = _delta(out, direction, strength)
        out = torch.cat([out[:, :start], out[:, start:stop] + delta, out[:, stop:]], dim=1)
    return out


def sweep_codes(ws: torch.Tensor, direction: Direction, strengths: Sequence[float]) -> list[torch.Tensor]:
    """Codes for a strength sweep along one direction (e.g. the columns of a sweep grid).

    Args:
        ws: ``(B, L, D)`` W+ codes.
        direction: The direction.
        strengths: Strengths, e.g. ``[-3, -1.5, 0, 1.5, 3]``; all validated before any is applied.

    Returns:
        One ``(B, L, D)`` tensor per strength, in order.
    """
    checked = validate_edits(ws, [(direction, s) for s in strengths])
    return [apply_edits(ws, [edit]) for edit in checked]


# --------------------------------------------------------------------------------------------
# Edit specs


def parse_edit_spec(spec: str) -> tuple[str, float]:
    """Parses ``"name=strength"`` (e.g. ``"age=+2"``, ``"smile=-1.5"``, ``"pose = 3e-1"``).

    Returns:
        ``(name, strength)``.

    Raises:
        EditError: If the syntax is wrong, the name is invalid or the strength is not a finite number.
    """
    if not isinstance(spec, str):
        raise EditError(f"edit spec must be a string like 'smile=+1.5', got {type(spec).__name__}")
    if spec.count("=") != 1:
        raise EditError(f"edit spec {spec!r} must have the form NAME=STRENGTH, e.g. 'age=+2' or 'smile=-1.5'")
    name, value = (part.strip() for part in spec.split("="))
    if not _NAME_RE.match(name):
        raise EditError(
            f"edit spec {spec!r}: name {name!r} is not valid (letters, digits, '_', '.', '-'); e.g. 'age=+2'"
        )
    try:
        strength = float(value)
    except ValueError:
        raise EditError(f"edit spec {spec!r}: strength {value!r} is not a number; e.g. 'age=+2'") from None
    return name, check_strength(strength, f"edit spec {spec!r}")


def check_strength(strength: float, what: str = "strength") -> float:
    """Returns ``strength`` as a float when finite and within ±:data:`MAX_STRENGTH`.

    Raises:
        EditError: Naming ``what``, the value and the range.
    """
    try:
        strength = float(strength)
    except OverflowError:  # an int too large for a float
        raise EditError(f"{what}: strength {strength!r:.40} must be a finite number between -{MAX_STRENGTH:g} and "
                        f"+{MAX_STRENGTH:g}") from None
    except (TypeError, ValueError):
        raise EditError(f"{what}: strength {strength!r} is not a number") from None
    if not math.isfinite(strength) or abs(strength) > MAX_STRENGTH:
        raise EditError(f"{what}: strength {strength!r} must be a finite number between -{MAX_STRENGTH:g} and "
                        f"+{MAX_STRENGTH:g} (useful edits are within about ±5)")
    return strength


def describe_value(x: object) -> str:
    """A short description of a value for error messages: type, shape and dtype of an array, keys of a dict."""
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return f"{type(x).__name__} of shape {list(x.shape)} and dtype {x.dtype}"
    if isinstance(x, Mapping):
        return f"dict with keys {sorted(map(str, x))}"
    return type(x).__name__


_MOVED = frozenset({"DirectionSet", "GanSpacePCA", "load_direction", "load_ganspace_pca"})


def __getattr__(name: str) -> Any:
    """The names that moved to :mod:`dhr.editing.registry`, resolved on first use (the registry
    imports this module, so a top-level import here would be circular)."""
    if name in _MOVED:
        from dhr.editing import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
