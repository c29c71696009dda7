"""Named models: a folder of native components (generator, encoder, perceptual metric, classifier,
directions, alignment template) described by ``model.json``.

Bundled models live in ``dhr/assets/models/<name>/`` and load without any download:

>>> model = load_model("faces-64")
>>> model.generator, model.encoder, model.perceptual, model.directions.names()
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dhr.errors import CheckpointError, ConfigError

__all__ = ["FaceModel", "load_model", "available_models", "MODEL_JSON", "DEFAULT_MODEL", "register_small_components",
           "load_official_encoder"]

log = logging.getLogger(__name__)
MODEL_JSON = "model.json"
DEFAULT_MODEL = "faces-64"
_ASSETS = Path(__file__).resolve().parents[1] / "assets" / "models"
_MANIFEST_KEYS = {"name", "description", "resolution", "components", "parser", "template", "card", "training",
                  "licence", "perceptual_name", "config"}
_COMPONENTS = ("generator", "encoder", "perceptual", "classifier", "directions")


def register_small_components() -> None:
    """Registers the bundled model's small networks with the native checkpoint format."""
    from dhr.models.checkpoint import register_component
    from dhr.models.small_encoder import SmallEncoder, SmallEncoderConfig
    from dhr.models.small_nets import AttributeClassifier, ClassifierConfig, PerceptualConfig, TinyPerceptual

    register_component("SmallEncoder", SmallEncoder, SmallEncoderConfig)
    register_component("AttributeClassifier", AttributeClassifier, ClassifierConfig)
    register_component("TinyPerceptual", TinyPerceptual, PerceptualConfig)


@dataclass(frozen=True)
class FaceModel:
    """A loaded named model. Components other than the generator may be None.

    Attributes:
        name: Model name (``faces-64``) or folder name.
        path: Its folder.
        generator: The StyleGAN2 generator (eval mode, frozen).
        encoder: Image -> W+ encoder taking ``(x, w_avg)``, or None.
        perceptual: Perceptual metric with the LPIPS interface, or None.
        classifier: Attribute classifier (age, gender), or None.
        directions: :class:`dhr.editing.DirectionSet` of named edit directions, or None.
        template: Alignment template as plain data (see :mod:`dhr.faces.align`), or None.
        manifest: The parsed ``model.json``.
    """

    name: str
    path: Path
    generator: nn.Module
    encoder: nn.Module | None = None
    perceptual: nn.Module | None = None
    classifier: nn.Module | None = None
    directions: Any = None
    template: dict | None = None
    manifest: dict = field(default_factory=dict)

    @property
    def resolution(self) -> int:
        return int(self.generator.resolution)

    def recommended_config(self) -> Any:
        """The model's recommended :class:`dhr.config.InvertConfig`: ``model.json``'s ``config`` options
        over the reference defaults (the reference defaults alone when it has none).

        The reference step counts were tuned for FFHQ at 1024 px; a model may ship settings that
        suit it better (the bundled ``faces-64`` refines longer). Options passed by the user are
        applied on top of these (:class:`dhr.pipeline.Pipeline`).
        """
        from dhr.config import InvertConfig, config_from_dict

        options = (self.manifest or {}).get("config")
        return InvertConfig() if not options else config_from_dict(dict(options))

    def to(self, device: torch.device | str) -> FaceModel:
        """Moves every network to ``device`` (in place) and returns self."""
        for m in (self.generator, self.encoder, self.perceptual, self.classifier):
            if m is not None:
                m.to(device)
        return self


def load_official_encoder(folder: str | Path) -> nn.Module:
    """Loads an e4e / pSp encoder folder written by :func:`dhr.models.convert.convert`.

    The folder holds ``model.safetensors`` (official key names), ``encoder_meta.json`` (format and the
    training options) and, when the encoder adds one, ``latent_avg.safetensors``.

    Returns:
        A :class:`dhr.models.encoders.LatentEncoder` in eval mode.

    Raises:
        CheckpointError: A file is missing or does not match the options.
    """
    from dhr.models.checkpoint import load_state_file
    from dhr.models.encoders.psp import load_encoder

    folder = Path(folder)
    meta_path, weights = folder / "encoder_meta.json", folder / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"encoder folder {folder}: missing model.safetensors; convert the checkpoint again")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{meta_path}: unreadable ({e}); convert the checkpoint again") from None
    kind = meta.get("format")
    if kind not in ("e4e", "psp"):
        raise CheckpointError(f"{meta_path}: format {kind!r} is not an encoder format (e4e or psp)")
    avg_path = folder / "latent_avg.safetensors"
    latent_avg = load_state_file(avg_path)["latent_avg"] if avg_path.is_file() else None
    return load_encoder(load_state_file(weights), latent_avg, meta.get("opts") or None, kind=kind).eval()


def available_models() -> list[str]:
    """Names of the bundled models."""
    if not _ASSETS.is_dir():
        return []
    return sorted(p.name for p in _ASSETS.iterdir() if (p / MODEL_JSON).is_file())


def _resolve(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.is_dir():
        return p
    if isinstance(name_or_path, str) and (_ASSETS / name_or_path).is_dir():
        return _ASSETS / name_or_path
    raise ConfigError(
        f"unknown model {str(name_or_path)!r}: not a folder and not a bundled model; bundled models: "
        f"{available_models() or 'none installed'} (or pass a folder holding {MODEL_JSON})"
    )


def load_model(name_or_path: str | Path = DEFAULT_MODEL, *, device: torch.device | str | None = None) -> FaceModel:
    """Loads a named or folder model; never unpickles, never downloads.

    Args:
        name_or_path: A bundled model name (see :func:`available_models`) or a folder with ``model.json``.
        device: Optional device to move the networks to.

    Raises:
        ConfigError: Unknown name, or a malformed ``model.json``.
        CheckpointError: A component folder is missing or corrupt.
    """
    from dhr.models.checkpoint import load_pretrained

    register_small_components()
    folder = _resolve(name_or_path)
    mpath = folder / MODEL_JSON
    if not mpath.is_file():
        # A plain native generator folder is a model too.
        gen = load_pretrained(folder, expected_class="Generator")
        return FaceModel(name=folder.name, path=folder, generator=gen.eval().requires_grad_(False))
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{mpath}: not valid JSON ({e})") from None
    unknown = set(manifest) - _MANIFEST_KEYS
    if unknown:
        raise ConfigError(f"{mpath}: unknown keys {sorted(unknown)}; known: {sorted(_MANIFEST_KEYS)}")
    comps = manifest.get("components", {})
    bad = set(comps) - set(_COMPONENTS)
    if bad or "generator" not in comps:
        raise ConfigError(f"{mpath}: components must include 'generator' and only {list(_COMPONENTS)}; got {sorted(comps)}")
    loaded: dict[str, Any] = {}
    for key in ("generator", "encoder", "perceptual", "classifier"):
        if key in comps:
            sub = folder / comps[key]
            if not sub.is_dir():
                raise CheckpointError(f"{mpath}: component '{key}' folder {sub} is missing; reinstall the model")
            if key == "encoder" and (sub / "encoder_meta.json").is_file():
                loaded[key] = load_official_encoder(sub).requires_grad_(False)
            else:
                loaded[key] = load_pretrained(sub).eval().requires_grad_(False)
    if "directions" in comps:
        from dhr.editing import DirectionSet

        loaded["directions"] = DirectionSet.load(folder / comps["directions"])
    template = None
    if manifest.get("template"):
        template = json.loads((folder / manifest["template"]).read_text(encoding="utf-8"))
    if manifest.get("config") is not None:
        from dhr.config import config_from_dict

        if not isinstance(manifest["config"], dict):
            raise ConfigError(f"{mpath}: 'config' must be a mapping of inversion options")
        try:
            config_from_dict(manifest["config"])
        except ConfigError as e:
            raise ConfigError(f"{mpath}: recommended 'config' is invalid: {e}") from None
    model = FaceModel(name=manifest.get("name", folder.name), path=folder, template=template, manifest=manifest, **loaded)
    if device is not None:
        model.to(device)
    return model
