"""The named directions of a model and the files they come from.

:func:`load_direction` reads one direction from a file (format detected from the content):

* ``.pt`` torch zip files holding a tensor of shape ``(D,)``, ``(1, D)``, ``(L, D)`` or ``(1, L, D)``
  (InterFaceGAN / e4e boundaries), or a dict with ``mean (1, D)``, ``comp (K, 1, D)``, ``std (K,)``
  (e4e's GANSpace ``ffhq_pca.pt``). Loaded with ``weights_only=True`` on the CPU.
* ``.npy`` arrays of the same tensor shapes (InterFaceGAN's own boundaries are ``(1, 512)``).
* ``.safetensors`` files holding one tensor (or a tensor named ``vector``).

Per-layer files whose rows are all identical (e4e's ``pose.pt`` is ``(1, 18, 512)``) collapse to a
single W vector so that they apply to a generator of any depth. :func:`load_ganspace_pca` reads a
whole GANSpace PCA (:class:`GanSpacePCA`).

:class:`DirectionSet` is the native, self-describing store: a folder with ``directions.json``
(names, kinds, layer ranges, GANSpace parameters) and ``directions.safetensors`` (the tensors).
The directions themselves and how edits apply are in :mod:`dhr.editing.directions`.
"""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from dhr.editing.directions import (
    Direction,
    DirectionKind,
    GanSpaceMode,
    GanSpaceParams,
    Space,
    describe_value,
    parse_edit_spec,
)
from dhr.errors import CheckpointError, EditError

__all__ = ["DirectionSet", "GanSpacePCA", "load_direction", "load_ganspace_pca"]

logger = logging.getLogger(__name__)

_SET_FORMAT = "dhr-directions"
_SET_VERSION = 1


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
            raise CheckpointError(f"{source}: GANSpace '{key}' must be a float tensor, got {describe_value(value)}")
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
        raise CheckpointError(f"{path}: expected a GANSpace dict with mean/comp/std, got {describe_value(obj)}")
    return _pca_from_dict(obj, str(path))


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
        raise EditError(f"{path} is not a GANSpace PCA file (needs mean/comp/std), got {describe_value(obj)}")
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
        raise CheckpointError(f"{path}: expected a float tensor of shape (D,) or (L, D), got {describe_value(obj)}")
    vector, space = _vector_from_array(obj, path, collapse_identical=collapse_identical)
    if normalize:
        norms = vector.norm(dim=-1, keepdim=True)
        if bool((norms == 0).any()):
            raise EditError(f"{path}: cannot normalise a zero vector")
        vector = vector / norms
    return Direction(name or path.stem, vector, layers, space, str(path), kind or "vector")


# --------------------------------------------------------------------------------------------
# The named directions of a model


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
        folder = Path(folder)
        jpath, tpath = folder / "directions.json", folder / "directions.safetensors"
        for p in (jpath, tpath):
            if not p.is_file():
                raise CheckpointError(f"direction set {folder}: missing {p.name} (write one with DirectionSet.save)")
        from dhr.fileio import read_json

        try:
            meta = read_json(jpath, max_bytes=64 << 20)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"direction set {folder}: {e}; re-export it (DirectionSet.save)") from None
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
