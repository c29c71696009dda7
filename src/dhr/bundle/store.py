"""Result bundles: one inversion saved as ``<stem>.safetensors`` + ``<stem>.json``.

The tensor file holds the W+ code, the optimised feature f*, its mask, the full-resolution
domain mask, the weight delta θ* - θ (only the tensors that changed, in the storage formats of
:mod:`dhr.bundle.codec`), the aligned target as uint8 (``(3, R, R)``, a quarter of fp32; exact for
targets made from 8-bit crops, as the pipeline's) and optionally the final image. The final image
is re-rendered on load when the generator is given (:func:`load_bundle`), which reproduces a
stored result's image (:func:`dhr.bundle.codec.as_stored`). The JSON sidecar describes everything
needed to trust and reuse it: method, the render spec (``render``: noise mode, skip freezing,
storage formats), configuration, sha256 of the input and of the model, library version, timings,
loss curves, tensor dtypes and, for pipeline results, the alignment (photo -> crop matrix,
landmarks, crop size) and the source photo's path and sha256 (``meta.alignment``).

Bundles of version 2 (before the render spec was typed) kept the noise mode and skip freezing in
the sidecar's ``meta``; :func:`load_bundle` reads them from there into the spec, so they render
as they did.

Notation: ``delta`` = θ* - θ, ``feature`` = f*, ``feature_mask`` = m at the feature resolution,
``mask`` = m at full resolution.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

import dhr
from dhr.bundle.codec import decode_tensor, encode_tensor, target_from_uint8, target_to_uint8
from dhr.errors import CheckpointError, ConfigError
from dhr.fileio import read_json, to_jsonable, write_json_atomic
from dhr.outputs import atomic_path
from dhr.refinement.render import render
from dhr.types import DELTA_FORMATS, DeltaFormat, DomainMask, FeatureFormat, Inversion, RenderSpec

__all__ = [
    "tensor_sha256",
    "state_dict_sha256",
    "save_bundle",
    "load_bundle",
    "bundle_paths",
    "validate_bundle",
    "MAX_BUNDLE_BYTES",
]

_BUNDLE_VERSION = 3
"""3: the render spec in its own ``render`` section (2: its noise mode and skip freezing in ``meta``)."""
MAX_BUNDLE_BYTES = 4 << 30
"""Largest ``.safetensors`` of a bundle accepted (a 1024 px fp32 delta of every weight is ~120 MB)."""
MAX_SIDECAR_BYTES = 64 << 20


# --------------------------------------------------------------------------------------------
# Hashes


def tensor_sha256(t: torch.Tensor) -> str:
    """sha256 of a tensor's fp32 CPU bytes (a content key for an input image)."""
    data = t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()


def state_dict_sha256(module: torch.nn.Module) -> str:
    """sha256 over a module's state dict (names, shapes and fp32 bytes, in name order): the identity of
    an in-memory generator, recorded as ``model_sha256`` in bundles and ``Inversion.meta``. (Not
    :func:`dhr.models.checkpoint.saved_model_sha256`, the hash of a saved ``model.safetensors``.)"""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Bundles


def bundle_paths(stem: str | Path) -> tuple[Path, Path]:
    """``(<stem>.safetensors, <stem>.json)``; a given ``.safetensors``/``.json`` suffix is stripped.

    Raises:
        CheckpointError: ``stem`` is not a path (None, empty, a NUL byte, a name over 255 bytes).
    """
    if not isinstance(stem, (str, os.PathLike)) or not str(stem) or "\x00" in str(stem):
        raise CheckpointError(f"a bundle path must be a non-empty file path, got {stem!r:.60}")
    if len(os.fsencode(Path(stem).name)) > 240:
        raise CheckpointError(f"bundle name {Path(stem).name[:40]!r}... is too long for a file system (a "
                              "bundle adds .safetensors to it); choose a shorter name")
    stem = Path(stem)
    if stem.suffix in (".safetensors", ".json"):
        stem = stem.with_suffix("")
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save_bundle(
    inversion: Inversion,
    stem: str | Path,
    *,
    delta_format: DeltaFormat | None = None,
    feature_format: FeatureFormat | None = None,
    include_target: bool = True,
    include_image: bool = False,
) -> tuple[Path, Path]:
    """Saves one inversion as ``<stem>.safetensors`` + ``<stem>.json``.

    Args:
        inversion: The result to save.
        stem: Output path without suffix; parent folders are created.
        delta_format: Storage of ``weight_delta``; default ``inversion.render_spec.delta_format``.
            A reloaded render equals ``inversion.image`` when the inversion was stored in this
            format (:func:`dhr.bundle.codec.as_stored`, which :func:`dhr.invert` applies).
        feature_format: Storage of the feature f*; default ``inversion.render_spec.feature_format``.
        include_target: Store the aligned target as uint8 ``(3, R, R)`` (3 MB at 1024 px; values
            rounded to the 256 levels of [-1, 1]). Its sha256 is always recorded. Without it a
            reloaded bundle has no input to show or composite.
        include_image: Also store the final image in fp32 (:func:`load_bundle` re-renders it from
            the bundle when given the generator).

    Returns:
        The two paths written.
    """
    meta = dict(inversion.meta)
    spec = dataclasses.replace(inversion.render_spec, delta_format=delta_format or inversion.render_spec.delta_format,
                               feature_format=feature_format or inversion.render_spec.feature_format)
    delta_format, feature_format = spec.delta_format, spec.feature_format
    tensors: dict[str, torch.Tensor] = {"ws": inversion.ws.detach().to("cpu", torch.float32).contiguous()}
    layout: dict[str, Any] = {}
    if inversion.feature is not None:
        parts, eff = encode_tensor(inversion.feature, feature_format)
        tensors["feature"] = parts[""]
        layout["feature"] = {"format": eff, "shape": list(inversion.feature.shape)}
    if inversion.feature_mask is not None:
        tensors["feature_mask"] = inversion.feature_mask.detach().to("cpu", torch.float32).contiguous()
    if inversion.domain is not None:
        tensors["mask"] = inversion.domain.mask.detach().to("cpu", torch.uint8).contiguous()
        if inversion.domain.coarse is not None:
            tensors["coarse"] = inversion.domain.coarse.detach().to("cpu", torch.float32).contiguous()
    if include_target:
        tensors["target"] = target_to_uint8(inversion.target)
    if include_image:
        tensors["image"] = inversion.image.detach().to("cpu", torch.float32).contiguous()
    delta_layout: dict[str, Any] = {}
    for name, d in sorted(inversion.weight_delta.items()):
        parts, eff = encode_tensor(d, delta_format)
        for suffix, t in parts.items():
            tensors[f"delta/{name}" + (f"/{suffix}" if suffix else "")] = t
        delta_layout[name] = {"format": eff, "shape": list(d.shape)}
    sidecar = {
        "bundle_version": _BUNDLE_VERSION,
        "library": "dhr",
        "library_version": dhr.__version__,
        "method": inversion.method,
        "resolution": int(inversion.image.shape[-1]),
        "feature_resolution": inversion.feature_resolution,
        "delta_format": delta_format,
        "feature_format": feature_format,
        "render": spec.to_dict(),
        "delta": delta_layout,
        "layout": layout,
        "dtypes": {k: str(v.dtype).removeprefix("torch.") for k, v in tensors.items()},
        "input_sha256": meta.get("input_sha256") or tensor_sha256(inversion.target),
        "model_sha256": meta.get("model_sha256"),
        "config": to_jsonable(meta.get("config")),
        "timings": to_jsonable(meta.get("timings", {})),
        "losses": to_jsonable(inversion.losses),
        "meta": to_jsonable({k: v for k, v in meta.items() if k not in ("config", "timings")}),
    }
    st_path, json_path = bundle_paths(stem)
    # Each file is complete or absent under its final name, whatever kills the process.
    with atomic_path(st_path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "dhr-bundle", "bundle_version": str(_BUNDLE_VERSION)})
    write_json_atomic(json_path, sidecar, sort_keys=True)
    return st_path, json_path


def load_bundle(stem: str | Path, *, model: torch.nn.Module | None = None,
                device: torch.device | str = "cpu", require_target: bool = True) -> Inversion:
    """Loads a bundle written by :func:`save_bundle`.

    Args:
        stem: Path without suffix (or either file of the pair).
        model: The generator the inversion was made with. If given, its :func:`state_dict_sha256` must
            match the recorded one, and the final image is re-rendered from the bundle when it was
            not stored. Without it a bundle whose image was not stored cannot be loaded.
        device: Where to put the tensors.
        require_target: Raise when the bundle stores no target (bundles of version 1 or saved with
            ``include_target=False``). False returns zeros instead and sets ``meta["target_stored"]``
            to False, for callers that rebuild the target themselves (:meth:`dhr.Pipeline.load_bundle`
            re-crops it from the source photo).

    Returns:
        The :class:`Inversion`, with its ``target`` (stored as uint8) and ``image``.

    Raises:
        CheckpointError: Missing or corrupt files, a model mismatch, no target stored (bundles
            saved with ``include_target=False``: ``target`` would be unknown), or no image stored
            and no ``model`` to render it.
    """
    st_path, json_path = bundle_paths(stem)
    given = Path(stem)
    if given.is_file() and given.suffix.lower() not in (".safetensors", ".json") and not st_path.is_file():
        raise CheckpointError(f"{given} is not a result bundle (a photo?): invert it first (dhr invert {given} -o OUT, "
                              "or dhr run), then edit the bundle it writes (OUT/bundles/<name>.safetensors)")
    for p, limit in ((st_path, MAX_BUNDLE_BYTES), (json_path, MAX_SIDECAR_BYTES)):
        if not p.is_file():
            raise CheckpointError(f"bundle file not found: {p} (a bundle is <stem>.safetensors + <stem>.json)")
        if p.stat().st_size > limit:
            raise CheckpointError(f"bundle file {p} has {p.stat().st_size:,} bytes, more than a bundle can "
                                  f"have ({limit:,}); it is not a dhr bundle")
    try:
        side = read_json(json_path)
        tensors = load_file(str(st_path))
    except Exception as e:  # noqa: BLE001 - SafetensorError, UnicodeDecodeError, ...: all mean "corrupt"
        raise CheckpointError(f"bundle {st_path} / {json_path} could not be read ({type(e).__name__}: {e}); "
                              "it is corrupt: invert the photo again") from None
    validate_bundle(side, tensors, name=st_path.name, model=model)
    if model is not None and side.get("model_sha256") and state_dict_sha256(model) != side["model_sha256"]:
        raise CheckpointError(
            f"bundle {st_path.name} was made with model sha256 {side['model_sha256'][:12]}..., "
            f"the given model differs; load the generator the inversion was made with"
        )

    def get(key: str) -> torch.Tensor | None:
        t = tensors.get(key)
        return None if t is None else t.to(device)

    delta = {}
    for name, info in side["delta"].items():
        prefix = f"delta/{name}"
        parts = {k[len(prefix) + 1:] if k != prefix else "": v for k, v in tensors.items()
                 if k == prefix or k.startswith(prefix + "/")}
        if not parts:
            raise CheckpointError(f"bundle {st_path.name} lacks the tensors of delta '{name}'")
        delta[name] = decode_tensor(parts, info["format"], tuple(info["shape"])).to(device)
    feature = None
    if "feature" in tensors:
        feature = tensors["feature"].to(device, torch.float32)
    ws = get("ws")
    if ws is None:
        raise CheckpointError(f"bundle {st_path.name} has no 'ws' tensor")
    target = get("target")
    if target is None and require_target:
        raise CheckpointError(f"bundle {st_path.name} has no target (saved with include_target=False); the input "
                              "crop is needed to show, composite and paste results: save it again with the target")
    res = side.get("resolution")
    if res is None:
        raise CheckpointError(f"{json_path.name} does not record the image resolution")
    if target is not None and target.dtype == torch.uint8:
        target = target_from_uint8(target)
    image = get("image")
    if image is None and model is None:
        raise CheckpointError(f"bundle {st_path.name} does not store its final image; pass model=<the generator> "
                              "to re-render it")
    domain = None
    if "mask" in tensors:
        coarse = get("coarse")
        domain = DomainMask(mask=tensors["mask"].to(device, torch.float32), coarse=coarse)
    meta = dict(side.get("meta", {}))
    spec = _render_spec(side, meta, name=st_path.name)
    meta.update({
        "config": side.get("config"),
        "timings": side.get("timings", {}),
        "input_sha256": side.get("input_sha256"),
        "model_sha256": side.get("model_sha256"),
        "library_version": side.get("library_version"),
        "target_stored": target is not None,
    })
    inv = Inversion(
        ws=ws.to(torch.float32),
        image=image if image is not None else torch.zeros(3, res, res, device=device),
        target=target.to(torch.float32) if target is not None else torch.zeros(3, res, res, device=device),
        method=side["method"],
        weight_delta=delta,
        feature=feature,
        feature_resolution=side.get("feature_resolution"),
        feature_mask=get("feature_mask"),
        domain=domain,
        losses={k: list(v) for k, v in side.get("losses", {}).items()},
        meta=meta,
        render_spec=spec,
    )
    if image is None:
        with torch.no_grad():  # render_many moves the tensors to the generator's device
            inv = dataclasses.replace(inv, image=render(model, inv).to(device))
    return inv


def _render_spec(side: dict, meta: dict, *, name: str) -> RenderSpec:
    """The render spec of a sidecar: its ``render`` section (version 3), or what version 2 kept in
    ``meta`` (``noise_mode``, ``freeze_ood_skip``, and copies of the formats, removed from ``meta``
    here so the spec is their one home) and at the top level (the formats)."""
    legacy = {k: meta.pop(k) for k in ("noise_mode", "freeze_ood_skip", "delta_format", "feature_format")
              if k in meta}
    section = side.get("render")
    if section is None:
        section = {"noise_mode": legacy.get("noise_mode", "const"),
                   "freeze_ood_skip": legacy.get("freeze_ood_skip", False),
                   "delta_format": side["delta_format"], "feature_format": side.get("feature_format", "fp32")}
    if not isinstance(section, dict) or set(section) - {f.name for f in dataclasses.fields(RenderSpec)}:
        raise CheckpointError(f"bundle {name}: sidecar key 'render' must map noise_mode, freeze_ood_skip, "
                              f"delta_format and feature_format, got {section!r:.120}; it is damaged or was not "
                              "written by dhr (invert the photo again)")
    try:
        return RenderSpec(**section)
    except ConfigError as e:
        raise CheckpointError(f"bundle {name}: sidecar key 'render' is invalid ({e}); it is damaged or was not "
                              "written by dhr (invert the photo again)") from None


_FLOAT = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def validate_bundle(side: Any, tensors: dict[str, torch.Tensor], *, name: str,
                    model: torch.nn.Module | None = None) -> None:
    """Checks a bundle's sidecar and tensors (keys, types, dtypes, shapes) before they are used.

    With ``model`` (a :class:`dhr.models.stylegan2.Generator`) the shapes are also checked against
    it: ``ws (num_ws, style_dim)``, every delta against the parameter it changes, the feature
    against the generator's channels at its resolution.

    Args:
        side: The parsed ``<stem>.json``.
        tensors: The tensors of ``<stem>.safetensors``.
        name: The bundle's file name (for messages).
        model: Optional generator to check shapes against.

    Raises:
        CheckpointError: The first problem found, naming the key and what was expected.
    """
    def bad(msg: str) -> CheckpointError:
        return CheckpointError(f"bundle {name}: {msg}; it is damaged or was not written by dhr (invert the photo "
                               "again)")

    if not isinstance(side, dict) or side.get("library") != "dhr" or not isinstance(side.get("delta"), dict):
        raise bad("its .json is not a dhr result bundle sidecar (needs library='dhr' and a 'delta' mapping)")
    version = side.get("bundle_version", 1)  # the first bundles did not record it
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise bad(f"sidecar key 'bundle_version' must be a positive integer, got {version!r:.60}")
    if version > _BUNDLE_VERSION:
        raise CheckpointError(f"bundle {name} is version {version}, written by a newer dhr; this dhr reads versions "
                              f"up to {_BUNDLE_VERSION}: upgrade dhr (pip install -U dhr) to load it")
    for key, typ in (("method", str), ("resolution", int), ("delta_format", str)):
        if not isinstance(side.get(key), typ) or isinstance(side.get(key), bool):
            raise bad(f"sidecar key {key!r} must be a {typ.__name__}, got {side.get(key)!r:.60}")
    res = side["resolution"]
    if not 4 <= res <= 4096:
        raise bad(f"resolution {res} is outside 4..4096")
    for key in ("losses", "meta", "layout", "timings"):
        if key in side and not isinstance(side[key], dict):
            raise bad(f"sidecar key {key!r} must be a mapping")
    for k, v in (side.get("losses") or {}).items():
        if not isinstance(v, list) or not all(isinstance(x, (int, float)) for x in v):
            raise bad(f"loss curve {k!r} must be a list of numbers")
    fr = side.get("feature_resolution")
    if fr is not None and (not isinstance(fr, int) or isinstance(fr, bool) or not 4 <= fr <= res):
        raise bad(f"feature_resolution {fr!r} must be an integer in 4..{res}")
    ws = tensors.get("ws")
    if ws is None or ws.dtype not in _FLOAT or ws.ndim != 2:
        raise bad(f"tensor 'ws' must be a float (num_ws, style_dim) tensor, got "
                  f"{None if ws is None else (str(ws.dtype), list(ws.shape))}")
    for key, ndim in (("feature", 3), ("feature_mask", 3), ("mask", 3), ("coarse", 3), ("target", 3), ("image", 3)):
        t = tensors.get(key)
        if t is None:
            continue
        allowed = (torch.uint8,) if key == "mask" else _FLOAT + (torch.uint8,) if key == "target" else _FLOAT
        if t.ndim != ndim or t.dtype not in allowed:
            raise bad(f"tensor {key!r} has dtype {t.dtype} and shape {list(t.shape)}, expected a "
                      f"{'/'.join(str(d).removeprefix('torch.') for d in allowed)} tensor with {ndim} dims")
        if key in ("mask", "coarse", "target", "image") and tuple(t.shape[-2:]) != (res, res):
            raise bad(f"tensor {key!r} is {list(t.shape)}, expected {res}x{res} like the recorded resolution")
        if key in ("target", "image") and t.shape[0] != 3:
            raise bad(f"tensor {key!r} must have 3 channels, got {t.shape[0]}")
    if "feature_mask" in tensors and "feature" in tensors and \
            tuple(tensors["feature_mask"].shape[-2:]) != tuple(tensors["feature"].shape[-2:]):
        raise bad("'feature_mask' and 'feature' have different sizes")
    params = dict(model.state_dict()) if model is not None else None
    for dname, info in side["delta"].items():
        if not isinstance(info, dict) or info.get("format") not in DELTA_FORMATS or \
                not isinstance(info.get("shape"), list) or \
                not all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= 1 << 20 for s in info["shape"]):
            raise bad(f"delta {dname!r} needs a format in {list(DELTA_FORMATS)} and a shape of positive integers")
        shape = tuple(info["shape"])
        n = math.prod(shape)
        prefix = f"delta/{dname}"
        if info["format"] in ("fp32", "fp16"):
            t = tensors.get(prefix)
            if t is None or t.dtype not in _FLOAT or t.numel() != n:
                raise bad(f"delta {dname!r}: tensor {prefix!r} must be float with {n} values ({list(shape)})")
        else:
            q, scale = tensors.get(prefix + "/q"), tensors.get(prefix + "/scale")
            want_q = n if info["format"] == "int8" else (n + 1) // 2
            if q is None or scale is None or q.numel() != want_q or scale.numel() != shape[0] or \
                    q.dtype not in (torch.int8, torch.uint8) or scale.dtype not in _FLOAT:
                raise bad(f"delta {dname!r}: {info['format']} needs {prefix}/q ({want_q} int8 values) and "
                          f"{prefix}/scale ({shape[0]} floats)")
        if params is not None:
            if dname not in params:
                raise bad(f"delta {dname!r} names no tensor of the model's generator")
            if tuple(params[dname].shape) != shape:
                raise bad(f"delta {dname!r} has shape {list(shape)}, the model's tensor is "
                          f"{list(params[dname].shape)}")
    if model is not None and hasattr(model, "num_ws") and hasattr(getattr(model, "config", None), "channels"):
        num_ws, dim = int(model.num_ws), int(model.config.style_dim)
        if tuple(ws.shape) != (num_ws, dim):
            raise bad(f"'ws' is {list(ws.shape)}, the model needs ({num_ws}, {dim}); was it made with another model?")
        if res != int(model.resolution):
            raise bad(f"resolution {res} differs from the model's {int(model.resolution)}")
        if "feature" in tensors:
            f = tensors["feature"]
            if fr is None or fr not in model.config.resolutions or \
                    tuple(f.shape) != (model.config.channels(fr), fr, fr):
                raise bad(f"'feature' is {list(f.shape)} at resolution {fr}, which the model's generator does not "
                          "produce")


model_sha256 = state_dict_sha256
"""Deprecated alias of :func:`state_dict_sha256` (its old name, shared with a different function of
:mod:`dhr.models.checkpoint`)."""
