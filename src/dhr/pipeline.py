"""High-level API: photo in, inversion and edits out, in the style of ``diffusers`` pipelines.

Example:
    >>> from dhr import Pipeline
    >>> pipe = Pipeline.from_pretrained("faces-64", device="auto")
    >>> inv = pipe.invert("photo.jpg")[0]          # one result per processed face
    >>> inv.image.save("reconstruction.png")         # PIL images: .image, .mask_image, .aligned_image
    >>> out = pipe.edit(inv, age=2, smile=-1)       # re-rendered, never re-optimised
    >>> out.pasted.save("edited.jpg")                # the edit blended back into the full photo
    >>> pipe.save_bundle(inv, "photo_face0")         # reload later with pipe.load_bundle

Stages: detect -> align (the model's template at its resolution) -> embed -> segment (landmark
parser when the face has landmarks, none otherwise) -> refine -> edit -> paste back. Everything
the pipeline decided on its own (a whole-image fallback, a parser left out) is listed in
``PhotoInversion.notes`` and logged.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from dhr.checks import check_choice
from dhr.errors import ConfigError, EditError, FaceNotFoundError, ImageError

if TYPE_CHECKING:
    from PIL import Image

    from dhr.config import InvertConfig
    from dhr.faces.align import AlignedFace, AlignTemplate
    from dhr.io.image import Photo
    from dhr.models.zoo import FaceModel
    from dhr.types import Inversion

__all__ = [
    "DEVICES",
    "PARSERS",
    "PERCEPTUALS",
    "EditResult",
    "PhotoInversion",
    "Pipeline",
    "SweepResult",
    "as_photo",
    "resolve_device",
]

logger = logging.getLogger(__name__)

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
PERCEPTUALS: tuple[str, ...] = ("model", "alex", "vgg", "squeeze")
PARSERS: tuple[str, ...] = ("auto", "landmarks", "none")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks cuda > mps > cpu; other names are checked for availability.

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


def _pil(x: torch.Tensor | np.ndarray) -> Image.Image:
    from PIL import Image

    from dhr.io.image import tensor_to_uint8

    arr = tensor_to_uint8(x.detach().cpu()) if isinstance(x, torch.Tensor) else np.asarray(x)
    return Image.fromarray(np.ascontiguousarray(arr), "RGB")


def as_photo(source: Any) -> Photo:
    """A :class:`~dhr.io.image.Photo` from a path, bytes, PIL image, ``(H, W, 3)`` uint8 array, or
    ``(3, H, W)`` float tensor in [-1, 1].

    Raises:
        ImageError: Unreadable file or unsupported object.
    """
    import hashlib

    from dhr.io.image import Photo, load_image, tensor_to_uint8

    if isinstance(source, Photo):
        return source
    if isinstance(source, (str, Path, bytes, bytearray, memoryview)):
        return load_image(source)
    pixels = None
    try:
        from PIL import Image

        if isinstance(source, Image.Image):
            pixels = np.asarray(source.convert("RGB"), dtype=np.uint8)
    except ImportError:  # PIL is a core dependency; keep the array path working without it
        pass
    if pixels is None and isinstance(source, torch.Tensor):
        if source.ndim != 3 or source.shape[0] != 3 or not source.is_floating_point():
            raise ImageError(f"a tensor photo must be float (3, H, W) in [-1, 1], got {list(source.shape)} {source.dtype}")
        pixels = tensor_to_uint8(source.detach().cpu())
    if pixels is None and isinstance(source, np.ndarray):
        pixels = source
    if pixels is None:
        raise ImageError(f"cannot read a photo from a {type(source).__name__}; pass a path, PIL image, "
                         "(H, W, 3) uint8 array or (3, H, W) tensor in [-1, 1]")
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ImageError(f"a photo array must be (H, W, 3) uint8, got {pixels.shape} {pixels.dtype}")
    pixels = np.ascontiguousarray(pixels)
    digest = hashlib.sha256(pixels.tobytes()).hexdigest()
    pixels = pixels.copy()
    pixels.setflags(write=False)
    return Photo(pixels=pixels, original_size=(pixels.shape[1], pixels.shape[0]), sha256=digest)


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class PhotoInversion:
    """One inverted face (or whole image) of a photo.

    Attributes:
        inversion: The engine's :class:`~dhr.types.Inversion` (tensors on the pipeline's device).
        aligned: The :class:`~dhr.faces.align.AlignedFace` it was made from (crop at the model
            resolution and the transforms back to the photo), or None.
        photo: The source :class:`~dhr.io.image.Photo`, or None (inverted from a bare crop or
            reloaded from a bundle whose photo is gone).
        stem: File stem for outputs (``<photo>_face<i>`` or ``<photo>_whole``).
        notes: Fallbacks and remarks (whole-image processing, parser left out, ...).
        timings: Seconds per stage (``align_s``, ``parse_s`` and the engine's stages).
    """

    inversion: Inversion
    aligned: AlignedFace | None = None
    photo: Photo | None = None
    stem: str = "image"
    notes: tuple[str, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def image(self) -> Image.Image:
        """The reconstruction as a PIL RGB image (R x R)."""
        return _pil(self.inversion.image)

    @property
    def aligned_image(self) -> Image.Image:
        """The aligned input crop as a PIL RGB image."""
        if self.aligned is not None:
            return _pil(self.aligned.crop)
        return _pil(self.inversion.target)

    @property
    def mask_image(self) -> Image.Image | None:
        """The domain mask m (white = in-domain) as a PIL ``L`` image, or None for methods without one."""
        from PIL import Image

        if self.inversion.domain is None:
            return None
        m = self.inversion.domain.mask.detach().cpu().float().reshape(self.inversion.domain.mask.shape[-2:])
        return Image.fromarray((m.clamp(0, 1) * 255).round().to(torch.uint8).numpy(), "L")

    @property
    def whole_image(self) -> bool:
        """True when no face was used and the whole photo was fitted into the crop."""
        return bool(self.aligned is not None and self.aligned.whole_image)

    @property
    def method(self) -> str:
        return self.inversion.method

    def final_losses(self) -> dict[str, float]:
        """Last value of every loss curve of the inversion."""
        from dhr.records import final_losses

        return final_losses(self.inversion.losses)

    def to_numpy(self) -> np.ndarray:
        """The reconstruction as ``(R, R, 3)`` uint8."""
        from dhr.io.image import tensor_to_uint8

        return tensor_to_uint8(self.inversion.image.detach().cpu())

    def to_tensor(self) -> torch.Tensor:
        """The reconstruction as ``(3, R, R)`` float32 in [-1, 1] (unclamped, detached CPU copy)."""
        return self.inversion.image.detach().to("cpu", torch.float32).clone()


@dataclass(frozen=True)
class EditResult:
    """An edit of a :class:`PhotoInversion`.

    Attributes:
        tensor: ``(3, R, R)`` edited crop in [-1, 1] (CPU, unclamped).
        ws: ``(num_ws, D)`` edited W+ code.
        strengths: Direction name -> strength, in the order applied.
        pasted_pixels: ``(H, W, 3)`` uint8 photo with the edited face blended in, or None when the
            photo is unknown.
        paste_mask: ``(H, W)`` float32 blend weights of the paste, or None.
    """

    tensor: torch.Tensor
    ws: torch.Tensor
    strengths: dict[str, float]
    pasted_pixels: np.ndarray | None = None
    paste_mask: np.ndarray | None = None

    @property
    def crop(self) -> Image.Image:
        """The edited crop as a PIL image."""
        return _pil(self.tensor)

    @property
    def pasted(self) -> Image.Image | None:
        """The photo with the edit pasted back, as a PIL image (None without a photo)."""
        return None if self.pasted_pixels is None else _pil(self.pasted_pixels)

    @property
    def name(self) -> str:
        """A file-name-safe label such as ``age+2_smile-1`` (``inversion`` for no edit)."""
        return edit_label(self.strengths)


@dataclass(frozen=True)
class SweepResult:
    """A strength sweep along one direction.

    Attributes:
        name: The direction.
        strengths: The strengths, in order.
        frames: One ``(R, R, 3)`` uint8 crop per strength (or pasted photos with ``paste=True``).
        grid: The frames as one labelled ``uint8`` image (see :func:`dhr.editing.sweep_grid`).
    """

    name: str
    strengths: tuple[float, ...]
    frames: list[np.ndarray]
    grid: np.ndarray

    def save_gif(self, path: str | Path, fps: float = 8.0) -> Path:
        """Writes the frames as a ping-pong GIF."""
        from dhr.editing import save_gif

        return save_gif(self.frames, path, fps=fps, pingpong=True)


def edit_label(strengths: Mapping[str, float]) -> str:
    """``{"age": 2, "smile": -1}`` -> ``age+2_smile-1``; empty -> ``inversion``."""
    if not strengths:
        return "inversion"
    return "_".join(f"{k}{float(v):+g}" for k, v in strengths.items())


# --------------------------------------------------------------------------------------------
# The pipeline


def _resize(t: torch.Tensor, size: int) -> torch.Tensor:
    if t.shape[-1] == size and t.shape[-2] == size:
        return t
    return F.interpolate(t[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]


def _alignment_meta(aligned: AlignedFace, photo: Photo | None) -> dict[str, Any]:
    return {
        "matrix": np.asarray(aligned.matrix, dtype=float).tolist(),
        "landmarks": None if aligned.landmarks is None else np.asarray(aligned.landmarks, dtype=float).tolist(),
        "source_box": None if aligned.source_box is None else [float(v) for v in aligned.source_box],
        "face_index": int(aligned.face_index),
        "template_name": aligned.template_name,
        "photo_size": [int(v) for v in aligned.photo_size],
        "whole_image": bool(aligned.whole_image),
        "source": aligned.source,
        "photo_path": None if photo is None or photo.path is None else str(Path(photo.path).resolve()),
        "photo_sha256": None if photo is None else photo.sha256,
        "notes": list(aligned.notes),
    }


def _user_mask_for_crop(mask: Any, aligned: Any, photo: Any, R: int) -> torch.Tensor:
    """A user's out-of-domain mask (photo or crop coordinates) as an in-domain mask ``(1, R, R)`` of the crop."""
    from PIL import Image

    from dhr.faces.align import sample_affine

    if isinstance(mask, (str, Path)):
        try:
            with Image.open(mask) as im:
                arr = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        except OSError as e:
            raise ImageError(f"mask {mask}: not a readable image ({e})") from None
    elif isinstance(mask, Image.Image):
        arr = np.asarray(mask.convert("L"), dtype=np.float32) / 255.0
    else:
        t = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask).float().squeeze()
        if t.ndim != 2:
            raise ImageError(f"mask must be 2-D (H, W), got shape {tuple(t.shape)}")
        arr = (t > 0).float().cpu().numpy()
    h, w = arr.shape
    S = aligned.size
    if photo is not None:
        if (h, w) != tuple(photo.pixels.shape[:2]):
            raise ImageError(f"mask is {w}x{h} but the photo is {photo.pixels.shape[1]}x{photo.pixels.shape[0]}; "
                             "draw the mask on the photo itself (white = out of domain)")
        crop_to_src = aligned.inverse
    else:
        if (h, w) != (S, S):
            raise ImageError(f"mask is {w}x{h} but the aligned face is {S}x{S}; give a mask of the crop's size")
        crop_to_src = np.eye(3)
    # Output pixel x_R of the R x R crop sits at x_S = (x_R + 0.5) * S / R - 0.5 of the S x S crop.
    k = S / R
    r_to_s = np.array([[k, 0, 0.5 * k - 0.5], [0, k, 0.5 * k - 0.5], [0, 0, 1]], dtype=np.float64)
    ood = sample_affine(torch.from_numpy(arr)[None], crop_to_src @ r_to_s, (R, R), supersample=2,
                        padding_mode="zeros")
    return (ood < 0.5).float()


class Pipeline:
    """Detect, align, invert, edit and paste back with one named model.

    Build it with :meth:`from_pretrained`. The generator is never modified: per-photo weight
    changes live in each result.

    Args:
        model: A loaded :class:`~dhr.models.zoo.FaceModel`.
        config: None for the model's recommended settings (:meth:`FaceModel.recommended_config`:
            ``model.json``'s ``config`` over the reference defaults); a dict of options or a
            TOML/YAML/JSON file, applied over those; or a complete :class:`~dhr.config.InvertConfig`.
        device: ``auto`` (cuda > mps > cpu), ``cpu``, ``cuda`` or ``mps``.
        seed: Seeds torch and the optimisation configs before every inversion (reproducible runs).
        perceptual: ``model`` (the model's own perceptual metric, default; LPIPS-alex when the model
            has none), or ``alex``/``vgg``/``squeeze`` (LPIPS, weights resolved by :mod:`dhr.weights`).
        parser: ``auto`` (the model's ``parser`` entry, landmarks for faces), ``landmarks`` or ``none``.
        method: Overrides ``config.method`` (``dhr``, ``pti``, ``feature``, ``encoder``, ``optim``).
    """

    def __init__(self, model: FaceModel, *, config: InvertConfig | Mapping[str, Any] | str | Path | None = None,
                 device: str | torch.device = "auto", seed: int = 0, perceptual: str = "model",
                 parser: str = "auto", method: str | None = None) -> None:
        check_choice(perceptual, PERCEPTUALS, "perceptual")
        check_choice(parser, PARSERS, "parser")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigError(f"seed must be an integer, got {seed!r}")
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.config = self._with_method(self._load_config(config, model.recommended_config()), method)
        self.seed = seed
        self.perceptual_name = perceptual
        self.parser_name = parser
        self._perceptual: torch.nn.Module | None = None

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = "faces-64", *, device: str | torch.device = "auto",
                        config: InvertConfig | Mapping[str, Any] | str | Path | None = None, seed: int = 0,
                        perceptual: str = "model", parser: str = "auto", method: str | None = None) -> Pipeline:
        """Loads a bundled model by name (``dhr models list``) or a model folder.

        Raises:
            ConfigError: Unknown model (the message lists the available ones), bad config or device.
            CheckpointError: A damaged model folder.
        """
        from dhr.models.zoo import load_model

        resolve_device(device)  # fail fast before loading
        return cls(load_model(name_or_path), config=config, device=device, seed=seed, perceptual=perceptual,
                   parser=parser, method=method)

    @staticmethod
    def _load_config(config: Any, base: InvertConfig) -> InvertConfig:
        """``None``: the model's recommended config; a dict or file: its options over it; an
        :class:`InvertConfig`: used as given (complete)."""
        from dhr.config import InvertConfig, config_from_dict, load_config

        if config is None:
            return base
        if isinstance(config, InvertConfig):
            return config
        if isinstance(config, Mapping):
            return config_from_dict(dict(config), base=base)
        if isinstance(config, (str, Path)):
            return load_config(config, base=base)
        raise ConfigError(f"config must be an InvertConfig, a dict or a file path, got {type(config).__name__}")

    # -- components -----------------------------------------------------------------------

    @property
    def generator(self) -> torch.nn.Module:
        return self.model.generator

    @property
    def resolution(self) -> int:
        return int(self.model.generator.resolution)

    @property
    def directions(self):
        """The model's :class:`~dhr.editing.DirectionSet`.

        Raises:
            EditError: If the model has none.
        """
        if self.model.directions is None or len(self.model.directions) == 0:
            raise EditError(f"model {self.model.name!r} has no edit directions; pick a model that ships some "
                            "(dhr models list) or fit them (dhr.editing)")
        return self.model.directions

    @property
    def perceptual(self) -> torch.nn.Module:
        """The perceptual metric used by the losses and the error maps (built on first use)."""
        if self._perceptual is None:
            if self.perceptual_name == "model" and self.model.perceptual is not None:
                self._perceptual = self.model.perceptual
            else:
                from dhr.metrics.lpips import LPIPS

                net = "alex" if self.perceptual_name == "model" else self.perceptual_name
                if self.perceptual_name == "model":
                    logger.warning("model %s has no perceptual metric; using LPIPS-%s", self.model.name, net)
                self._perceptual = LPIPS.from_registry(net).to(self.device)
        return self._perceptual

    def template(self) -> AlignTemplate:
        """The alignment template at the model resolution (the model's own, else FFHQ framing)."""
        from dhr.faces.align import AlignTemplate

        if self.model.template:
            return AlignTemplate.from_dict(dict(self.model.template)).with_size(self.resolution)
        return AlignTemplate.ffhq(self.resolution)

    def _use_parser(self, aligned: AlignedFace) -> bool:
        if aligned.landmarks is None or self.parser_name == "none":
            return False
        if self.parser_name == "landmarks":
            return True
        wanted = (self.model.manifest or {}).get("parser", "landmarks")
        return wanted == "landmarks"

    # -- stages ---------------------------------------------------------------------------

    def align(self, photo: Any, *, face_index: int | None = None, whole_image: bool = False,
              detector: str = "hog") -> list[AlignedFace]:
        """Detects faces and aligns them at the model resolution.

        Args:
            photo: Path, bytes, PIL image, uint8 array, tensor or :class:`~dhr.io.image.Photo`.
            face_index: Only this face (0 = largest); None = every usable face, largest first.
            whole_image: When no face is found, fit the whole photo into the crop instead of
                failing (recorded as ``AlignedFace.whole_image``).
            detector: ``hog`` or ``cnn`` (dlib).

        Raises:
            FaceNotFoundError: No usable face (and ``whole_image`` is False), or no face ``face_index``.
            ImageError: Unreadable photo.
        """
        from dhr.faces.align import align_face, align_whole_image
        from dhr.faces.detect import detect_faces

        photo = as_photo(photo)
        template = self.template()
        try:
            faces = detect_faces(photo, detector=detector)
        except FaceNotFoundError:
            if whole_image:
                return [align_whole_image(photo, template)]
            raise FaceNotFoundError(
                f"no usable face in {photo.name}; pass whole_image=True (CLI: --whole-image) to process the "
                "whole image instead, or crop the photo around the face") from None
        found = len(faces)
        skipped = ""
        if face_index is not None:
            if not 0 <= face_index < len(faces):
                raise FaceNotFoundError(f"{photo.name} has {len(faces)} usable face(s); face index {face_index} "
                                        f"does not exist (choose 0..{len(faces) - 1})")
            faces = [faces[face_index]]
            if found > 1:
                skipped = (f"{found} faces found, processed face {face_index}, skipped {found - 1}; "
                           "use --all-faces for all of them (--face-index N for another one)")
                logger.warning("%s: %s", photo.name, skipped)
        aligned = []
        for f in faces:
            a = align_face(photo, f, template)
            aligned.append(dataclasses.replace(a, faces_found=found, notes=(*a.notes, skipped) if skipped else a.notes))
        return aligned

    @staticmethod
    def _with_method(cfg: InvertConfig, method: str | None) -> InvertConfig:
        if method is None:
            return cfg
        from dhr.config import METHODS

        check_choice(method, METHODS, "method")
        embed = cfg.embed if method not in ("encoder", "optim") else None
        return dataclasses.replace(cfg, method=method, embed=embed)

    def _config_for(self, method: str | None) -> InvertConfig:
        cfg = self._with_method(self.config, method)
        return dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, seed=self.seed),
                                   coarse=dataclasses.replace(cfg.coarse, seed=self.seed))

    def invert(self, image: Any, *, method: str | None = None, face_index: int | None = None,
               whole_image: bool = False, progress: Any = None, ood_mask: Any = None) -> list[PhotoInversion]:
        """Inverts every processed face of a photo (or one aligned face).

        Args:
            image: Path, bytes, PIL image, uint8 array, ``(3, H, W)`` tensor, Photo, or an
                :class:`~dhr.faces.align.AlignedFace` (then detection and alignment are skipped).
            method: ``dhr``, ``pti``, ``feature``, ``encoder`` or ``optim``; default the config's.
            face_index: Only this face (0 = largest); None = every face.
            whole_image: Fall back to the whole image when no face is found (recorded in ``notes``).
            progress: Optional ``progress(stage, step, total, info)`` callable, e.g. a
                :class:`dhr.progress.Reporter`.
            ood_mask: Your own out-of-domain mask instead of DHR's segmentation (``method="dhr"``
                only): a path, PIL image, ``(H, W)`` array or tensor, nonzero / white = out of domain
                (hands, glasses, background to keep). It has the photo's size (it is warped into each
                face's crop with the alignment) or, when ``image`` is an aligned face, the crop's.

        Returns:
            One :class:`PhotoInversion` per face, largest face first.

        Raises:
            FaceNotFoundError, ImageError, ConfigError: See :meth:`align` and :func:`dhr.engine.invert`.
        """
        from dhr.engine import invert as engine_invert
        from dhr.faces.align import AlignedFace

        config = self._config_for(method)
        t0 = time.perf_counter()
        if isinstance(image, AlignedFace):
            photo, faces = None, [image]
        else:
            photo = as_photo(image)
            faces = self.align(photo, face_index=face_index, whole_image=whole_image)
        align_s = time.perf_counter() - t0
        R = self.resolution
        targets = torch.stack([_resize(a.to_tensor(), R) for a in faces]).to(self.device)
        notes: list[list[str]] = []
        parsing: list[Any] = []
        t0 = time.perf_counter()
        for a, target in zip(faces, targets):
            n = list(a.notes)
            if a.whole_image and not n:
                n.append("no face found: processed the whole image resized to the model resolution")
            if config.method == "dhr" and self._use_parser(a):
                from dhr.faces.parsing import LandmarkParser

                scale = R / a.size
                parsing.append(LandmarkParser().parse(target, np.asarray(a.landmarks) * scale))
            else:
                parsing.append(None)
                if config.method == "dhr":
                    n.append("segmentation without a face parser (no landmarks)" if a.landmarks is None
                             else f"segmentation without a face parser (parser={self.parser_name})")
            notes.append(n)
        parse_s = time.perf_counter() - t0
        user_masks = None
        if ood_mask is not None:
            if config.method != "dhr":
                raise ConfigError(f"ood_mask is used by method 'dhr' only, not {config.method!r}")
            user_masks = torch.stack([_user_mask_for_crop(ood_mask, a, photo, R) for a in faces]).to(self.device)
            for n in notes:
                n.append("domain mask given by the user (DHR's segmentation skipped)")
        torch.manual_seed(self.seed)
        invs = engine_invert(self.generator, targets, config=config, perceptual=self.perceptual,
                             encoder=self.model.encoder,
                             parsing=parsing if config.method == "dhr" and user_masks is None else None,
                             masks=user_masks, progress=progress)
        base = "image" if photo is None or photo.path is None else Path(photo.path).stem
        out = []
        for a, inv, n in zip(faces, invs, notes):
            for note in n:
                logger.info("%s: %s", a.source or base, note)
            meta = dict(inv.meta)
            meta.update({"alignment": _alignment_meta(a, photo), "model_name": self.model.name,
                         "seed": self.seed, "notes": n})
            stem = f"{base}_whole" if a.whole_image else f"{base}_face{max(a.face_index, 0)}"
            timings = {"align_s": align_s / len(faces), "parse_s": parse_s / len(faces),
                       **{k: v for k, v in meta.get("timings", {}).items() if k.endswith("_s")}}
            out.append(PhotoInversion(inversion=dataclasses.replace(inv, meta=meta), aligned=a, photo=photo,
                                      stem=stem, notes=tuple(n), timings=timings))
        return out

    def validate_edits(self, edits: Mapping[str, float] | None = None, **more: float) -> dict[str, float]:
        """Checks names and strengths without rendering; returns name -> float strength in order.

        Raises:
            EditError: Unknown direction (listing the known ones) or a strength that is not a number.
        """
        return self._resolve_edits(edits, more)

    def _resolve_edits(self, edits: Mapping[str, float] | None, kwargs: Mapping[str, float]) -> dict[str, float]:
        strengths: dict[str, float] = {}
        for src in (edits or {}), kwargs:
            for name, value in src.items():
                try:
                    strengths[str(name)] = float(value)
                except (TypeError, ValueError):
                    raise EditError(f"edit {name!r}: strength {value!r} is not a number") from None
        if strengths:
            dirs = self.directions
            for name in strengths:
                dirs[name]  # raises EditError listing the known names
        return strengths

    def edit(self, inv: PhotoInversion, edits: Mapping[str, float] | None = None, *, paste: bool = True,
             **more: float) -> EditResult:
        """Applies named edits to the W+ code and re-renders (no optimisation), then pastes back.

        Example: ``pipe.edit(inv, age=2, smile=-1)`` or ``pipe.edit(inv, {"age": 2})``.

        Args:
            inv: A result of :meth:`invert` or :meth:`load_bundle`.
            edits: Direction name -> strength (applied in order, then those in ``more``).
            paste: Blend the edited crop back into the photo when it is known.

        Returns:
            The :class:`EditResult`; with no edit at all, the reconstruction.

        Raises:
            EditError: Unknown direction (the message lists the known ones) or bad strength.
        """
        from dhr.editing import apply_edits
        from dhr.engine import render

        strengths = self._resolve_edits(edits, more)
        G = self.generator
        ws = inv.inversion.ws.to(self.device)
        if strengths:
            ws = apply_edits(ws[None], [(self.directions[k], v) for k, v in strengths.items()])[0]
        with torch.no_grad():
            img = render(G, inv.inversion, ws).detach().to("cpu", torch.float32)
        pasted = mask = None
        if paste and inv.photo is not None and inv.aligned is not None:
            pasted, mask = self._paste(inv, img)
        return EditResult(tensor=img, ws=ws.detach().cpu(), strengths=strengths, pasted_pixels=pasted,
                          paste_mask=mask)

    def _paste(self, inv: PhotoInversion, crop: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        from dhr.faces.paste import paste_back

        a = inv.aligned
        if crop.shape[-1] != a.size:
            crop = _resize(crop, a.size)
        res = paste_back(inv.photo, a, crop)
        return res.image, res.mask

    def paste(self, inv: PhotoInversion, crop: torch.Tensor | None = None) -> Image.Image:
        """Blends ``crop`` (default the reconstruction) back into the photo.

        Raises:
            ImageError: When the result has no photo (bare crop, or a bundle whose photo is gone).
        """
        if inv.photo is None or inv.aligned is None:
            raise ImageError(f"{inv.stem}: the source photo is not available; cannot paste back")
        img = inv.inversion.image if crop is None else crop
        return _pil(self._paste(inv, img.detach().cpu().float())[0])

    def sweep(self, inv: PhotoInversion, name: str, strengths: Sequence[float] = (-2, -1, 0, 1, 2), *,
              paste: bool = False) -> SweepResult:
        """Renders a strength sweep along direction ``name`` (frames and a labelled grid).

        Args:
            inv: The result to edit.
            name: Direction name.
            strengths: Strengths, in order.
            paste: Frames are the pasted photos instead of the crops (needs the photo).

        Raises:
            EditError: Unknown direction or bad strengths.
        """
        from dhr.editing import sweep_codes, sweep_grid
        from dhr.engine import render
        from dhr.io.image import tensor_to_uint8

        strengths = tuple(float(s) for s in strengths)
        if not strengths:
            raise EditError("sweep needs at least one strength")
        direction = self.directions[name]
        codes = sweep_codes(inv.inversion.ws.to(self.device)[None], direction, strengths)
        frames = []
        with torch.no_grad():
            for ws in codes:
                img = render(self.generator, inv.inversion, ws[0]).detach().to("cpu", torch.float32)
                if paste:
                    if inv.photo is None or inv.aligned is None:
                        raise ImageError(f"{inv.stem}: paste=True needs the source photo")
                    frames.append(self._paste(inv, img)[0])
                else:
                    frames.append(tensor_to_uint8(img))
        grid = sweep_grid([frames], row_labels=[name], col_labels=[f"{s:+g}" for s in strengths])
        return SweepResult(name=name, strengths=strengths, frames=frames, grid=grid)

    # -- persistence ----------------------------------------------------------------------

    def save_bundle(self, inv: PhotoInversion, path: str | Path) -> tuple[Path, Path]:
        """Saves ``<path>.safetensors`` + ``<path>.json`` (the alignment and photo path included)."""
        from dhr.bundle import save_bundle

        return save_bundle(inv.inversion, path)

    def load_bundle(self, path: str | Path) -> PhotoInversion:
        """Loads a bundle made with this model; the photo is reloaded when its file is still there
        with the recorded sha256 (else ``photo`` is None and pasting is unavailable).

        Raises:
            CheckpointError: Missing/corrupt bundle, or one made with another generator.
        """
        from dhr.bundle import bundle_paths, load_bundle
        from dhr.faces.align import AlignedFace
        from dhr.io.image import load_image, tensor_to_uint8

        inv = load_bundle(path, model=self.generator, device=self.device)
        stem = bundle_paths(path)[0].name.removesuffix(".safetensors")
        al = inv.meta.get("alignment")
        notes = list(inv.meta.get("notes", []) or [])
        aligned = photo = None
        if isinstance(al, dict) and al.get("matrix") is not None:
            matrix = np.asarray(al["matrix"], dtype=np.float64)
            size = int(inv.target.shape[-1])
            aligned = AlignedFace(
                crop=tensor_to_uint8(inv.target.detach().cpu()),
                matrix=matrix,
                inverse=np.linalg.inv(matrix),
                landmarks=None if al.get("landmarks") is None else np.asarray(al["landmarks"], dtype=np.float64),
                source_box=None if al.get("source_box") is None else tuple(al["source_box"]),
                face_index=int(al.get("face_index", 0)),
                template_name=str(al.get("template_name", "")),
                photo_size=tuple(al.get("photo_size", (size, size))),
                whole_image=bool(al.get("whole_image", False)),
                source=str(al.get("source", "")),
            )
            ppath = al.get("photo_path")
            if ppath and Path(ppath).is_file():
                try:
                    cand = load_image(ppath)
                except ImageError as e:
                    notes.append(f"source photo {ppath} unreadable ({e}); pasting unavailable")
                else:
                    if al.get("photo_sha256") in (None, cand.sha256):
                        photo = cand
                    else:
                        notes.append(f"source photo {ppath} changed since the inversion; pasting unavailable")
            elif ppath:
                notes.append(f"source photo {ppath} not found; pasting unavailable")
        for n in notes:
            logger.info("%s: %s", stem, n)
        return PhotoInversion(inversion=inv, aligned=aligned, photo=photo, stem=stem, notes=tuple(notes),
                              timings=dict(inv.meta.get("timings", {}) or {}))

    def __repr__(self) -> str:
        return (f"Pipeline(model={self.model.name!r}, resolution={self.resolution}, device={str(self.device)!r}, "
                f"method={self.config.method!r}, seed={self.seed})")
