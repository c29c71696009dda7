"""Typed edit directions, the loaders for their file formats, and edit application on W+ codes.

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

File formats read by :func:`load_direction` (format detected from the content):

* ``.pt`` torch zip files holding a tensor of shape ``(D,)``, ``(1, D)``, ``(L, D)`` or ``(1, L, D)``
  (InterFaceGAN / e4e boundaries), or a dict with ``mean (1, D)``, ``comp (K, 1, D)``, ``std (K,)``
  (e4e's GANSpace ``ffhq_pca.pt``). Loaded with ``weights_only=True`` on the CPU.
* ``.npy`` arrays of the same tensor shapes (InterFaceGAN's own boundaries are ``(1, 512)``).
* ``.safetensors`` files holding one tensor (or a tensor named ``vector``).

Per-layer files whose rows are all identical (e4e's ``pose.pt`` is ``(1, 18, 512)``) collapse to a
single W vector so that they apply to a generator of any depth.

:class:`DirectionSet` is the native, self-describing store: a folder with ``directions.json``
(names, kinds, layer ranges, GANSpace parameters) and ``directions.safetensors`` (the tensors).
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import pickle
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from dhr.checks import check_shape
from dhr.errors import CheckpointError, EditError

__all__ = [
    "MAX_STRENGTH",
    "check_strength",
    "Direction",
    "DirectionKind",
    "DirectionSet",
    "GanSpaceMode",
    "GanSpaceParams",
    "GanSpacePCA",
    "Space",
    "apply_edits",
    "load_direction",
    "load_ganspace_pca",
    "parse_edit_spec",
    "sweep_codes",
    "validate_edits",
]

logger = logging.getLogger(__name__)

DirectionKind = Literal["interfacegan", "ganspace", "sefa", "vector"]
Space = Literal["w", "w+"]
GanSpaceMode = Literal["absolute", "increment"]
_KINDS = ("interfacegan", "ganspace", "sefa", "vector")
_SPACES = ("w", "w+")
_GANSPACE_MODES = ("absolute", "increment")
MAX_STRENGTH = 100.0
"""Largest edit strength accepted (in units of the direction; useful edits are within about ±5)."""
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_SET_FORMAT = "dhr-directions"
_SET_VERSION = 1


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
            raise EditError(f"GANSpace mean must be a (D,) tensor, got {_describe(self.mean)}")
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
            raise EditError(f"direction {self.name!r}: vector must be a float tensor, got {_describe(v)}")
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
    except (TypeError, ValueError):
        raise EditError(f"{what}: strength {strength!r} is not a number") from None
    if not math.isfinite(strength) or abs(strength) > MAX_STRENGTH:
        raise EditError(f"{what}: strength {strength!r} must be a finite number between -{MAX_STRENGTH:g} and "
                        f"+{MAX_STRENGTH:g} (useful edits are within about ±5)")
    return strength


# --------------------------------------------------------------------------------------------
# GANSpace PCA record


@dataclass(frozen=True, eq=False)
class GanSpacePCA:
    """PCA of W (GANSpace), the content of e4e's ``ffhq_pca.pt``.

    Attributes:
        mean: ``(D,)`` mean of W.
        comp: ``(K, D)`` unit principal axes, by decreasing explained variance.
        std: ``(K,)`` standard deviation of W along each axis.
    """

    mean: torch.Tensor
    comp: torch.Tensor
    std: torch.Tensor

    def __post_init__(self) -> None:
        if self.mean.ndim != 1 or self.comp.ndim != 2 or self.std.ndim != 1:
            raise EditError(
                f"GANSpace PCA needs mean (D,), comp (K, D), std (K,); got {list(self.mean.shape)}, "
                f"{list(self.comp.shape)}, {list(self.std.shape)}"
            )
        if self.comp.shape[1] != self.mean.shape[0] or self.comp.shape[0] != self.std.shape[0]:
            raise EditError(
                f"GANSpace PCA shapes disagree: mean {list(self.mean.shape)}, comp {list(self.comp.shape)}, "
                f"std {list(self.std.shape)}"
            )

    @property
    def num_components(self) -> int:
        return int(self.comp.shape[0])

    def direction(self, component: int, layers: tuple[int, int] | None = None, *,
                  mode: GanSpaceMode = "absolute", name: str | None = None, source: str = "") -> Direction:
        """The :class:`Direction` for e4e's ``(component, start, end)`` edit.

        Args:
            component: Index into ``comp``.
            layers: W+ range ``[start, end)``; None = every layer.
            mode: ``"absolute"`` (e4e: strength = target coordinate) or ``"increment"``.
            name: Defaults to ``ganspace_{component}`` (plus ``_{start}_{end}`` with layers).
            source: Provenance string.
        """
        if not 0 <= int(component) < self.num_components:
            raise EditError(
                f"GANSpace component {component} is out of range; the PCA has {self.num_components} components"
            )
        c = int(component)
        if name is None:
            name = f"ganspace_{c}" if layers is None else f"ganspace_{c}_{layers[0]}_{layers[1]}"
        params = GanSpaceParams(component=c, mean=self.mean, std=float(self.std[c]), mode=mode)
        return Direction(name, self.comp[c], layers, "w", source, "ganspace", params)

    def to_e4e_dict(self) -> dict[str, torch.Tensor]:
        """e4e's file structure: ``mean (1, D)``, ``comp (K, 1, D)``, ``std (K,)``, float32."""
        return {
            "mean": self.mean.detach().float().cpu()[None].contiguous(),
            "comp": self.comp.detach().float().cpu()[:, None].contiguous(),
            "std": self.std.detach().float().cpu().contiguous(),
        }

    def save(self, path: str | Path) -> None:
        """Writes e4e's ``ffhq_pca.pt`` format (a torch zip dict readable with ``weights_only=True``)."""
        torch.save(self.to_e4e_dict(), Path(path))


def _pca_from_dict(d: Mapping[str, object], source: str) -> GanSpacePCA:
    missing = [k for k in ("mean", "comp", "std") if k not in d]
    if missing:
        raise CheckpointError(f"{source}: GANSpace PCA dict lacks {missing}; it needs mean, comp and std")
    tensors = {}
    for key in ("mean", "comp", "std"):
        value = d[key]
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise CheckpointError(f"{source}: GANSpace '{key}' must be a float tensor, got {_describe(value)}")
        tensors[key] = value.detach().float().cpu()
    mean, comp, std = tensors["mean"], tensors["comp"], tensors["std"]
    mean = mean.reshape(-1)
    std = std.reshape(-1)
    if comp.ndim == 3 and comp.shape[1] == 1:  # e4e: (K, 1, D)
        comp = comp[:, 0]
    if comp.ndim != 2:
        raise CheckpointError(f"{source}: GANSpace 'comp' must be (K, 1, D) or (K, D), got {list(comp.shape)}")
    try:
        return GanSpacePCA(mean, comp, std)
    except EditError as e:
        raise CheckpointError(f"{source}: {e}") from None


def load_ganspace_pca(path: str | Path) -> GanSpacePCA:
    """Reads a GANSpace PCA file (e4e ``ffhq_pca.pt``: dict ``mean (1,D)``, ``comp (K,1,D)``, ``std (K,)``).

    Also accepts ``.npz`` with the same keys.

    Raises:
        CheckpointError: If the file is unreadable or not a PCA dict.
    """
    path = Path(path)
    obj = _read_any(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a GANSpace dict with mean/comp/std, got {_describe(obj)}")
    return _pca_from_dict(obj, str(path))


# --------------------------------------------------------------------------------------------
# Loaders


def _describe(x: object) -> str:
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return f"{type(x).__name__} of shape {list(x.shape)} and dtype {x.dtype}"
    if isinstance(x, Mapping):
        return f"dict with keys {sorted(map(str, x))}"
    return type(x).__name__


def _read_any(path: Path) -> object:
    """Reads a .pt / .pth / .npy / .npz / .safetensors file into tensors, arrays or a dict of them."""
    if not path.is_file():
        raise CheckpointError(f"direction file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix in (".pt", ".pth", ".bin"):
            return torch.load(path, weights_only=True, map_location="cpu")
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
    except (OSError, RuntimeError, ValueError, EOFError) as e:
        raise CheckpointError(
            f"cannot read direction file {path}: {e}. Expected a torch zip (.pt, loaded with weights_only=True), "
            ".npy, .npz or .safetensors file"
        ) from e
    except pickle.UnpicklingError as e:
        if "unsupported global" not in str(e).lower():  # corrupt or not a torch file at all
            raise CheckpointError(f"cannot read direction file {path}: {e}") from e
        raise CheckpointError(  # torch.load(weights_only=True) refused arbitrary Python objects
            f"{path} holds Python objects that are unsafe to load; only plain tensors and dicts of tensors "
            "are accepted (re-save it with torch.save of a tensor)"
        ) from e
    raise CheckpointError(f"direction file {path}: unknown extension {suffix!r}; use .pt, .npy, .npz or .safetensors")


def _vector_from_array(arr: torch.Tensor, path: Path, *, collapse_identical: bool) -> tuple[torch.Tensor, Space]:
    """Normalises a boundary tensor to ``(D,)`` ("w") or ``(L, D)`` ("w+")."""
    t = arr.detach().float().cpu()
    if t.ndim == 3 and t.shape[0] == 1:
        t = t[0]
    if t.ndim == 2 and t.shape[0] == 1:
        t = t[0]
    if t.ndim == 1:
        return t.contiguous(), "w"
    if t.ndim == 2:
        if collapse_identical and bool((t == t[:1]).all()):
            logger.debug("%s: %d identical rows collapsed to one W vector", path, t.shape[0])
            return t[0].contiguous(), "w"
        return t.contiguous(), "w+"
    raise CheckpointError(
        f"{path}: a direction tensor must have shape (D,), (1, D), (L, D) or (1, L, D); got {list(arr.shape)}"
    )


def load_direction(path: str | Path, *, name: str | None = None, kind: DirectionKind | None = None,
                   layers: tuple[int, int] | None = None, component: int | None = None,
                   mode: GanSpaceMode = "absolute", key: str | None = None, normalize: bool = False,
                   collapse_identical: bool = True) -> Direction:
    """Loads one direction, detecting the file format from its content.

    Args:
        path: ``.pt`` (torch zip), ``.npy``, ``.npz`` or ``.safetensors`` file.
        name: Direction name; defaults to the file stem (plus the component for GANSpace).
        kind: Label for a plain tensor (``"interfacegan"``, ``"sefa"`` or ``"vector"``, the default).
            A GANSpace PCA dict is always ``"ganspace"``.
        layers: W+ range ``[start, stop)``; None = all layers (GANSpace: e4e's ``start, end``).
        component: GANSpace component index (required for a PCA file).
        mode: GANSpace rule: ``"absolute"`` (e4e) or ``"increment"``.
        key: Tensor name inside a dict / ``.safetensors`` file holding several tensors.
        normalize: Rescale the vector (each row for ``w+``) to unit L2 norm.
        collapse_identical: Collapse a per-layer tensor whose rows are all equal to one W vector.

    Returns:
        The :class:`Direction` (tensors float32 on the CPU).

    Raises:
        CheckpointError: If the file cannot be read or has an unexpected structure.
        EditError: On inconsistent arguments (e.g. a PCA file without ``component``).

    Example:
        >>> age = load_direction("age.pt", kind="interfacegan")          # (512,) W direction
        >>> eyes = load_direction("ffhq_pca.pt", component=54, layers=(7, 8))
    """
    path = Path(path)
    obj = _read_any(path)
    if isinstance(obj, Mapping) and {"mean", "comp", "std"} <= set(obj):
        if kind not in (None, "ganspace"):
            raise EditError(f"{path} is a GANSpace PCA file; kind={kind!r} does not apply")
        if component is None:
            raise EditError(
                f"{path} is a GANSpace PCA file; pass component=<index> (and layers=(start, end)), "
                "e.g. component=54, layers=(7, 8) for e4e's eye openness"
            )
        pca = _pca_from_dict(obj, str(path))
        return pca.direction(component, layers, mode=mode, name=name, source=str(path))
    if component is not None or kind == "ganspace":
        raise EditError(f"{path} is not a GANSpace PCA file (needs mean/comp/std), got {_describe(obj)}")
    if isinstance(obj, Mapping):
        if key is None:
            if len(obj) == 1:
                key = next(iter(obj))
            elif "vector" in obj:
                key = "vector"
            else:
                raise CheckpointError(
                    f"{path} holds several tensors {sorted(map(str, obj))}; pass key=<name> to choose one"
                )
        if key not in obj:
            raise CheckpointError(f"{path} has no tensor {key!r}; it holds {sorted(map(str, obj))}")
        obj = obj[key]
    if isinstance(obj, np.ndarray):
        if not np.issubdtype(obj.dtype, np.floating):
            raise CheckpointError(f"{path}: direction array must be float, got dtype {obj.dtype}")
        obj = torch.from_numpy(np.ascontiguousarray(obj))
    if not isinstance(obj, torch.Tensor) or not obj.is_floating_point():
        raise CheckpointError(f"{path}: expected a float tensor of shape (D,) or (L, D), got {_describe(obj)}")
    vector, space = _vector_from_array(obj, path, collapse_identical=collapse_identical)
    if normalize:
        norms = vector.norm(dim=-1, keepdim=True)
        if bool((norms == 0).any()):
            raise EditError(f"{path}: cannot normalise a zero vector")
        vector = vector / norms
    return Direction(name or path.stem, vector, layers, space, str(path), kind or "vector")


# --------------------------------------------------------------------------------------------
# Registry


class DirectionSet(Mapping[str, Direction]):
    """The directions of one model, by name (read-only mapping).

    Stored natively as a folder with ``directions.json`` (format, version, and per direction:
    kind, space, layers, source, GANSpace parameters) and ``directions.safetensors``
    (``{name}.vector`` and, for GANSpace, ``{name}.mean``).

    Example:
        >>> ds = DirectionSet([load_direction("age.pt", kind="interfacegan")])
        >>> ds.save("dirs/"); ds = DirectionSet.load("dirs/")
        >>> ws2 = apply_edits(ws, ds.resolve(["age=+2"]))
    """

    def __init__(self, directions: Sequence[Direction] | Mapping[str, Direction] = ()) -> None:
        items = list(directions.values()) if isinstance(directions, Mapping) else list(directions)
        self._items: dict[str, Direction] = {}
        for d in items:
            if not isinstance(d, Direction):
                raise EditError(f"DirectionSet holds Direction objects, got {type(d).__name__}")
            if d.name in self._items:
                raise EditError(f"direction name {d.name!r} appears twice; rename one (Direction.renamed)")
            self._items[d.name] = d

    def __getitem__(self, name: str) -> Direction:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise EditError(f"unknown direction {name!r}; known directions: {known}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"DirectionSet({sorted(self._items)})"

    def names(self) -> list[str]:
        """Sorted names."""
        return sorted(self._items)

    def resolve(self, specs: Sequence[str]) -> list[tuple[Direction, float]]:
        """Turns edit specs (``["age=+2", "smile=-1"]``) into ``(Direction, strength)`` pairs."""
        if isinstance(specs, str):
            specs = [specs]
        out = []
        for spec in specs:
            name, strength = parse_edit_spec(spec)
            out.append((self[name], strength))
        return out

    def save(self, folder: str | Path) -> None:
        """Writes ``directions.json`` and ``directions.safetensors`` into ``folder`` (created if needed)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, torch.Tensor] = {}
        entries: dict[str, dict] = {}
        for name, d in self._items.items():
            tensors[f"{name}.vector"] = d.vector.detach().float().cpu().clone().contiguous()
            entry: dict = {
                "kind": d.kind,
                "space": d.space,
                "layers": list(d.layers) if d.layers is not None else None,
                "source": d.source,
            }
            if d.ganspace is not None:
                tensors[f"{name}.mean"] = d.ganspace.mean.detach().float().cpu().clone().contiguous()  # GANSpace directions share one mean
                entry["ganspace"] = {"component": d.ganspace.component, "std": d.ganspace.std, "mode": d.ganspace.mode}
            entries[name] = entry
        meta = {"format": _SET_FORMAT, "version": _SET_VERSION, "directions": entries}
        save_file(tensors, str(folder / "directions.safetensors"))
        (folder / "directions.json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> DirectionSet:
        """Reads a folder written by :meth:`save`.

        Raises:
            CheckpointError: If a file is missing or inconsistent.
        """
        from safetensors.torch import load_file

        folder = Path(folder)
        jpath, tpath = folder / "directions.json", folder / "directions.safetensors"
        for p in (jpath, tpath):
            if not p.is_file():
                raise CheckpointError(f"direction set {folder}: missing {p.name} (write one with DirectionSet.save)")
        try:
            meta = json.loads(jpath.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{jpath} is not valid JSON: {e}") from e
        if not isinstance(meta, dict) or meta.get("format") != _SET_FORMAT:
            raise CheckpointError(f"{jpath} is not a dhr direction set (format must be {_SET_FORMAT!r})")
        if meta.get("version") != _SET_VERSION:
            raise CheckpointError(f"{jpath}: unsupported version {meta.get('version')!r}; expected {_SET_VERSION}")
        tensors = load_file(str(tpath), device="cpu")
        directions = []
        entries = meta.get("directions")
        if not isinstance(entries, dict) or not all(isinstance(e, dict) for e in entries.values()):
            raise CheckpointError(f"{jpath}: 'directions' must map each name to an object")
        for name, entry in entries.items():
            vkey = f"{name}.vector"
            if vkey not in tensors:
                raise CheckpointError(f"{tpath} lacks tensor {vkey!r} listed in {jpath.name}")
            try:
                gp = None
                if entry.get("ganspace") is not None:
                    g = entry["ganspace"]
                    mkey = f"{name}.mean"
                    if mkey not in tensors:
                        raise CheckpointError(f"{tpath} lacks tensor {mkey!r} of GANSpace direction {name!r}")
                    gp = GanSpaceParams(int(g["component"]), tensors[mkey], float(g["std"]), g.get("mode", "absolute"))
                layers = entry.get("layers")
                directions.append(Direction(
                    name, tensors[vkey], tuple(layers) if layers is not None else None, entry.get("space", "w"),
                    entry.get("source", ""), entry.get("kind", "vector"), gp,
                ))
            except (EditError, KeyError, TypeError) as e:
                raise CheckpointError(f"{jpath}: entry {name!r} is invalid: {e}") from e
        return cls(directions)
