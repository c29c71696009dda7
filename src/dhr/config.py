"""Typed configuration of a whole inversion (:class:`InvertConfig`) with strict loading.

One frozen dataclass per stage, composed here:

- ``optim``: :class:`dhr.embed.optimize.OptimConfig` of the optimisation *embedding* (the plain
  optimisation baseline, default :meth:`OptimConfig.baseline`);
- ``coarse``: the coarse W inversion that feeds DHR's segmentation (default :meth:`OptimConfig.coarse`);
- ``segment``: :class:`dhr.segmentation.domain.SegmentConfig`;
- ``refine``: :class:`dhr.refinement.hybrid.RefineConfig` (DHR and the feature-only baseline);
- ``pti``: :class:`dhr.refinement.baselines.PTIConfig`.

Files (TOML, YAML or JSON) hold the same nesting; missing keys keep their defaults, unknown keys
and values of the wrong type raise :class:`~dhr.errors.ConfigError` naming the key path (for
example ``refine.stepz``) and the valid keys. :meth:`InvertConfig.to_dict` gives the plain dict
stored with every result for provenance; ``InvertConfig.from_dict(c.to_dict()) == c``.

Example:
    >>> cfg = load_config("dhr.toml")            # [refine]\\nsteps = 50
    >>> cfg = InvertConfig.from_dict({"method": "pti", "pti": {"steps": 100}})
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dhr.checks import check_choice
from dhr.devices import PRECISIONS
from dhr.embed.optimize import OptimConfig
from dhr.errors import ConfigError
from dhr.refinement.baselines import PTIConfig
from dhr.refinement.hybrid import RefineConfig
from dhr.segmentation.domain import SegmentConfig

__all__ = ["InvertConfig", "Method", "EmbedMethod", "METHODS", "COARSE_PERCEPTUALS", "PRECISIONS", "load_config", "config_from_dict", "parse_overrides",
           "apply_overrides"]

Method = Literal["dhr", "pti", "feature", "encoder", "optim"]
EmbedMethod = Literal["encoder", "optim"]
CoarsePerceptual = Literal["auto", "same", "model", "alex", "vgg", "squeeze"]
COARSE_PERCEPTUALS: tuple[str, ...] = ("auto", "same", "model", "alex", "vgg", "squeeze")
METHODS: tuple[str, ...] = ("dhr", "pti", "feature", "encoder", "optim")
Precision = Literal["fp32", "bf16"]


@dataclass(frozen=True)
class InvertConfig:
    """Everything :func:`dhr.engine.invert` needs besides the models.

    Attributes:
        method: ``dhr`` (hybrid refinement), ``pti`` (pivotal tuning), ``feature`` (feature-only
            refinement), or embedding only: ``encoder`` / ``optim``.
        embed: How the W+ code is obtained for ``dhr``/``pti``/``feature``: ``encoder`` (needs an
            encoder) or ``optim`` (latent optimisation with ``optim``). None: ``encoder`` when one is
            given to ``invert``, else ``optim``. For the methods ``encoder``/``optim`` it must be None
            or equal to the method.
        optim: Optimisation embedding options.
        coarse: DHR's coarse W inversion (its error maps drive the segmentation).
        segment: Domain segmentation options.
        refine: Hybrid refinement options (also the feature-only baseline's).
        pti: Pivotal tuning options.
        coarse_perceptual: The perceptual network of the optimisation embedding, the coarse inversion
            and the error maps that drive DHR's segmentation, chosen by :class:`dhr.Pipeline` and the
            benchmark (:func:`dhr.engine.invert` takes the modules themselves). ``auto``: the model's
            own perceptual network when it has one (its thresholds are calibrated on it), else
            LPIPS-VGG, as the reference (whose thresholds 0.7/0.8/0.6 are on the VGG scale);
            ``same``: the refinement's network; ``model``, ``alex``, ``vgg``, ``squeeze``: that one.
        vectorize: Optimise the images of a batch together (``vmap``; faster on a GPU; on a CPU
            only for small models: a 20 M-parameter generator's refinement then costs more per
            image, twice as much in bf16, docs/performance.md "Batch throughput"). Their results
            then equal one-at-a-time runs only to float rounding, which Adam's normalisation amplifies
            (up to 0.16 max abs on ``faces-64`` with 20 refinement steps). False (default) processes
            the images one after the other, so a photo's result is bit-identical alone, in any batch
            and at any position. A batch is the faces of one photo, or of several with
            ``Pipeline.invert_many`` / the CLI's ``--batch N``.
        precision: ``fp32`` (default; the reference's arithmetic) or ``bf16``: the embedding, coarse
            inversion and refinement run under ``torch.autocast`` in bfloat16 (convolutions and
            matrix products; parameters, gradients, Adam and the stored results stay fp32). About 2x
            faster on CPUs with AVX512-BF16/AMX and on recent GPUs (``dhr.devices.native_bf16``);
            the results are not bit-identical to fp32 ones (final losses within ~1 % on a 20 M-
            parameter generator; docs/performance.md). Slower, with a warning, on other hardware.
    """

    method: Method = "dhr"
    embed: EmbedMethod | None = None
    optim: OptimConfig = field(default_factory=OptimConfig.baseline)
    coarse: OptimConfig = field(default_factory=OptimConfig.coarse)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    pti: PTIConfig = field(default_factory=PTIConfig)
    coarse_perceptual: CoarsePerceptual = "auto"
    vectorize: bool = False
    precision: Precision = "fp32"

    def __post_init__(self) -> None:
        check_choice(self.method, METHODS, "method")
        check_choice(self.precision, PRECISIONS, "precision")
        check_choice(self.coarse_perceptual, COARSE_PERCEPTUALS, "coarse_perceptual")
        if self.embed is not None:
            check_choice(self.embed, ("encoder", "optim"), "embed")
            if self.method in ("encoder", "optim") and self.embed != self.method:
                raise ConfigError(f"method={self.method!r} is itself the embedding; embed={self.embed!r} conflicts "
                                  f"(leave embed unset or set it to {self.method!r})")
        for name, cls in (("optim", OptimConfig), ("coarse", OptimConfig), ("segment", SegmentConfig),
                          ("refine", RefineConfig), ("pti", PTIConfig)):
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"{name} must be a {cls.__name__}, got {type(getattr(self, name)).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON/TOML-safe except None values) for provenance and saving."""
        return _to_plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InvertConfig:
        """Strictly builds a config from a nested dict (see the module docstring)."""
        return config_from_dict(data)


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


_SCIENTIFIC = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _coerce(value: Any, hint: Any, path: str) -> Any:
    """Checks ``value`` against the type hint ``hint``; returns it (lists -> tuples, ints -> floats)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}={value!r} is not valid; choose one of {list(args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}={value!r} has the wrong type; expected {_type_name(hint)}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}={value!r} must be a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{path} must have {len(args)} entries, got {len(value)}")
        return tuple(_coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}={value!r} must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}={value!r} must be an integer")
        return value
    if hint is float:
        if isinstance(value, str) and _SCIENTIFIC.match(value.strip()):  # YAML 1.1 reads 1e-3 as a string
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}={value!r} must be a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}={value!r} must be a string")
        return value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _dataclass_from_dict(hint, value, path, None)
    return value


_INT_LIMITS: dict[str, tuple[int, int]] = {
    "steps": (0, 100_000),
    "weight_steps": (0, 100_000),
    "loss_resolution": (8, 4096),
    "n_mean_samples": (1, 1_000_000),
    "seed": (0, 2**63 - 1),
    "n_segments": (1, 100_000),
    "feature_resolution": (4, 4096),
    "tune_resolutions": (4, 4096),
}
"""Ranges of integer options by key name (any section); other integers must fit in 32 bits."""
_FLOAT_LIMIT = 1e9
"""Floats must be finite with a magnitude of at most this."""


def _check_bounds(value: Any, key: str, path: str) -> None:
    """Rejects integers outside their range and non-finite or huge floats (before any allocation)."""
    import math

    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_bounds(v, key, f"{path}[{i}]")
        return
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int):
        lo, hi = _INT_LIMITS.get(key, (-(2**31), 2**31 - 1))
        if not lo <= value <= hi:
            raise ConfigError(f"{path}={value} is out of range; it must be between {lo} and {hi}")
    elif isinstance(value, float):
        if not math.isfinite(value) or abs(value) > _FLOAT_LIMIT:
            raise ConfigError(f"{path}={value!r} must be a finite number of magnitude at most {_FLOAT_LIMIT:g}")


def _dataclass_from_dict(cls: type, data: Any, path: str, base: Any | None) -> Any:
    where = path or "config"
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a table/mapping of options, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in data.items():
        full = f"{path}.{key}" if path else str(key)
        if key not in names:
            raise ConfigError(f"unknown option '{full}'; valid keys of {where}: {names}")
        kwargs[key] = _coerce(value, hints[key], full)
        _check_bounds(kwargs[key], key, full)
    try:
        if base is not None:
            return dataclasses.replace(base, **kwargs)
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None


def config_from_dict(data: dict[str, Any], *, base: InvertConfig | None = None) -> InvertConfig:
    """Builds an :class:`InvertConfig` from a nested dict, rejecting unknown keys and bad types.

    Sections that are given start from ``base``'s (default: the field's default, ``optim`` from the
    baseline recipe, ``coarse`` from the coarse recipe) and override only the listed keys.

    Args:
        data: Nested options, e.g. ``{"refine": {"steps": 50}}``.
        base: The configuration the options apply to (e.g. a model's recommended settings);
            default :class:`InvertConfig()` (the reference defaults).

    Raises:
        ConfigError: Naming the key path, the bad value and the valid keys or choices.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"a configuration must be a mapping of options, got {type(data).__name__}")
    defaults = InvertConfig() if base is None else base
    hints = typing.get_type_hints(InvertConfig)
    names = [f.name for f in dataclasses.fields(InvertConfig)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"unknown option '{key}'; valid top-level keys: {names}")
        hint = hints[key]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            kwargs[key] = _dataclass_from_dict(hint, value, key, getattr(defaults, key))
        else:
            kwargs[key] = _coerce(value, hint, key)
    try:
        return dataclasses.replace(defaults, **kwargs)
    except ConfigError as e:
        raise ConfigError(f"config: {e}") from None


def load_config(path: str | Path, *, base: InvertConfig | None = None) -> InvertConfig:
    """Loads an :class:`InvertConfig` from a ``.toml``, ``.yaml``/``.yml`` or ``.json`` file.

    Options in the file override ``base`` (default: the reference defaults); see :func:`config_from_dict`.

    Raises:
        ConfigError: Unreadable file, unknown suffix, syntax errors, unknown keys or bad values.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"configuration file {path} is a folder; give a .toml, .yaml or .json file")
    if not path.is_file():
        raise ConfigError(f"configuration file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"configuration file {path} is not UTF-8 text; give a .toml, .yaml or .json file") from None
    except OSError as e:
        raise ConfigError(f"configuration file {path} cannot be read ({e.strerror or e})") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"configuration file {path} must end in .toml, .yaml, .yml or .json")
    except ConfigError:
        raise
    except Exception as e:  # parser-specific syntax errors (tomllib, yaml, json)
        raise ConfigError(f"configuration file {path} could not be parsed ({type(e).__name__}: {e})") from None
    try:
        return config_from_dict(data, base=base)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def parse_overrides(specs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Turns ``["refine.steps=300", "segment.theta_skin=0.3"]`` into a nested options dict.

    Values are read as YAML scalars or lists (``300`` int, ``0.3`` float, ``true``, ``null``,
    ``[16, 32]``, ``pti``). Keys are checked when the dict is applied (:func:`config_from_dict`).

    Raises:
        ConfigError: A spec without ``=`` or with an empty key, or a key given twice.
    """
    import yaml

    out: dict[str, Any] = {}
    for spec in specs:
        key, sep, raw = str(spec).partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {spec!r} must be KEY=VALUE with a dotted key, e.g. refine.steps=300 or "
                              "segment.theta_skin=0.3")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {spec!r}: {part!r} was already given a value")
        if parts[-1] in node:
            raise ConfigError(f"--set {key} is given twice")
        node[parts[-1]] = value
    return out


def apply_overrides(config: InvertConfig, specs: list[str] | tuple[str, ...]) -> InvertConfig:
    """``config`` with ``KEY=VALUE`` overrides applied (see :func:`parse_overrides`).

    Raises:
        ConfigError: Malformed specs, unknown keys (named with the valid ones) or bad values.
    """
    if not specs:
        return config
    return config_from_dict(parse_overrides(specs), base=config)
