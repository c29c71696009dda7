"""Face parsing behind one interface, with each label set's DHR grouping kept as data.

DHR's segmentation (paper section 3.3; reference section 1.2) needs, per pixel, class
probabilities and, per class, (a) the superpixel error threshold and (b) whether the class is
forced out-of-domain. Classes fall into four groups:

==========  =========================================================  ==========================
group       classes                                                    superpixel threshold
==========  =========================================================  ==========================
``skin``    face skin                                                  θ1 (``theta_skin``, 0.7)
``inner``   brows, eyes, nose, inner mouth, lips (and ears, as in the  θ2 (``theta_inner``, 0.8)
            authors' FaRL table, indices 4-13)
``other``   neck, hair, glasses, ... (and "other" of the landmark      ``theta_other`` (0.6)
            parser)
``ood``     background, cloth, hat, earring, necklace                  ``theta_other`` (0.6) and
                                                                       forced out-of-domain
==========  =========================================================  ==========================

Parsers (all return :class:`ParsingResult` for an aligned ``(3, S, S)`` image in [-1, 1]):

* :class:`LandmarkParser`: no network; polygons from the 68 dlib landmarks. It cannot see
  background, clothes or accessories, so it never marks anything ``ood``.
* :class:`BiSeNetParser`: wraps ``dhr.models.bisenet.BiSeNet`` (zllrunning face-parsing, used by
  SAM).
* :class:`FaRLParser`: wraps ``dhr.models.farl.load_farl_parser`` (facer ``farl/celebm/448``, what
  the DHR authors use), including facer's 5-point alignment to 448 px (``target_face_scale=0.8``)
  and the zero-padded warp back, whose uniform 1/19 probabilities outside the parser's crop
  reproduce the reference behaviour.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from dhr.checks import check_choice, check_shape
from dhr.errors import FaceNotFoundError, ShapeError
from dhr.faces.align import similarity_from_points
from dhr.faces.detect import convex_hull, crop_landmarks, face_outline, five_points
from dhr.io.image import tensor_to_uint8

__all__ = [
    "GROUPS",
    "LabelSet",
    "LANDMARK_LABELS",
    "BISENET_LABELS",
    "FARL_LABELS",
    "ParsingResult",
    "FaceParser",
    "LandmarkParser",
    "BiSeNetParser",
    "FaRLParser",
    "PARSER_NAMES",
    "load_parser",
    "landmark_label_map",
]

logger = logging.getLogger(__name__)

Group = Literal["skin", "inner", "other", "ood"]
GROUPS: tuple[str, ...] = ("skin", "inner", "other", "ood")


@dataclass(frozen=True)
class LabelSet:
    """Class names of a parser and the DHR group of each class.

    Attributes:
        name: Label set identifier.
        classes: Class name per index.
        groups: Group per index (``skin``, ``inner``, ``other`` or ``ood``).
    """

    name: str
    classes: tuple[str, ...]
    groups: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.classes) != len(self.groups):
            raise ValueError(f"{self.name}: {len(self.classes)} classes but {len(self.groups)} groups")
        for g in self.groups:
            check_choice(g, GROUPS, f"{self.name} group")

    def indices(self, group: Group) -> list[int]:
        """Class indices of one group."""
        check_choice(group, GROUPS, "group")
        return [i for i, g in enumerate(self.groups) if g == group]


def _labels(name: str, table: list[tuple[str, str]]) -> LabelSet:
    return LabelSet(name=name, classes=tuple(c for c, _ in table), groups=tuple(g for _, g in table))


#: Landmark parser: "other" is everything the 68 points do not cover (hair, background, ...).
LANDMARK_LABELS = _labels(
    "landmarks",
    [
        ("other", "other"),
        ("skin", "skin"),
        ("brows", "inner"),
        ("eyes", "inner"),
        ("nose", "inner"),
        ("lips", "inner"),
        ("inner_mouth", "inner"),
    ],
)

#: zllrunning face-parsing BiSeNet (``79999_iter.pth``) order, reference section 5.3.
BISENET_LABELS = _labels(
    "bisenet_celebamask",
    [
        ("background", "ood"),
        ("skin", "skin"),
        ("l_brow", "inner"),
        ("r_brow", "inner"),
        ("l_eye", "inner"),
        ("r_eye", "inner"),
        ("eye_g", "other"),
        ("l_ear", "inner"),
        ("r_ear", "inner"),
        ("ear_r", "ood"),
        ("nose", "inner"),
        ("mouth", "inner"),
        ("u_lip", "inner"),
        ("l_lip", "inner"),
        ("neck", "other"),
        ("neck_l", "ood"),
        ("cloth", "ood"),
        ("hair", "other"),
        ("hat", "ood"),
    ],
)

#: facer FaRL ``celebm`` order, reference section 1.2 (indices 4-13 use θ2, ears included).
FARL_LABELS = _labels(
    "farl_celebm",
    [
        ("background", "ood"),
        ("neck", "other"),
        ("face", "skin"),
        ("cloth", "ood"),
        ("rr", "inner"),
        ("lr", "inner"),
        ("rb", "inner"),
        ("lb", "inner"),
        ("re", "inner"),
        ("le", "inner"),
        ("nose", "inner"),
        ("imouth", "inner"),
        ("llip", "inner"),
        ("ulip", "inner"),
        ("hair", "other"),
        ("glass", "other"),
        ("hat", "ood"),
        ("earr", "ood"),
        ("neckl", "ood"),
    ],
)


@dataclass(frozen=True)
class ParsingResult:
    """Per-pixel class probabilities of one aligned image.

    Attributes:
        probabilities: ``(K, S, S)`` float, summing to 1 over K.
        labels: The :class:`LabelSet` (class names and groups).
        notes: How the result was made (fallbacks, detector used).

    Notation: m_p (paper's parsing mask) = ``ood_probability() < 0.5``.
    """

    probabilities: torch.Tensor
    labels: LabelSet
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_shape(self.probabilities, [len(self.labels.classes), "S", "S"], "probabilities")

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class name per index."""
        return self.labels.classes

    @property
    def groups(self) -> tuple[str, ...]:
        """Group per class index."""
        return self.labels.groups

    def thresholds(
        self, theta_skin: float = 0.7, theta_inner: float = 0.8, theta_other: float = 0.6
    ) -> torch.Tensor:
        """Superpixel error threshold per class.

        Args:
            theta_skin: θ1, for ``skin`` classes.
            theta_inner: θ2, for ``inner`` classes.
            theta_other: For ``other`` and ``ood`` classes (0.6 in the reference).

        Returns:
            ``(K,)`` tensor on the probabilities' device and dtype.
        """
        value = {"skin": theta_skin, "inner": theta_inner, "other": theta_other, "ood": theta_other}
        p = self.probabilities
        return torch.tensor([value[g] for g in self.groups], device=p.device, dtype=p.dtype)

    def group_probability(self, group: Group) -> torch.Tensor:
        """``(S, S)`` summed probability of one group's classes (zeros if it has none)."""
        idx = self.labels.indices(group)
        if not idx:
            return torch.zeros_like(self.probabilities[0])
        return self.probabilities[idx].sum(0)

    def ood_probability(self) -> torch.Tensor:
        """``(S, S)`` probability of the forced out-of-domain classes (1 - this is "in-domain")."""
        return self.group_probability("ood")

    def label_map(self) -> torch.Tensor:
        """``(S, S)`` int64 argmax class."""
        return self.probabilities.argmax(0)


@runtime_checkable
class FaceParser(Protocol):
    """What the segmentation stage needs from a face parser."""

    labels: LabelSet

    def parse(self, image: torch.Tensor, landmarks: np.ndarray | None = None) -> ParsingResult:
        """Parses one aligned face.

        Args:
            image: ``(3, S, S)`` RGB in [-1, 1].
            landmarks: ``(68, 2)`` landmarks in the image's pixels, or None (parsers that need
                them detect them).

        Returns:
            The :class:`ParsingResult` at ``S x S``.
        """
        ...


def _check_image(image: torch.Tensor) -> int:
    dims = check_shape(image, [3, "S", "S"], "image")
    return dims["S"]


def _landmarks_for(image: torch.Tensor, landmarks: np.ndarray | None, who: str) -> tuple[np.ndarray, str]:
    if landmarks is not None:
        lm = np.asarray(landmarks, dtype=np.float64)
        if lm.shape != (68, 2):
            raise ShapeError(f"landmarks must be (68, 2), got {lm.shape}")
        return lm, "landmarks given"
    face = crop_landmarks(tensor_to_uint8(image))
    if face is None:
        raise FaceNotFoundError(
            f"{who}: no face found in the aligned image; pass its landmarks (AlignedFace.landmarks)."
        )
    return face.landmarks, "landmarks detected in the aligned image"


def landmark_label_map(landmarks: np.ndarray, size: int, *, forehead: float = 0.7) -> np.ndarray:
    """Rasterises the landmark polygons into a label map in :data:`LANDMARK_LABELS` order.

    Painted in order (later wins): skin (jaw + brows raised by ``forehead`` eye-to-mouth
    distances), nose (hull of 27-35), brows (17-21, 22-26 as thick lines), eyes (36-41, 42-47),
    lips (outer 48-59), inner mouth (60-67).

    Args:
        landmarks: ``(68, 2)`` pixel positions.
        size: Output side S.
        forehead: Forehead extension.

    Returns:
        ``(S, S)`` uint8 labels.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)

    def poly(points: np.ndarray, label: int) -> None:
        draw.polygon([(float(x), float(y)) for x, y in points], fill=label)

    e2e = float(np.hypot(*(lm[42:48].mean(0) - lm[36:42].mean(0))))
    poly(face_outline(lm, forehead=forehead), 1)
    poly(convex_hull(lm[27:36]), 4)
    width = max(1, int(round(0.12 * e2e)))
    for brow in (lm[17:22], lm[22:27]):
        draw.line([(float(x), float(y)) for x, y in brow], fill=2, width=width, joint="curve")
    poly(lm[36:42], 3)
    poly(lm[42:48], 3)
    poly(lm[48:60], 5)
    poly(lm[60:68], 6)
    return np.asarray(canvas, dtype=np.uint8)


class LandmarkParser:
    """Parser from dlib's 68 landmarks (no network; one-hot probabilities).

    Args:
        forehead: How far the skin region extends above the brows (eye-to-mouth distances).
    """

    labels = LANDMARK_LABELS

    def __init__(self, *, forehead: float = 0.7) -> None:
        self.forehead = forehead

    def parse(self, image: torch.Tensor, landmarks: np.ndarray | None = None) -> ParsingResult:
        """See :meth:`FaceParser.parse`.

        Raises:
            FaceNotFoundError: If ``landmarks`` is None and no face is found in the image.
        """
        size = _check_image(image)
        lm, note = _landmarks_for(image, landmarks, "LandmarkParser")
        labels = torch.from_numpy(landmark_label_map(lm, size, forehead=self.forehead).astype(np.int64))
        probs = F.one_hot(labels, len(self.labels.classes)).permute(2, 0, 1)
        probs = probs.to(device=image.device, dtype=image.dtype)
        return ParsingResult(probabilities=probs, labels=self.labels, notes=(note,))


class BiSeNetParser:
    """Adapter for ``dhr.models.bisenet.BiSeNet`` (zllrunning weights, 512 px, ImageNet input).

    Args:
        model: A loaded BiSeNet (anything with ``parse(images (B,3,H,W) in [-1,1]) -> logits``).
        input_size: Working resolution (512 as trained).
    """

    labels = BISENET_LABELS

    def __init__(self, model: Any, *, input_size: int = 512) -> None:
        self.model = model
        self.input_size = input_size

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str], *, input_size: int = 512) -> BiSeNetParser:
        """Loads ``79999_iter.pth`` with ``BiSeNet.from_checkpoint``."""
        from dhr.models.bisenet import BiSeNet

        return cls(BiSeNet.from_checkpoint(path), input_size=input_size)

    def parse(self, image: torch.Tensor, landmarks: np.ndarray | None = None) -> ParsingResult:
        """See :meth:`FaceParser.parse` (landmarks are not used)."""
        _check_image(image)
        with torch.no_grad():
            logits = self.model.parse(image[None], size=self.input_size)[0]
        if logits.shape[0] != len(self.labels.classes):
            raise ShapeError(f"BiSeNet returned {logits.shape[0]} classes, expected {len(self.labels.classes)}")
        return ParsingResult(probabilities=logits.softmax(0), labels=self.labels, notes=("bisenet",))


#: facer's standard 5 points (eyes, nose tip, mouth corners) in [-1, 1] of the parser crop.
_FACER_POINTS = np.array([[196.0, 226.0], [316.0, 226.0], [256.0, 286.0], [220.0, 360.4], [292.0, 360.4]]) / 256.0 - 1.0


class FaRLParser:
    """Adapter for the FaRL ``celebm`` parser (``dhr.models.farl``), as the DHR authors use it.

    The aligned image is re-aligned with facer's similarity transform from the 5 points (eye
    centres, nose tip, mouth corners) to its standard points at ``target_face_scale`` in a 448 px
    crop, parsed, and the logits are warped back with zero padding (so pixels outside the
    parser's crop get a uniform softmax, as in the reference).

    Args:
        model: A :class:`dhr.models.farl.FaRLNetwork` (``(B, 3, 448, 448)`` in [0, 1] -> logits).
        target_face_scale: facer's face scale (0.8 for ``farl/celebm/448``).
    """

    labels = FARL_LABELS

    def __init__(self, model: Any, *, target_face_scale: float = 0.8) -> None:
        self.model = model
        self.target_face_scale = target_face_scale

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], *, expected_sha256: str | None = None, trust: bool = False
    ) -> FaRLParser:
        """Loads the TorchScript parser with ``dhr.models.farl.load_farl_parser``."""
        from dhr.models.farl import load_farl_parser

        return cls(load_farl_parser(path, expected_sha256=expected_sha256, trust=trust))

    def crop_matrix(self, landmarks: np.ndarray, size: int = 448) -> np.ndarray:
        """``(3, 3)`` matrix from aligned-image pixels to parser-crop pixels (pixel centres at integers)."""
        pts = five_points(landmarks) + 0.5  # facer: pixel edges at integers
        target = (_FACER_POINTS * self.target_face_scale + 1.0) * (size - 1) / 2.0
        m = similarity_from_points(pts, target)
        half = np.array([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5], [0.0, 0.0, 1.0]])
        return half @ m @ np.linalg.inv(half)

    def parse(self, image: torch.Tensor, landmarks: np.ndarray | None = None) -> ParsingResult:
        """See :meth:`FaceParser.parse`.

        Raises:
            FaceNotFoundError: If ``landmarks`` is None and no face is found in the image.
        """
        from dhr.faces.align import sample_affine

        size = _check_image(image)
        lm, note = _landmarks_for(image, landmarks, "FaRLParser")
        crop_size = 448
        m = self.crop_matrix(lm, crop_size)
        x = (image.clamp(-1.0, 1.0) + 1.0) / 2.0
        crop = sample_affine(x, np.linalg.inv(m), (crop_size, crop_size), padding_mode="zeros")
        with torch.no_grad():
            logits = self.model(crop[None])
        logits = logits[0] if isinstance(logits, (tuple, list)) else logits
        logits = logits[0]
        if logits.shape[0] != len(self.labels.classes):
            raise ShapeError(f"FaRL returned {logits.shape[0]} classes, expected {len(self.labels.classes)}")
        back = sample_affine(logits, m, (size, size), padding_mode="zeros")
        return ParsingResult(probabilities=back.softmax(0), labels=self.labels, notes=(note, "farl"))


#: Parsers a pipeline can use: ``landmarks`` (no network; never marks anything out of domain),
#: ``bisenet`` (zllrunning weights ``bisenet-79999``), ``farl`` (facer ``farl-celebm-448``, the
#: reference's parser) or ``none``.
PARSER_NAMES: tuple[str, ...] = ("landmarks", "bisenet", "farl", "none")
_PARSER_WEIGHTS = {"bisenet": "bisenet-79999", "farl": "farl-celebm-448"}


def load_parser(name: str, *, device: torch.device | str = "cpu", path: str | os.PathLike[str] | None = None,
                trust: bool = False, download: bool = True) -> FaceParser | None:
    """Builds the face parser ``name`` (see :data:`PARSER_NAMES`), resolving its weights.

    Args:
        name: ``landmarks``, ``bisenet``, ``farl`` or ``none`` (returns None).
        device: Where the network runs.
        path: A weights file to use instead of the registry's (``bisenet``/``farl``).
        trust: ``farl`` only: load the TorchScript archive although its sha256 is not known to the
            registry (it executes code from the file; only for a file you obtained from the facer
            release yourself).
        download: Allow the weights registry to download a missing file.

    Raises:
        ConfigError: Unknown name.
        WeightsError: The parser's weights are not available (the message says where to put them).
        CheckpointError: The file is not the parser's, or ``farl`` without a known digest or ``trust``.
    """
    from dhr.errors import WeightsError

    check_choice(name, PARSER_NAMES, "parser")
    if name == "none":
        return None
    if name == "landmarks":
        return LandmarkParser()
    from dhr import weights

    entry = weights.get(_PARSER_WEIGHTS[name])
    try:
        file = weights.resolve(entry.name, path, download=download)
    except WeightsError as e:
        raise WeightsError(f"parser {name!r} needs its weights {entry.filename!r} ({entry.name}), which are not "
                           f"available: {e}\nOr choose another parser (landmarks, none).") from None
    if name == "bisenet":
        parser: Any = BiSeNetParser.from_checkpoint(file)
    else:
        if entry.sha256 is None and not trust:
            from dhr.errors import CheckpointError

            raise CheckpointError(
                f"parser 'farl': {file} is a TorchScript archive (loading it runs code from the file) and the "
                "registry knows no sha256 to check it against; if you downloaded it from the facer release "
                "yourself, allow it with trust=True (CLI: --trust-parser)")
        parser = FaRLParser.from_file(file, expected_sha256=entry.sha256, trust=trust)
    parser.model.to(device)
    return parser
