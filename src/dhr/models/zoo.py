"""Named models: a folder of native components (generator, encoder, perceptual metric, classifier,
directions, alignment template) described by ``model.json``.

Bundled models live in ``dhr/assets/models/<name>/`` and load without any download:

>>> model = load_model("faces-64")
>>> model.generator, model.encoder, model.perceptual, model.directions.names()
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dhr.errors import CheckpointError, ConfigError
from dhr.fileio import sha256_file

__all__ = ["FaceModel", "load_model", "available_models", "MODEL_JSON", "DEFAULT_MODEL", "register_small_components",
           "load_official_encoder"]

log = logging.getLogger(__name__)
MODEL_JSON = "model.json"
DEFAULT_MODEL = "faces-64"
_ASSETS = Path(__file__).resolve().parents[1] / "assets" / "models"
_MANIFEST_KEYS = {"name", "description", "resolution", "components", "parser", "template", "card", "training",
                  "licence", "perceptual_name", "config", "sha256"}
_MAX_JSON_BYTES = 4 << 20  # model.json, template.json

# sha256 of the weights of the models shipped inside the package, checked on every load whatever the
# folder's own config.json says: deleting a "sha256" line cannot make a tampered bundled file load.
BUNDLED_SHA256: dict[str, dict[str, str]] = {
    "faces-64": {
        "generator/model.safetensors": "133bed84e932086de7b30c797393ec91b81212bd096fa426e2efaae953b6ff8f",
        "encoder/model.safetensors": "c35c0b68c0c3056dae15c31262a4211c1c261716e40e090f86ba6cdfbc77394f",
        "perceptual/model.safetensors": "7e598989f93e0b2523d36dcd23663937e656953e32c3eaca4c13b98196631f25",
        "classifier/model.safetensors": "c6fbab24f196451a085ff8544c03e5a9f223818b1892b606eb133c9cc9f7c84e",
        "directions/directions.safetensors": "dc99828044fa23a352bfe1eb74ecd9af4d1a9ed6f321f9849823e0e9b4c7b132",
        "occluder/model.safetensors": "4f6941fc5a273759d5011c2482f5312e4c207064d7ada1ea1f3cc9e18e2650a3",
    },
}
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
        config = InvertConfig() if not options else config_from_dict(dict(options))
        occluder = config.segment.occluder
        if occluder is not None and self.path is not None and not Path(occluder).is_absolute():
            # model.json names its occluder network relative to the model folder (it must stay inside).
            mpath = Path(self.path) / MODEL_JSON
            resolved = _inside(Path(self.path), occluder, "config.segment.occluder", mpath, want_dir=True)
            config = dataclasses.replace(config, segment=dataclasses.replace(config.segment, occluder=str(resolved)))
        return config

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
    manifest = _read_json_file(mpath, "model.json")
    _validate_manifest(manifest, folder, mpath)
    _verify_hashes(folder, manifest, mpath, bundled=_bundled_name(folder))
    comps = manifest.get("components", {})
    loaded: dict[str, Any] = {}
    for key in ("generator", "encoder", "perceptual", "classifier"):
        if key in comps:
            sub = _inside(folder, comps[key], f"component '{key}'", mpath, want_dir=True)
            if key == "encoder" and (sub / "encoder_meta.json").is_file():
                loaded[key] = load_official_encoder(sub).requires_grad_(False)
            else:
                loaded[key] = load_pretrained(sub).eval().requires_grad_(False)
    gen_res = getattr(getattr(loaded.get("generator"), "config", None), "resolution", None)
    if manifest.get("resolution") is not None and gen_res is not None and int(gen_res) != manifest["resolution"]:
        raise ConfigError(f"{mpath}: 'resolution' is {manifest['resolution']} but the generator makes {int(gen_res)} "
                          "px images; correct model.json (or the generator folder it names)")
    if "directions" in comps:
        from dhr.editing import DirectionSet

        dpath = _inside(folder, comps["directions"], "component 'directions'", mpath, want_dir=True)
        try:
            loaded["directions"] = DirectionSet.load(dpath)
        except (CheckpointError, ConfigError):
            raise
        except Exception as e:  # noqa: BLE001 - a corrupt file must not surface as a raw traceback
            raise CheckpointError(f"{dpath}: edit directions cannot be read ({type(e).__name__}: {e}); the files "
                                  "are corrupt, reinstall or re-convert the model") from None
        dim = getattr(getattr(loaded["generator"], "config", None), "style_dim", None)
        for name in loaded["directions"].names():
            vec = loaded["directions"][name].vector
            if dim is not None and vec.shape[-1] != int(dim):
                raise CheckpointError(f"{dpath}: direction {name!r} has {vec.shape[-1]} dims, the generator's W has "
                                      f"{int(dim)}; the directions belong to another model")
    template = None
    if manifest.get("template"):
        tpath = _inside(folder, manifest["template"], "template", mpath, want_dir=False)
        template = _read_json_file(tpath, "template")
        from dhr.faces.align import AlignTemplate

        if not isinstance(template, dict):
            raise ConfigError(f"{tpath}: an alignment template must be a JSON object")
        try:
            AlignTemplate.from_dict(dict(template))
        except Exception as e:  # noqa: BLE001 - any malformed template is a model error
            raise ConfigError(f"{tpath}: not a valid alignment template ({type(e).__name__}: {e})") from None
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


def _read_json_file(path: Path, what: str) -> Any:
    """Parses a small JSON file (a regular file of at most 4 MB) of a model folder."""
    import stat

    try:
        st = path.stat()
    except OSError as e:
        raise CheckpointError(f"{path}: {what} cannot be read ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_JSON_BYTES:
        raise CheckpointError(f"{path}: {what} must be a regular JSON file of at most {_MAX_JSON_BYTES:,} bytes")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({type(e).__name__}: {e})") from None


def _inside(folder: Path, rel: Any, what: str, mpath: Path, *, want_dir: bool) -> Path:
    """``folder / rel`` when ``rel`` is a relative path that stays inside ``folder`` (links resolved)."""
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise ConfigError(f"{mpath}: {what} must be a relative path (a string), got {rel!r}")
    if Path(rel).is_absolute():
        raise ConfigError(f"{mpath}: {what} path {rel!r} is absolute; every path of a model must be inside its folder")
    root = folder.resolve()
    try:
        target = (folder / rel).resolve()
    except (OSError, RuntimeError) as e:
        raise ConfigError(f"{mpath}: {what} path {rel!r} cannot be resolved ({e})") from None
    if not target.is_relative_to(root):
        raise ConfigError(f"{mpath}: {what} path {rel!r} leads outside the model folder (to {target}); every path "
                          "of a model must be inside its folder")
    if want_dir and not target.is_dir():
        raise CheckpointError(f"{mpath}: {what} folder {folder / rel} is missing; reinstall the model")
    if not want_dir and not target.is_file():
        raise CheckpointError(f"{mpath}: {what} file {folder / rel} is missing or not a regular file")
    return target


def _validate_manifest(manifest: Any, folder: Path, mpath: Path) -> None:
    """Types and values of ``model.json`` (before anything it names is opened)."""
    if not isinstance(manifest, dict):
        raise ConfigError(f"{mpath}: must hold a JSON object, got {type(manifest).__name__}")
    unknown = set(manifest) - _MANIFEST_KEYS
    if unknown:
        raise ConfigError(f"{mpath}: unknown keys {sorted(unknown)}; known: {sorted(_MANIFEST_KEYS)}")
    for key in ("name", "description", "parser", "template", "card", "licence", "perceptual_name"):
        if key in manifest and manifest[key] is not None and not isinstance(manifest[key], str):
            raise ConfigError(f"{mpath}: '{key}' must be a string, got {type(manifest[key]).__name__}")
    res = manifest.get("resolution")
    if res is not None and (not isinstance(res, int) or isinstance(res, bool) or not 8 <= res <= 1024):
        raise ConfigError(f"{mpath}: 'resolution' must be an integer in 8..1024, got {res!r}")
    for key in ("training", "config", "sha256"):
        if key in manifest and manifest[key] is not None and not isinstance(manifest[key], dict):
            raise ConfigError(f"{mpath}: '{key}' must be a mapping, got {type(manifest[key]).__name__}")
    comps = manifest.get("components", {})
    if not isinstance(comps, dict):
        raise ConfigError(f"{mpath}: 'components' must be a mapping of component -> sub-folder")
    bad = set(comps) - set(_COMPONENTS)
    if bad or "generator" not in comps:
        raise ConfigError(f"{mpath}: components must include 'generator' and only {list(_COMPONENTS)}; got {sorted(comps)}")
    for key, rel in comps.items():
        _inside(folder, rel, f"component '{key}'", mpath, want_dir=True)
    for key in ("template", "card"):
        if manifest.get(key):
            _inside(folder, manifest[key], key, mpath, want_dir=False)
    for rel, digest in (manifest.get("sha256") or {}).items():
        if not isinstance(digest, str) or len(digest) != 64:
            raise ConfigError(f"{mpath}: sha256 of {rel!r} must be 64 hex digits")
        _inside(folder, rel, f"sha256 entry {rel!r}", mpath, want_dir=False)


def _bundled_name(folder: Path) -> str | None:
    try:
        root = folder.resolve()
    except (OSError, RuntimeError):
        return None
    return root.name if root.parent == _ASSETS and root.name in BUNDLED_SHA256 else None


def _verify_hashes(folder: Path, manifest: dict, mpath: Path, *, bundled: str | None) -> None:
    """Checks the files listed in ``manifest["sha256"]`` and, for a bundled model, the shipped list."""
    wanted = dict(manifest.get("sha256") or {})
    if bundled is not None:
        wanted.update(BUNDLED_SHA256[bundled])
    for rel, digest in wanted.items():
        path = folder / rel
        if not path.is_file():
            raise CheckpointError(f"{path}: listed with a sha256 but missing; reinstall the model")
        got = sha256_file(path)
        if got != digest:
            raise CheckpointError(f"{path}: sha256 {got[:12]}... does not match {digest[:12]}... "
                                  f"{'shipped with dhr' if bundled else f'listed in {mpath.name}'}; the file was "
                                  "modified or is corrupt (reinstall the model)")
