"""High-level API: photo in, inversion and edits out, in the style of ``diffusers`` pipelines.

Example:
    >>> from dhr import Pipeline
    >>> pipe = Pipeline.from_pretrained("faces-64", device="auto")
    >>> inv = pipe.invert("photo.jpg")[0]          # one result per processed face
    >>> inv.image.save("reconstruction.png")         # PIL images: .image, .mask_image, .aligned_image
    >>> out = pipe.edit(inv, age=2, smile=-1)       # re-rendered, never re-optimised
    >>> out.pasted.save("edited.jpg")                # the edit blended back into the full photo
    >>> pipe.save_bundle(inv, "photo_face0")         # reload later with pipe.load_bundle

The pipeline only composes: result types are :mod:`dhr.results`, photo coercion
:func:`dhr.io.as_photo`, alignment and user-mask geometry :mod:`dhr.faces.align`, persistence
:mod:`dhr.bundle`, the method itself :func:`dhr.engine.invert`. Size: about 600 lines, a third of them the docstrings of
the public API (one class, as ``diffusers``' pipelines, so that ``help(Pipeline)`` is the manual).

Stages: detect -> align (the model's template at its resolution) -> embed -> segment (the chosen
parser: landmarks, BiSeNet, FaRL or none) -> refine -> edit -> paste back. Everything
the pipeline decided on its own (a whole-image fallback, a parser left out) is listed in
``PhotoInversion.notes`` and logged.
"""

from __future__ import annotations

import dataclasses
import logging
import operator
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dhr.bundle import alignment_record, load_photo_bundle, save_bundle
from dhr.checks import check_choice
from dhr.config import COARSE_PERCEPTUALS, METHODS, InvertConfig, apply_overrides, config_from_dict, load_config
from dhr.devices import DEVICES, resolve_device
from dhr.editing import apply_edits, sweep_codes, sweep_grid
from dhr.editing.directions import DirectionSet, check_strength
from dhr.engine import invert as engine_invert
from dhr.engine import render, require_finite, resolve_embed
from dhr.errors import (
    PROGRAMMING_ERRORS,
    ConfigError,
    DHRError,
    DivergedError,
    EditError,
    FaceNotFoundError,
    ImageError,
    WeightsError,
)
from dhr.faces.align import AlignedFace, AlignTemplate, align_face, align_whole_image, user_mask_to_crop
from dhr.faces.detect import detect_faces_retrying
from dhr.faces.parsing import PARSER_NAMES, load_parser
from dhr.faces.paste import PASTE_MODES, paste_back, resolve_paste_mode
from dhr.io.image import as_photo, resize_square, tensor_to_uint8, to_pil
from dhr.metrics.lpips import LPIPS
from dhr.models.zoo import FaceModel, load_model
from dhr.results import EditResult, PhotoInversion, SweepResult, edit_label
from dhr.segmentation.occluder import load_occluder_net

# The result types, photo coercion and device choice live in dhr.results, dhr.io and dhr.devices;
# they are re-exported here because `from dhr.pipeline import ...` of them is public API.
__all__ = [
    "DEVICES",
    "PARSERS",
    "PERCEPTUALS",
    "EditResult",
    "PhotoInversion",
    "Pipeline",
    "SweepResult",
    "as_photo",
    "edit_label",
    "resolve_coarse_perceptual",
    "resolve_device",
]

logger = logging.getLogger(__name__)

PERCEPTUALS: tuple[str, ...] = ("model", "alex", "vgg", "squeeze")
PARSERS: tuple[str, ...] = ("auto", "landmarks", "bisenet", "farl", "none")


def resolve_coarse_perceptual(choice: str, model: Any, refine_perceptual: torch.nn.Module | None,
                              device: torch.device | str) -> torch.nn.Module:
    """The coarse/error-map network for ``InvertConfig.coarse_perceptual`` (see there).

    Args:
        choice: ``auto``, ``same``, ``model``, ``alex``, ``vgg`` or ``squeeze``.
        model: The :class:`~dhr.models.zoo.FaceModel` (its ``perceptual`` may be None).
        refine_perceptual: The refinement's network (used for ``same``).
        device: Where LPIPS is built.

    Raises:
        ConfigError: ``model`` for a model without a perceptual network.
        WeightsError: The LPIPS weights are not available (the message names them and the fix).
    """
    check_choice(choice, COARSE_PERCEPTUALS, "coarse_perceptual")
    if choice == "same":
        if refine_perceptual is None:
            raise ConfigError("coarse_perceptual='same' needs the refinement's network")
        return refine_perceptual
    if choice in ("auto", "model") and model.perceptual is not None:
        return model.perceptual
    if choice == "model":
        raise ConfigError(f"coarse_perceptual='model' but model {model.name!r} has no perceptual network; "
                          "use auto, same, alex, vgg or squeeze")
    net = "vgg" if choice == "auto" else choice
    try:
        return LPIPS.from_registry(net).to(device)
    except WeightsError as e:
        raise WeightsError(f"coarse_perceptual={choice!r} needs LPIPS-{net} (the reference's coarse network is VGG): "
                           f"{e}\nOr set coarse_perceptual='same' to reuse the refinement's network (a deviation "
                           "from the reference: its thresholds are on the VGG scale).") from None


@dataclasses.dataclass(frozen=True)
class _Prepared:
    """One photo made ready for the engine by :meth:`Pipeline.invert` (detected, aligned, parsed)."""

    photo: Any  # the Photo, or None for an aligned face given directly
    faces: list[AlignedFace]
    targets: torch.Tensor  # (F, 3, R, R), one per face
    notes: list[list[str]]
    parsing: list[Any]
    user_masks: torch.Tensor | None
    align_s: float
    parse_s: float


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
        perceptual: The refinement's perceptual network: ``model`` (the model's own, default;
            LPIPS-alex when the model has none, as the reference), or ``alex``/``vgg``/``squeeze``
            (LPIPS, weights resolved by :mod:`dhr.weights`).
        coarse_perceptual: The network of the embedding optimisation, the coarse inversion and the
            error maps (see :attr:`dhr.config.InvertConfig.coarse_perceptual`); None keeps the
            config's (``auto``: the model's own, else LPIPS-VGG as the reference).
        parser: The face parser of DHR's segmentation: ``auto`` (the model's ``parser`` entry,
            landmarks for faces), ``landmarks`` (no network; never marks anything out of domain),
            ``bisenet``, ``farl`` (the reference's) or ``none``. Network parsers are loaded here, so
            missing weights fail at construction (:class:`~dhr.errors.WeightsError`).
        trust_parser: Allow loading the ``farl`` TorchScript archive without a registry digest
            (it runs code from the file).
        method: Overrides ``config.method`` (``dhr``, ``pti``, ``feature``, ``encoder``, ``optim``).
        paste_mode: How edits are pasted into the photo by default: ``auto`` (``delta`` when the
            model's crop is smaller than the face in the photo, else ``crop``), ``delta`` (add the
            change edit - inversion to the photo: untouched detail stays the photo's own) or
            ``crop`` (replace the face by the upsampled crop). See :mod:`dhr.faces.paste`.
        overrides: ``KEY=VALUE`` options (the CLI's ``--set``, see :func:`dhr.config.apply_overrides`)
            applied last, over ``config``, ``method`` and ``coarse_perceptual``.

    The resolved :attr:`config` is fixed at construction (read-only): build another pipeline, or
    pass ``method`` to :meth:`invert`, for other settings.
    """

    def __init__(self, model: FaceModel, *, config: InvertConfig | Mapping[str, Any] | str | Path | None = None,
                 device: str | torch.device = "auto", seed: int = 0, perceptual: str = "model",
                 coarse_perceptual: str | None = None, parser: str = "auto", trust_parser: bool = False,
                 method: str | None = None, paste_mode: str = "auto", overrides: Sequence[str] = ()) -> None:
        check_choice(perceptual, PERCEPTUALS, "perceptual")
        check_choice(parser, PARSERS, "parser")
        check_choice(paste_mode, PASTE_MODES, "paste_mode")
        if coarse_perceptual is not None:
            check_choice(coarse_perceptual, COARSE_PERCEPTUALS, "coarse_perceptual")
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
            raise ConfigError(f"seed must be an integer between 0 and 2**63 - 1, got {seed!r}")
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        cfg = self._with_method(self._load_config(config, model.recommended_config()), method)
        if coarse_perceptual is not None:
            cfg = dataclasses.replace(cfg, coarse_perceptual=coarse_perceptual)
        self._config = apply_overrides(cfg, list(overrides))
        if self._config.method == "dhr" and self._config.segment.occluder is not None:
            load_occluder_net(self._config.segment.occluder)  # missing or damaged: fails here, not once per photo
        self.seed = seed
        self.perceptual_name = perceptual
        self.parser_name = parser
        self.paste_mode = paste_mode
        self._perceptual: torch.nn.Module | None = None
        self._coarse_perceptual: torch.nn.Module | None = None
        self.face_parser = self._build_parser(trust_parser)
        self._reference: tuple[Any, torch.Tensor] | None = None  # (inversion, its unedited render)

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = "faces-64", *, device: str | torch.device = "auto",
                        config: InvertConfig | Mapping[str, Any] | str | Path | None = None, seed: int = 0,
                        perceptual: str = "model", coarse_perceptual: str | None = None, parser: str = "auto",
                        trust_parser: bool = False, method: str | None = None, paste_mode: str = "auto",
                        overrides: Sequence[str] = ()) -> Pipeline:
        """Loads a bundled model by name (``dhr models list``) or a model folder (options as :class:`Pipeline`).

        Raises:
            ConfigError: Unknown model (the message lists the available ones), bad config or device.
            CheckpointError: A damaged model folder (its occluder network included).
            WeightsError: The chosen parser's weights are missing.
        """
        resolve_device(device)  # fail fast before loading
        return cls(load_model(name_or_path), config=config, device=device, seed=seed, perceptual=perceptual,
                   coarse_perceptual=coarse_perceptual, parser=parser, trust_parser=trust_parser, method=method,
                   paste_mode=paste_mode, overrides=overrides)

    @staticmethod
    def _load_config(config: Any, base: InvertConfig) -> InvertConfig:
        """``None``: the model's recommended config; a dict or file: its options over it; an
        :class:`InvertConfig`: used as given (complete)."""
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
    def config(self) -> InvertConfig:
        """The resolved :class:`~dhr.config.InvertConfig` (fixed at construction)."""
        return self._config

    @property
    def generator(self) -> torch.nn.Module:
        return self.model.generator

    @property
    def resolution(self) -> int:
        return int(self.model.generator.resolution)

    @property
    def directions(self) -> DirectionSet:
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
                net = "alex" if self.perceptual_name == "model" else self.perceptual_name
                if self.perceptual_name == "model":
                    logger.warning("model %s has no perceptual metric; using LPIPS-%s", self.model.name, net)
                self._perceptual = LPIPS.from_registry(net).to(self.device)
        return self._perceptual

    @property
    def coarse_perceptual(self) -> torch.nn.Module:
        """The network of the embedding optimisation, coarse inversion and error maps (built on first use).

        Raises:
            WeightsError: The chosen LPIPS weights are not available.
        """
        if self._coarse_perceptual is None:
            choice = self.config.coarse_perceptual
            self._coarse_perceptual = self.perceptual if choice == "same" else resolve_coarse_perceptual(
                choice, self.model, None, self.device)
        return self._coarse_perceptual

    @property
    def parser(self) -> str:
        """The parser in use: ``landmarks``, ``bisenet``, ``farl`` or ``none`` (``auto`` resolved)."""
        if self.parser_name != "auto":
            return self.parser_name
        return str((self.model.manifest or {}).get("parser", "landmarks"))

    def _build_parser(self, trust: bool) -> Any:
        name = self.parser
        if name not in PARSER_NAMES:
            raise ConfigError(f"model {self.model.name!r} asks for parser {name!r}; known: {list(PARSER_NAMES)}")
        return load_parser(name, device=self.device, trust=trust)

    def template(self) -> AlignTemplate:
        """The alignment template at the model resolution (the model's own, else FFHQ framing)."""
        if self.model.template:
            return AlignTemplate.from_dict(dict(self.model.template)).with_size(self.resolution)
        return AlignTemplate.ffhq(self.resolution)

    def _use_parser(self, aligned: AlignedFace) -> bool:
        if self.face_parser is None:
            return False
        # The landmark parser is made of landmarks, and FaRL aligns its crop with them; BiSeNet needs none.
        return aligned.landmarks is not None or self.parser == "bisenet"

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
            ConfigError: ``face_index`` is not an integer >= 0.
        """
        if face_index is not None:
            try:  # ints and numpy integers; not bools, floats or strings
                index = -1 if isinstance(face_index, bool) else operator.index(face_index)
            except TypeError:
                index = -1
            if index < 0:
                raise ConfigError(f"face_index={face_index!r:.40} must be an integer >= 0 (0 = the largest face) or "
                                  "None (every face)")
            face_index = index
        photo = as_photo(photo)
        template = self.template()
        try:
            faces, tried = detect_faces_retrying(photo, detector=detector)
        except FaceNotFoundError as e:
            tried_text = str(e).rsplit("Tried: ", 1)[-1].rstrip(".") if "Tried: " in str(e) else "as is"
            if not whole_image and "Tried: " not in str(e):  # found nothing to try (e.g. a photo too small)
                raise
            if whole_image:
                a = align_whole_image(photo, template)
                return [dataclasses.replace(a, notes=(*a.notes, f"no face found (tried: {tried_text})"))]
            raise FaceNotFoundError(
                f"no usable face in {photo.name} (tried: {tried_text}); pass whole_image=True (CLI: "
                "--whole-image) to process the whole image instead, or crop the photo around the face") from None
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
        if len(tried) > 1:
            note = f"face found {tried[-1]} (tried: {', '.join(tried)})"
            aligned = [dataclasses.replace(a, notes=(*a.notes, note)) for a in aligned]
        return aligned

    @staticmethod
    def _with_method(cfg: InvertConfig, method: str | None) -> InvertConfig:
        if method is None:
            return cfg
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
            DivergedError: The result holds NaN or infinite values (learning rates far too high, broken weights).
        """
        config = self._config_for(method)
        prep = self._prepare(image, config, face_index, whole_image, ood_mask)
        return self._results(prep, self._engine(config, [prep], progress))

    def invert_many(self, images: Sequence[Any], *, method: str | None = None, face_index: int | None = None,
                    whole_image: bool = False, progress: Any = None,
                    aligned: Sequence[Sequence[AlignedFace]] | None = None) -> list[list[PhotoInversion] | Exception]:
        """Inverts the faces of several photos as one batch (one :func:`dhr.engine.invert` call).

        Each photo's results equal what :meth:`invert` gives for it alone: the engine's randomness
        is keyed by each image's content, and with ``InvertConfig.vectorize`` off (the default) the
        images are optimised one after the other, so codes, weights and features are bit for bit
        those of a run alone (the final images are rendered in one batched call: equal to float
        rounding, ~1e-6). What the batch buys: the segmentations overlap in threads and, with
        ``vectorize`` on, the optimisations run together (on a GPU ~2x the throughput at 8 images;
        on a CPU only for small models such as faces-64, docs/performance.md "Batch throughput").

        A photo that fails (unreadable, no face, ...) does not fail the others: its entry is the
        exception. If the batched optimisation itself fails (out of memory, ...), every photo is
        inverted alone, so each failure lands on its own photo.

        Args:
            images: Photos as :meth:`invert` takes them (paths, PIL images, arrays, ``Photo``,
                ``AlignedFace``).
            method, face_index, whole_image, progress: As :meth:`invert` (the same for every photo).
            aligned: Optional, per photo, its faces as :meth:`align` returned them (detection and
                alignment are then skipped for it; ``face_index`` and ``whole_image`` do not apply).

        Returns:
            One entry per photo, in order: its list of :class:`PhotoInversion` (as :meth:`invert`)
            or the exception that stopped it.

        Raises:
            ConfigError: Unknown method (before any work). Bugs (``TypeError``, ``NameError``) surface.
        """
        config = self._config_for(method)
        if isinstance(images, (str, Path)) or not isinstance(images, Sequence):
            raise ConfigError(f"images must be a list of photos, got {type(images).__name__}")
        if aligned is not None:
            if not isinstance(aligned, Sequence) or len(aligned) != len(images):
                raise ConfigError(f"aligned must hold one list of AlignedFace per image ({len(images)})")
            for i, faces in enumerate(aligned):
                if not isinstance(faces, Sequence) or not faces or not all(isinstance(a, AlignedFace) for a in faces):
                    raise ConfigError(f"aligned[{i}] must be a non-empty list of AlignedFace (as align returns)")
        out: list[list[PhotoInversion] | Exception | None] = [None] * len(images)
        preps: list[tuple[int, _Prepared]] = []
        for i, image in enumerate(images):
            try:
                faces = None if aligned is None else list(aligned[i])
                preps.append((i, self._prepare(image, config, face_index, whole_image, None, faces)))
            except PROGRAMMING_ERRORS:
                raise
            except Exception as e:  # noqa: BLE001 - this photo only
                out[i] = e
        if not preps:
            return out
        try:
            invs = self._engine(config, [p for _, p in preps], progress)
        except PROGRAMMING_ERRORS:
            raise
        except Exception as e:  # noqa: BLE001 - find the photo(s) it belongs to
            if len(preps) == 1:
                out[preps[0][0]] = e
                return out
            logger.info("the batched inversion of %d photos failed (%s); inverting them one by one", len(preps), e)
            del e  # its traceback holds the batch's tensors
            if self.device.type == "cuda":  # after an out-of-memory error, give the cached blocks back first
                torch.cuda.empty_cache()
            for i, p in preps:
                try:
                    out[i] = self._results(p, self._engine(config, [p], progress))
                except PROGRAMMING_ERRORS:
                    raise
                except Exception as e1:  # noqa: BLE001
                    out[i] = e1
            return out
        start = 0
        for i, p in preps:
            try:
                out[i] = self._results(p, invs[start:start + len(p.faces)])
            except DHRError as e:  # this photo diverged; the others are kept
                out[i] = e
            start += len(p.faces)
        return out

    def _prepare(self, image: Any, config: InvertConfig, face_index: int | None, whole_image: bool,
                 ood_mask: Any, faces: list[AlignedFace] | None = None) -> _Prepared:
        """Detection, alignment and face parsing of one photo: what the engine needs of it."""
        t0 = time.perf_counter()
        if isinstance(image, AlignedFace):
            photo, faces = None, [image]
        elif faces is not None:
            photo = as_photo(image)
            if not faces:
                raise ConfigError("aligned: an empty list of faces; give what Pipeline.align returned")
        else:
            photo = as_photo(image)
            faces = self.align(photo, face_index=face_index, whole_image=whole_image)
        align_s = time.perf_counter() - t0
        R = self.resolution
        targets = torch.stack([resize_square(a.to_tensor(), R) for a in faces]).to(self.device)
        notes: list[list[str]] = []
        parsing: list[Any] = []
        t0 = time.perf_counter()
        for a, target in zip(faces, targets):
            n = list(a.notes)
            if a.whole_image and not any("whole image" in x for x in n):
                n.append("no face found: processed the whole image resized to the model resolution")
            if config.method == "dhr" and self._use_parser(a):
                lm = None if a.landmarks is None else np.asarray(a.landmarks) * (R / a.size)
                parsing.append(self.face_parser.parse(target, lm))
            else:
                parsing.append(None)
                if config.method == "dhr":
                    n.append(f"segmentation without a face parser (parser={self.parser})" if self.face_parser is None
                             else f"segmentation without a face parser (the {self.parser} parser needs landmarks)")
            notes.append(n)
        parse_s = time.perf_counter() - t0
        user_masks = None
        if ood_mask is not None:
            if config.method != "dhr":
                raise ConfigError(f"ood_mask is used by method 'dhr' only, not {config.method!r}")
            user_masks = torch.stack([user_mask_to_crop(ood_mask, a, photo, R) for a in faces]).to(self.device)
            for n in notes:
                n.append("domain mask given by the user (DHR's segmentation skipped)")
        return _Prepared(photo=photo, faces=faces, targets=targets, notes=notes, parsing=parsing,
                         user_masks=user_masks, align_s=align_s, parse_s=parse_s)

    def _engine(self, config: InvertConfig, preps: Sequence[_Prepared], progress: Any) -> list[Any]:
        """One :func:`dhr.engine.invert` call over the faces of ``preps`` (in order)."""
        targets = torch.cat([p.targets for p in preps])
        masks = [p.user_masks for p in preps]
        if any(m is not None for m in masks) and len(preps) > 1:
            raise ConfigError("a user ood_mask is given for one photo at a time")
        user_masks = masks[0]
        parsing = [x for p in preps for x in p.parsing]
        # The coarse network is built only when a latent optimisation runs (its weights may be missing).
        needs_coarse = (config.method == "dhr" and user_masks is None) or \
            resolve_embed(config, self.model.encoder) == "optim"
        torch.manual_seed(self.seed)
        return engine_invert(self.generator, targets, config=config, perceptual=self.perceptual,
                             coarse_perceptual=self.coarse_perceptual if needs_coarse else None,
                             encoder=self.model.encoder,
                             parsing=parsing if config.method == "dhr" and user_masks is None else None,
                             masks=user_masks, progress=progress)

    def _results(self, prep: _Prepared, invs: Sequence[Any]) -> list[PhotoInversion]:
        """The engine's inversions of one photo's faces as :class:`PhotoInversion` results."""
        photo, faces = prep.photo, prep.faces
        base = "image" if photo is None or photo.path is None else Path(photo.path).stem
        out = []
        for a, inv, n in zip(faces, invs, prep.notes):
            for note in n:
                logger.info("%s: %s", a.source or base, note)
            meta = dict(inv.meta)
            meta.update({"alignment": alignment_record(a, photo), "model_name": self.model.name,
                         "seed": self.seed, "notes": n, "parser": self.parser})
            stem = f"{base}_whole" if a.whole_image else f"{base}_face{max(a.face_index, 0)}"
            require_finite(inv, a.source or base)
            timings = {"align_s": prep.align_s / len(faces), "parse_s": prep.parse_s / len(faces),
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
        if edits is not None and not isinstance(edits, Mapping):
            raise EditError(f"edits must map direction names to strengths, e.g. {{'age': 2}}; got "
                            f"{type(edits).__name__}")
        strengths: dict[str, float] = {}
        for src in (edits or {}), kwargs:
            for name, value in src.items():
                strengths[str(name)] = check_strength(value, f"edit {name!r}")
        if strengths:
            dirs = self.directions
            for name in strengths:
                dirs[name]  # raises EditError listing the known names
        return strengths

    def edit(self, inv: PhotoInversion, edits: Mapping[str, float] | None = None, *, paste: bool = True,
             paste_mode: str | None = None, **more: float) -> EditResult:
        """Applies named edits to the W+ code and re-renders (no optimisation), then pastes back.

        Example: ``pipe.edit(inv, age=2, smile=-1)`` or ``pipe.edit(inv, {"age": 2})``.

        Args:
            inv: A result of :meth:`invert` or :meth:`load_bundle`.
            edits: Direction name -> strength (applied in order, then those in ``more``).
            paste: Blend the edited crop back into the photo when it is known.
            paste_mode: ``auto``, ``delta`` or ``crop``; default the pipeline's ``paste_mode``.
                With ``delta`` and no edit, the pasted photo is the input photo bit for bit.

        Returns:
            The :class:`EditResult`; with no edit at all, the reconstruction.

        Raises:
            EditError: Unknown direction (the message lists the known ones) or bad strength.
            ConfigError: Unknown paste mode.
            DivergedError: The render holds NaN or infinite values (a broken bundle or model).
        """
        if not isinstance(inv, PhotoInversion):
            raise EditError(f"edit needs a PhotoInversion (from invert or load_bundle), got {type(inv).__name__}")
        strengths = self._resolve_edits(edits, more)
        mode = self._paste_mode(paste_mode)
        G = self.generator
        base = inv.inversion.ws.to(self.device)
        ws = base
        if strengths:
            ws = apply_edits(base[None], [(self.directions[k], v) for k, v in strengths.items()])[0]
        with torch.no_grad():
            img = render(G, inv.inversion, ws).detach().to("cpu", torch.float32)
        if not bool(torch.isfinite(img).all()):
            raise DivergedError(f"{inv.stem}: the edited render holds NaN or infinite values; the stored result "
                                "(code, weight offsets or feature) or the model's weights are broken: invert the "
                                "photo again")
        pasted = mask = used = None
        if paste and inv.photo is not None and inv.aligned is not None:
            # The unedited render is the delta's zero: reuse this very tensor when nothing moved.
            reference = img if torch.equal(ws, base) else None
            pasted, mask, used = self._paste(inv, img, mode, reference)
        return EditResult(tensor=img, ws=ws.detach().cpu(), strengths=strengths, pasted_pixels=pasted,
                          paste_mask=mask, paste_mode=used)

    def _paste_mode(self, mode: str | None) -> str:
        if mode is None:
            return self.paste_mode
        check_choice(mode, PASTE_MODES, "paste_mode")
        return mode

    def reference_crop(self, inv: PhotoInversion) -> torch.Tensor:
        """The unedited inversion rendered exactly as :meth:`edit` renders edits, ``(3, R, R)``
        float32 CPU in [-1, 1] (unclamped): the zero of the ``delta`` paste. Cached for the last
        inversion asked for."""
        cached = self._reference
        if cached is not None and cached[0] is inv.inversion:
            return cached[1]
        with torch.no_grad():
            img = render(self.generator, inv.inversion, inv.inversion.ws.to(self.device)).detach()
        img = img.to("cpu", torch.float32)
        self._reference = (inv.inversion, img)
        return img

    def _paste(self, inv: PhotoInversion, crop: torch.Tensor, mode: str,
               reference: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray, str]:
        """Pastes ``crop`` with ``mode``; the reference (for ``delta``) is rendered when not given."""
        a = inv.aligned
        model_size = int(crop.shape[-1])
        mode = resolve_paste_mode(mode, a, model_size=model_size)
        if mode == "delta" and reference is None:
            reference = self.reference_crop(inv)
        if crop.shape[-1] != a.size:
            crop = resize_square(crop, a.size)
            if reference is not None:
                reference = resize_square(reference, a.size)
        res = paste_back(inv.photo, a, crop, reference=reference if mode == "delta" else None, mode=mode)
        return res.image, res.mask, res.mode

    def paste(self, inv: PhotoInversion, crop: torch.Tensor | None = None, *, mode: str | None = None) -> Image.Image:
        """Blends ``crop`` (default the reconstruction) back into the photo.

        Args:
            inv: The inversion (with its photo).
            crop: ``(3, R, R)`` crop in [-1, 1]; None pastes the reconstruction (with ``delta``,
                the unedited reference itself, so the photo comes back unchanged).
            mode: ``auto``, ``delta`` or ``crop``; default the pipeline's ``paste_mode``.

        Raises:
            ImageError: When the result has no photo (bare crop, or a bundle whose photo is gone).
            ConfigError: Unknown mode.
        """
        mode = self._paste_mode(mode)
        if inv.photo is None or inv.aligned is None:
            raise ImageError(f"{inv.stem}: the source photo is not available; cannot paste back")
        if crop is None:
            img = inv.inversion.image.detach().cpu().float()
            if resolve_paste_mode(mode, inv.aligned, model_size=int(img.shape[-1])) == "delta":
                img = self.reference_crop(inv)
                return to_pil(self._paste(inv, img, mode, img)[0])
            return to_pil(self._paste(inv, img, mode)[0])
        return to_pil(self._paste(inv, crop.detach().cpu().float(), mode)[0])

    def sweep(self, inv: PhotoInversion, name: str, strengths: Sequence[float] = (-2, -1, 0, 1, 2), *,
              paste: bool = False, paste_mode: str | None = None) -> SweepResult:
        """Renders a strength sweep along direction ``name`` (frames and a labelled grid).

        Args:
            inv: The result to edit.
            name: Direction name.
            strengths: Strengths, in order.
            paste: Frames are the pasted photos instead of the crops (needs the photo).
            paste_mode: ``auto``, ``delta`` or ``crop``; default the pipeline's ``paste_mode``.

        Raises:
            EditError: Unknown direction or bad strengths.
        """
        strengths = tuple(check_strength(s, f"sweep {name!r}") for s in strengths)
        if not strengths:
            raise EditError("sweep needs at least one strength")
        mode = self._paste_mode(paste_mode)
        direction = self.directions[name]
        codes = sweep_codes(inv.inversion.ws.to(self.device)[None], direction, strengths)
        frames = []
        with torch.no_grad():
            for ws in codes:
                img = render(self.generator, inv.inversion, ws[0]).detach().to("cpu", torch.float32)
                if paste:
                    if inv.photo is None or inv.aligned is None:
                        raise ImageError(f"{inv.stem}: paste=True needs the source photo")
                    frames.append(self._paste(inv, img, mode)[0])
                else:
                    frames.append(tensor_to_uint8(img))
        grid = sweep_grid([frames], row_labels=[name], col_labels=[f"{s:+g}" for s in strengths])
        return SweepResult(name=name, strengths=strengths, frames=frames, grid=grid)

    # -- persistence ----------------------------------------------------------------------

    def save_bundle(self, inv: PhotoInversion, path: str | Path) -> tuple[Path, Path]:
        """Saves ``<path>.safetensors`` + ``<path>.json``: the inversion, the aligned target crop
        (uint8), the alignment (photo -> crop matrix, landmarks, crop size) and the source photo's
        path and sha256, everything :meth:`load_bundle` needs to edit, sweep and paste later."""
        return save_bundle(inv.inversion, path)

    def load_bundle(self, path: str | Path, *, photo: Any = None) -> PhotoInversion:
        """Loads a bundle made with this model, re-rendering its reconstruction.

        The source photo (needed to paste) is ``photo`` when given, else the recorded file when it
        is still there; either way its sha256 must equal the recorded one. Otherwise ``photo`` is
        None, pasting is unavailable and ``notes`` says why.

        Args:
            path: The bundle stem (or either of its files).
            photo: The source photo when its file has moved: the same file (path or bytes), as the
                recorded sha256 is that of the file.

        Raises:
            CheckpointError: Missing/corrupt bundle, or one made with another generator.
            ImageError: ``photo`` is not the photo the bundle was made from (sha256 differs).
        """
        return load_photo_bundle(path, generator=self.generator, device=self.device, resolution=self.resolution,
                                 photo=photo)

    def __repr__(self) -> str:
        return (f"Pipeline(model={self.model.name!r}, resolution={self.resolution}, device={str(self.device)!r}, "
                f"method={self.config.method!r}, seed={self.seed})")
