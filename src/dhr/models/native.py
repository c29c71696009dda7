"""The native model format: a folder with ``config.json`` and ``model.safetensors``.

A saved component describes itself::

    my_model/
      config.json        {"class": "Generator", "config": {...constructor config...},
                          "dhr_version": "0.1.0", "format_version": 1, "dtype": "float32",
                          "sha256": "<hash of model.safetensors>", "metadata": {...}}
      model.safetensors  the module's state dict (persistent parameters and buffers)

Loading a native folder never unpickles anything: the configuration is JSON and the tensors are
safetensors. Tensors may be stored as float16 (``dtype`` in ``config.json``); they are always
loaded back as float32. Any registered component (a module class plus its frozen dataclass
config) can be saved and loaded; ``Generator`` and ``Discriminator`` are registered here, other
modules add theirs with :func:`register_component`.

Foreign files (rosinality ``.pt``, e4e / pSp ``.pt``, NVIDIA ``.pkl``) are read by
:mod:`dhr.models.convert`, which builds on this module; :func:`dhr.models.checkpoint.load_generator`
takes either kind. Layering: ``native`` <- ``convert`` <- ``checkpoint`` (no import cycle).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

import dhr
from dhr.errors import CheckpointError, ConfigError
from dhr.fileio import read_json, sha256_file, to_jsonable, write_json_atomic
from dhr.models.discriminator import Discriminator, DiscriminatorConfig
from dhr.models.stylegan2 import Generator, GeneratorConfig

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "register_component",
    "registered_components",
    "save_pretrained",
    "load_config",
    "load_pretrained",
    "load_state_file",
    "check_state_dict",
    "sha256_file",
    "saved_model_sha256",
    "config_to_dict",
    "config_from_dict",
]

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1
_TOP_LEVEL_KEYS = {"class", "config", "dhr_version", "format_version", "dtype", "sha256", "metadata"}
_DTYPES = {"float32": torch.float32, "float16": torch.float16}

# class name -> (module class, config dataclass); other modules add theirs with register_component.
_REGISTRY: dict[str, tuple[type[nn.Module], type]] = {
    "Generator": (Generator, GeneratorConfig),
    "Discriminator": (Discriminator, DiscriminatorConfig),
}


def register_component(name: str, module_cls: type[nn.Module], config_cls: type) -> None:
    """Makes a module class saveable and loadable in the native format under ``name``.

    The module must be constructible as ``module_cls(config)`` and expose ``module.config``;
    ``config_cls`` must be a dataclass (``to_dict`` / ``from_dict`` are used when present).

    Args:
        name: The class name written into ``config.json`` (e.g. ``"Discriminator"``).
        module_cls: The ``nn.Module`` subclass.
        config_cls: Its dataclass configuration.

    Raises:
        ConfigError: If ``config_cls`` is not a dataclass or ``name`` is taken by another class.
    """
    if not dataclasses.is_dataclass(config_cls):
        raise ConfigError(f"register_component({name!r}): config class {config_cls!r} must be a dataclass")
    old = _REGISTRY.get(name)
    if old is not None and old != (module_cls, config_cls):
        raise ConfigError(f"component name {name!r} is already registered for {old[0].__qualname__}")
    _REGISTRY[name] = (module_cls, config_cls)


def registered_components() -> dict[str, tuple[type[nn.Module], type]]:
    """A copy of the registry ``{class name: (module class, config class)}``."""
    return dict(_REGISTRY)


def _name_of(module: nn.Module) -> str:
    for name, (cls, _) in _REGISTRY.items():
        if type(module) is cls:
            return name
    for name, (cls, _) in _REGISTRY.items():
        if isinstance(module, cls):
            return name
    raise ConfigError(
        f"{type(module).__qualname__} is not a registered component; call "
        f"dhr.models.checkpoint.register_component(name, module_cls, config_cls) first "
        f"(registered: {sorted(_REGISTRY)})"
    )


# --------------------------------------------------------------------------------------------
# Config (de)serialisation


def config_to_dict(config: Any) -> dict:
    """A JSON-ready dict of a dataclass config (its ``to_dict`` when it has one)."""
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    if dataclasses.is_dataclass(config):
        return to_jsonable(dataclasses.asdict(config))
    raise ConfigError(f"cannot serialise config of type {type(config).__qualname__}: not a dataclass")


_MAX_CONFIG_INT = 1 << 16  # channels, widths, layer counts, resolutions of any registered component


def _check_config_values(config_cls: type, d: Mapping[str, Any], source: str) -> None:
    """Types and magnitudes of an architecture config (strings where numbers belong, huge sizes)
    before anything is built from it."""
    try:
        hints = typing.get_type_hints(config_cls)
    except Exception:  # noqa: BLE001 - unresolvable hints: leave the checks to the constructor
        return

    def check(value: Any, hint: Any, key: str) -> None:
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin in (typing.Union, types.UnionType):
            if value is None and type(None) in args:
                return
            hint = next((a for a in args if a is not type(None)), hint)
            origin, args = typing.get_origin(hint), typing.get_args(hint)
        if hint is int:
            if isinstance(value, bool) or not isinstance(value, int) or abs(value) > _MAX_CONFIG_INT:
                raise ConfigError(f"{source}: {config_cls.__name__}.{key}={value!r:.40} must be an integer of at most "
                                  f"{_MAX_CONFIG_INT}")
        elif hint is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or abs(value) > 1e9:
                raise ConfigError(f"{source}: {config_cls.__name__}.{key}={value!r:.40} must be a finite number")
        elif hint is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{source}: {config_cls.__name__}.{key}={value!r:.40} must be true or false")
        elif hint is str:
            if not isinstance(value, str):
                raise ConfigError(f"{source}: {config_cls.__name__}.{key}={value!r:.40} must be a string")
        elif origin is tuple:
            if not isinstance(value, (list, tuple)) or len(value) > 64:
                raise ConfigError(f"{source}: {config_cls.__name__}.{key} must be a list of at most 64 entries")
            inner = args[0] if args else None
            for v in value:
                if inner in (int, float):
                    check(v, inner, key)

    for key, value in d.items():
        if key in hints:
            check(value, hints[key], key)


def config_from_dict(config_cls: type, d: Mapping[str, Any], *, source: str = "config") -> Any:
    """Builds ``config_cls`` from a dict, rejecting unknown keys.

    Raises:
        ConfigError: If ``d`` is not a dict, has keys ``config_cls`` does not know, or holds invalid values.
    """
    if not isinstance(d, Mapping):
        raise ConfigError(f"{source}: 'config' must be a JSON object, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = set(d) - names
    if unknown:
        raise ConfigError(f"{source}: unknown {config_cls.__name__} keys {sorted(unknown)}; known: {sorted(names)}")
    _check_config_values(config_cls, d, source)
    if hasattr(config_cls, "from_dict"):
        return config_cls.from_dict(dict(d))
    kwargs = {}
    for f in dataclasses.fields(config_cls):
        if f.name in d:
            v = d[f.name]
            default = f.default if f.default is not dataclasses.MISSING else None
            kwargs[f.name] = tuple(v) if isinstance(v, list) and isinstance(default, tuple) else v
    try:
        return config_cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{source}: invalid {config_cls.__name__}: {e}") from None


# --------------------------------------------------------------------------------------------
# Hashing


def saved_model_sha256(folder: str | os.PathLike) -> str:
    """The identity of a saved model: the sha256 of its ``model.safetensors`` file. (Not
    :func:`dhr.bundle.state_dict_sha256`, the hash of an in-memory state dict.)

    Use it in cache keys of anything computed with the model.

    Raises:
        CheckpointError: If ``folder`` holds no ``model.safetensors``.
    """
    path = Path(folder) / WEIGHTS_NAME
    if not path.is_file():
        raise CheckpointError(f"{folder}: no {WEIGHTS_NAME} in this folder; is it a model saved by save_pretrained?")
    return sha256_file(path)


model_sha256 = saved_model_sha256
"""Deprecated alias of :func:`saved_model_sha256` (its old name, shared with a different function of
:mod:`dhr.bundle`)."""


# --------------------------------------------------------------------------------------------
# Save


def save_pretrained(
    module: nn.Module,
    folder: str | os.PathLike,
    *,
    dtype: Literal["float32", "float16"] = "float32",
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Writes ``module`` as a native folder (``config.json`` + ``model.safetensors``).

    Args:
        module: A registered component (``Generator``, ``Discriminator``, or one added with
            :func:`register_component`) with a ``config`` attribute.
        folder: Output folder; created if needed, existing files of the same names are replaced.
        dtype: Storage type of floating tensors. ``float16`` halves the size; loading always
            returns float32 (float16 keeps about 3 significant digits).
        metadata: Optional JSON-serialisable facts (source file, its sha256, notes).

    Returns:
        The folder path.

    Raises:
        ConfigError: If ``dtype`` is invalid, the module is not registered or ``metadata`` is not JSON.
    """
    if dtype not in _DTYPES:
        raise ConfigError(f"dtype={dtype!r} is not valid; choose one of {sorted(_DTYPES)}")
    name = _name_of(module)
    config = getattr(module, "config", None)
    if config is None:
        raise ConfigError(f"{type(module).__qualname__} has no .config; cannot describe its architecture")
    cfg = config_to_dict(config)
    meta = dict(metadata or {})
    try:
        json.dumps(meta)
    except TypeError as e:
        raise ConfigError(f"metadata must be JSON-serialisable: {e}") from None

    target = _DTYPES[dtype]
    tensors: dict[str, torch.Tensor] = {}
    for key, t in module.state_dict().items():
        t = t.detach().to("cpu")
        if t.is_floating_point():
            t = t.to(target)
        tensors[key] = t.contiguous().clone()

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (WEIGHTS_NAME + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt", "class": name})
    os.replace(tmp, folder / WEIGHTS_NAME)
    doc = {
        "class": name,
        "config": cfg,
        "dhr_version": dhr.__version__,
        "format_version": FORMAT_VERSION,
        "dtype": dtype,
        "sha256": sha256_file(folder / WEIGHTS_NAME),
        "metadata": meta,
    }
    write_json_atomic(folder / CONFIG_NAME, doc)
    logger.info("saved %s (%d tensors, %s) to %s", name, len(tensors), dtype, folder)
    return folder


# --------------------------------------------------------------------------------------------
# Load


def _read_config_json(folder: Path) -> dict:
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{folder}: no {CONFIG_NAME}; a native model folder holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        doc = read_json(path)
    except ValueError as e:
        raise CheckpointError(f"{e}; the file is corrupt, re-save or re-convert the model") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: must hold a JSON object, got {type(doc).__name__}")
    unknown = set(doc) - _TOP_LEVEL_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(_TOP_LEVEL_KEYS)}")
    for key in ("class", "config"):
        if key not in doc:
            raise ConfigError(f"{path}: missing key '{key}'")
    version = doc.get("format_version", FORMAT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigError(f"{path}: format_version must be a positive integer, got {version!r:.40}")
    if doc.get("dtype", "float32") not in _DTYPES:
        raise ConfigError(f"{path}: dtype {doc.get('dtype')!r:.40} is not a storage type dhr writes; "
                          f"one of {sorted(_DTYPES)}")
    if version > FORMAT_VERSION:
        raise ConfigError(f"{path}: format_version {doc['format_version']} is newer than this dhr "
                          f"understands ({FORMAT_VERSION}); upgrade dhr")
    return doc


def load_config(folder: str | os.PathLike) -> Any:
    """Reads the architecture of a native folder without touching its tensors.

    Returns:
        The config dataclass instance (e.g. a ``GeneratorConfig``); the class name is
        ``type(...)`` of the module it configures, see :func:`load_pretrained`.

    Raises:
        CheckpointError: If ``config.json`` is missing or not JSON.
        ConfigError: If it names an unregistered class or holds unknown keys.
    """
    _, config = _config_and_class(Path(folder))
    return config


def _config_and_class(folder: Path) -> tuple[str, Any]:
    doc = _read_config_json(folder)
    name = doc["class"]
    if name not in _REGISTRY:
        raise ConfigError(f"{folder / CONFIG_NAME}: class {name!r} is not registered; registered: {sorted(_REGISTRY)}")
    _, config_cls = _REGISTRY[name]
    return name, config_from_dict(config_cls, doc["config"], source=str(folder / CONFIG_NAME))


def load_state_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Reads a safetensors file into float32 CPU tensors (integer tensors unchanged).

    Raises:
        CheckpointError: If the file is missing, truncated or not a safetensors file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: cannot read tensors ({type(e).__name__}: {e}); the file is truncated "
                              f"or corrupt, re-save or re-convert the model") from None
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}


def check_state_dict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Checks that ``state`` has exactly the keys and shapes of ``module.state_dict()``.

    Raises:
        CheckpointError: Naming ``source``, the first offending keys, and expected vs got shapes.
    """
    want = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(set(want) - set(got))
    unexpected = sorted(set(got) - set(want))
    kind = type(module).__name__
    if missing:
        raise CheckpointError(
            f"{source}: missing {len(missing)} tensor(s) for {kind}, e.g. '{missing[0]}' (expected shape "
            f"{list(want[missing[0]])}); missing: {missing[:5]}{' ...' if len(missing) > 5 else ''}. "
            f"The file does not match the architecture in its config"
        )
    if unexpected:
        raise CheckpointError(
            f"{source}: {len(unexpected)} unexpected tensor(s) for {kind}, e.g. '{unexpected[0]}' "
            f"(shape {list(got[unexpected[0]])}); unexpected: {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    for k in want:
        if want[k] != got[k]:
            raise CheckpointError(f"{source}: tensor '{k}' has shape {list(got[k])}, expected {list(want[k])} "
                                  f"for this {kind} config")


def _safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from a safetensors header (nothing else is read)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < n <= min(size - 8, 100 << 20):
            raise CheckpointError(f"{path}: not a safetensors file (bad header length); the file is truncated or "
                                  "corrupt, re-save or re-convert the model")
        try:
            header = json.loads(f.read(n))
            return {k: tuple(int(x) for x in v["shape"]) for k, v in header.items() if k != "__metadata__"}
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
            raise CheckpointError(f"{path}: unreadable safetensors header ({type(e).__name__}); the file is "
                                  "corrupt") from None


def _precheck_shapes(module_cls: type, config: Any, weights: Path) -> None:
    """Builds the module on the ``meta`` device (no memory) and checks the file's tensor names and
    shapes against it, so a config describing a huge network fails before anything is allocated."""
    try:
        with torch.device("meta"):
            meta = module_cls(config)
    except (ConfigError, CheckpointError):
        raise
    except Exception as e:  # noqa: BLE001 - a constructor that rejects the config
        raise ConfigError(f"{weights.parent / CONFIG_NAME}: invalid {type(config).__name__} "
                          f"({type(e).__name__}: {e})") from None
    shapes = _safetensors_shapes(weights)
    check_state_dict(meta, {k: torch.empty(s, device="meta") for k, s in shapes.items()}, str(weights))


def load_pretrained(folder: str | os.PathLike, *, expected_class: str | None = None, verify: bool = True) -> nn.Module:
    """Loads any registered component from a native folder (float32, CPU, eval mode).

    Args:
        folder: A folder written by :func:`save_pretrained`.
        expected_class: If given, the class name the folder must hold (e.g. ``"Generator"``).
        verify: Check ``model.safetensors`` against the sha256 recorded in ``config.json``.

    Raises:
        CheckpointError: Missing/corrupt files, hash mismatch, missing or unexpected tensors, bad shapes.
        ConfigError: Unknown class or config keys, or a class other than ``expected_class``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a folder; expected a native model folder ({CONFIG_NAME} + {WEIGHTS_NAME})")
    doc = _read_config_json(folder)
    name, config = _config_and_class(folder)
    if expected_class is not None and name != expected_class:
        raise ConfigError(f"{folder}: holds a {name}, expected a {expected_class}")
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{weights}: file not found; the model folder is incomplete")
    if verify and doc.get("sha256"):
        digest = sha256_file(weights)
        if digest != doc["sha256"]:
            raise CheckpointError(f"{weights}: sha256 {digest[:12]}... does not match {doc['sha256'][:12]}... recorded "
                                  f"in {CONFIG_NAME}; the file was modified or is corrupt")
    elif verify:
        logger.warning("%s: no sha256 recorded in %s; the weights' integrity is not verified", weights, CONFIG_NAME)
    module_cls, _ = _REGISTRY[name]
    _precheck_shapes(module_cls, config, weights)
    state = load_state_file(weights)
    broken = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise CheckpointError(f"{weights}: {len(broken)} tensor(s) hold NaN or infinite values ({', '.join(broken[:3])}"
                              f"{', ...' if len(broken) > 3 else ''}); the weights are broken (a diverged training "
                              "run or a corrupt file): re-export or re-convert the model")
    module = module_cls(config)
    check_state_dict(module, state, str(weights))
    module.load_state_dict(state, strict=True)
    return module.eval()
