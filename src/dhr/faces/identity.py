"""Identity similarity between face images.

Default model: dlib's ResNet face descriptor (``dlib_face_recognition_resnet_model_v1.dat`` from
``face-recognition-models``; 128-d, trained with a metric loss so that the Euclidean distance of
two descriptors is < 0.6 for the same person). It runs on CPU, needs no extra download, and works
on photos and on aligned crops alike (it does its own 150 px chip alignment from the landmarks).

Metric: ``similarity(a, b) = 1 - ||a - b||_2`` (higher = more alike, 1 for identical
descriptors). dlib's same-person rule ``distance < 0.6`` is ``similarity > 0.4``, the default
:attr:`DlibIdentity.threshold`. ``scripts/faces_report.py`` measures ROC AUC and the accuracy at
this threshold on the shared pair list.

Other backbones plug in through :class:`IdentityModel`; :class:`IRSEIdentity` adapts
``dhr.models.encoders.irse`` (ArcFace IR-SE50, CurricularFace IR-101), whose outputs are
L2-normalised, with cosine similarity.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch

from dhr.checks import check_choice
from dhr.errors import ShapeError
from dhr.faces.detect import Detector, crop_landmarks, dlib_model_file, import_dlib
from dhr.io.image import tensor_to_uint8

__all__ = ["IdentityModel", "DlibIdentity", "IRSEIdentity", "as_uint8_image"]

logger = logging.getLogger(__name__)


@runtime_checkable
class IdentityModel(Protocol):
    """A face-identity embedding with a similarity and a recommended same-person threshold."""

    name: str
    threshold: float | None

    def embed(self, image: np.ndarray | torch.Tensor, landmarks: np.ndarray | None = None) -> torch.Tensor:
        """Embeds the main face of an image into a ``(D,)`` float32 vector."""
        ...

    def similarity(self, a: torch.Tensor, b: torch.Tensor) -> float:
        """Similarity of two embeddings (higher = more alike)."""
        ...


def as_uint8_image(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """``(H, W, 3)`` uint8 from uint8 pixels or a ``(3, H, W)`` / ``(1, 3, H, W)`` tensor in [-1, 1]."""
    if isinstance(image, torch.Tensor):
        t = image[0] if image.ndim == 4 and image.shape[0] == 1 else image
        return tensor_to_uint8(t)
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ShapeError(f"image must be (H, W, 3) uint8 or a (3, H, W) tensor in [-1, 1], got {arr.shape} {arr.dtype}")
    return arr


@functools.lru_cache(maxsize=None)
def _face_recognizer() -> Any:
    return import_dlib().face_recognition_model_v1(dlib_model_file("dlib_face_recognition_resnet_model_v1.dat"))


class DlibIdentity:
    """dlib ResNet 128-d face descriptor (the default identity metric).

    Args:
        num_jitters: dlib's test-time augmentation (0 = one pass; 10 is slower, slightly better).
        detector: Detector used when no landmarks are given.
        threshold: Same-person threshold on :meth:`similarity` (0.4 = dlib's distance 0.6).

    Example:
        >>> ident = DlibIdentity()
        >>> s = ident.similarity(ident.embed(aligned_a.crop), ident.embed(aligned_b.crop))
        >>> same = s > ident.threshold
    """

    name = "dlib_resnet_v1"
    dim = 128

    def __init__(self, *, num_jitters: int = 0, detector: Detector = "hog", threshold: float = 0.4) -> None:
        check_choice(detector, ("hog", "cnn"), "detector")
        self.num_jitters = int(num_jitters)
        self.detector = detector
        self.threshold = threshold
        self.last_notes: tuple[str, ...] = ()

    def embed(self, image: np.ndarray | torch.Tensor, landmarks: np.ndarray | None = None) -> torch.Tensor:
        """Descriptor of the main (largest) face.

        Args:
            image: ``(H, W, 3)`` uint8 RGB, or a ``(3, H, W)`` tensor in [-1, 1] (an aligned crop
                or a whole photo).
            landmarks: ``(68, 2)`` landmarks in the image's pixels. When None they are detected;
                if no face is found the whole image is used as the face box (recorded in
                ``last_notes``).

        Returns:
            ``(128,)`` float32 CPU tensor.
        """
        dlib = import_dlib()
        pixels = np.ascontiguousarray(as_uint8_image(image))
        notes: list[str] = []
        if landmarks is None:
            face = crop_landmarks(pixels, fallback="full_image", detector=self.detector)
            assert face is not None
            lm = face.landmarks
            if face.detector == "full_image":
                notes.append("no face detected: used the whole image as the face box")
                logger.info("identity: no face detected; using the whole image as the face box")
        else:
            lm = np.asarray(landmarks, dtype=np.float64)
            if lm.shape != (68, 2):
                raise ShapeError(f"landmarks must be (68, 2), got {lm.shape}")
        x0, y0 = np.floor(lm.min(0)).astype(int)
        x1, y1 = np.ceil(lm.max(0)).astype(int)
        rect = dlib.rectangle(int(x0), int(y0), int(x1), int(y1))
        points = [dlib.point(int(round(x)), int(round(y))) for x, y in lm]
        shape = dlib.full_object_detection(rect, points)
        desc = _face_recognizer().compute_face_descriptor(pixels, shape, self.num_jitters)
        self.last_notes = tuple(notes)
        return torch.tensor(np.asarray(desc), dtype=torch.float32)

    @staticmethod
    def distance(a: torch.Tensor, b: torch.Tensor) -> float:
        """Euclidean distance of two descriptors (dlib: < 0.6 means same person)."""
        return float(torch.linalg.vector_norm(a.float() - b.float()))

    def similarity(self, a: torch.Tensor, b: torch.Tensor) -> float:
        """``1 - ||a - b||``; same person when above :attr:`threshold`."""
        return 1.0 - self.distance(a, b)


class IRSEIdentity:
    """Adapter for the IR-SE / IR backbones of ``dhr.models.encoders.irse`` (ArcFace, CurricularFace).

    Args:
        model: An ``IRBackbone`` (``embed(images (B,3,H,W) in [-1,1], crop=...) -> (B, 512)``
            unit-norm rows).
        crop: ``"psp"`` for FFHQ-aligned crops (pSp/e4e inner-face crop), ``"none"`` for crops
            already aligned to the 112 px ArcFace template.
        threshold: Same-person threshold on the cosine similarity, if known for this model.
        name: Model name for reports.
    """

    def __init__(
        self,
        model: Any,
        *,
        crop: Literal["none", "psp"] = "psp",
        threshold: float | None = None,
        name: str = "irse",
    ) -> None:
        check_choice(crop, ("none", "psp"), "crop")
        self.model = model
        self.crop = crop
        self.threshold = threshold
        self.name = name

    def embed(self, image: np.ndarray | torch.Tensor, landmarks: np.ndarray | None = None) -> torch.Tensor:
        """``(512,)`` unit-norm embedding (differentiable for tensor input; landmarks unused)."""
        if isinstance(image, torch.Tensor):
            x = image if image.ndim == 4 else image[None]
        else:
            pixels = as_uint8_image(image)
            x = torch.from_numpy(np.array(pixels)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        return self.model.embed(x, crop=self.crop)[0]

    def similarity(self, a: torch.Tensor, b: torch.Tensor) -> float:
        """Cosine similarity."""
        return float(torch.nn.functional.cosine_similarity(a.float()[None], b.float()[None])[0])
