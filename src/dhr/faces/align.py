"""Face alignment: landmarks -> exact similarity transform -> square crop (FFHQ recipe).

The FFHQ recipe (Karras et al., ``ffhq-dataset/download_ffhq.py``) builds an oriented square
("quad") from the 68 landmarks::

    eye_to_eye   = eye_right - eye_left          (eye centres, image-right minus image-left)
    eye_to_mouth = mouth_avg - eye_avg            (mouth corners 48 and 54)
    x = eye_to_eye - flipud(eye_to_mouth) * [-1, 1];  x /= |x|
    x *= max(|eye_to_eye| * 2.0, |eye_to_mouth| * 1.8)      (half side of the square)
    y = flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1

and resamples the square to the output size, after shrinking big photos and padding with a
blurred reflection where the square leaves the photo. Here the square is expressed as an exact
3x3 similarity matrix (photo pixel -> crop pixel, pixel centres at integer coordinates) so the
crop can be warped back (``dhr.faces.paste``) with the exact inverse.

:class:`AlignTemplate` holds the recipe constants (``eye_scale`` 2.0, ``mouth_scale`` 1.8,
``center_shift`` 0.1, plus a lateral shift and a roll angle that are 0 for FFHQ), or, in
``mode="points"``, target positions of 5 points fitted by least squares.
``AlignTemplate.from_landmarks`` derives the constants from the mean landmarks of a model's
training crops, so faces are framed like the training data (e.g. tight UTKFace crops).

Resampling (``warp_to_crop``, in :mod:`dhr.faces.warp` with the other matrix helpers and
re-exported here): integer box-shrink of the needed region when the face is more than twice the
output size, reflection padding + blur where the square leaves the photo (FFHQ's rule), then
bilinear ``grid_sample`` with 2x2 supersampling when downscaling. :func:`user_mask_to_crop` warps a
mask drawn on the photo into a face's crop with the same sampler.

Size: about 560 lines, over the project's ~500, because the template (constants, fitting from a
model's training crops), :class:`AlignedFace` and the align entry points share one matrix
convention and are read together; the pixel sampling already lives in :mod:`dhr.faces.warp`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from dhr.checks import check_choice
from dhr.errors import ConfigError, FaceNotFoundError, ImageError
from dhr.faces.detect import DetectedFace, Detector, detect_face, find_faces, five_points
from dhr.faces.warp import apply_matrix, sample_affine, similarity_from_points, warp_to_crop
from dhr.io.image import Photo, load_image, load_mask_array, uint8_to_tensor

__all__ = [
    "AlignTemplate",
    "AlignedFace",
    "quad_from_landmarks",
    "similarity_from_points",
    "warp_to_crop",
    "sample_affine",
    "apply_matrix",
    "align_landmarks",
    "align_face",
    "align_photo",
    "align_whole_image",
    "user_mask_to_crop",
    "mean_landmarks_from_images",
    "template_from_images",
]

logger = logging.getLogger(__name__)

OnMissing = Literal["raise", "whole_image"]


def _eye_mouth(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ConfigError(f"landmarks must have shape (68, 2), got {lm.shape}")
    eye_left = lm[36:42].mean(0)  # image-left eye (subject's right)
    eye_right = lm[42:48].mean(0)
    eye_avg = (eye_left + eye_right) * 0.5
    mouth_avg = (lm[48] + lm[54]) * 0.5
    return eye_avg, eye_right - eye_left, mouth_avg - eye_avg, lm


def _rot(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])


@dataclass(frozen=True)
class AlignTemplate:
    """How a face is framed in the aligned square crop.

    Attributes:
        name: Identifier stored in :class:`AlignedFace` (e.g. ``"ffhq"``).
        size: Output side S in pixels.
        mode: ``"quad"`` (FFHQ construction with the constants below) or ``"points"``
            (least-squares similarity of the 5 points onto ``points``).
        eye_scale: Half side >= ``eye_scale * |eye_to_eye|`` (FFHQ 2.0).
        mouth_scale: Half side >= ``mouth_scale * |eye_to_mouth|`` (FFHQ 1.8).
        center_shift: Centre = eye_avg + ``center_shift * eye_to_mouth`` + ``lateral_shift *
            eye_to_eye`` (FFHQ 0.1 and 0.0).
        lateral_shift: See ``center_shift``.
        angle: Roll of the face in the crop in degrees (FFHQ 0: the quad's x axis is horizontal).
        points: ``mode="points"`` only: 5 target points (right eye, left eye, nose tip, mouth
            corners 48 and 54) as (x, y) fractions of the crop side.
    """

    name: str = "ffhq"
    size: int = 1024
    mode: Literal["quad", "points"] = "quad"
    eye_scale: float = 2.0
    mouth_scale: float = 1.8
    center_shift: float = 0.1
    lateral_shift: float = 0.0
    angle: float = 0.0
    points: tuple[tuple[float, float], ...] | None = None

    def __post_init__(self) -> None:
        check_choice(self.mode, ("quad", "points"), "AlignTemplate.mode")
        if self.size < 8:
            raise ConfigError(f"AlignTemplate.size must be >= 8, got {self.size}")
        if self.mode == "points" and (self.points is None or len(self.points) != 5):
            raise ConfigError("AlignTemplate(mode='points') needs 5 target points")
        if self.mode == "quad" and (self.eye_scale <= 0 or self.mouth_scale <= 0):
            raise ConfigError(
                f"eye_scale and mouth_scale must be positive, got {self.eye_scale}, {self.mouth_scale}"
            )

    @classmethod
    def ffhq(cls, size: int = 1024) -> AlignTemplate:
        """The FFHQ / CelebA-HQ alignment used by StyleGAN2 FFHQ models."""
        return cls(name="ffhq", size=size)

    @classmethod
    def from_landmarks(
        cls,
        mean_landmarks: np.ndarray,
        size: int,
        *,
        name: str = "custom",
        mode: Literal["quad", "points"] = "quad",
    ) -> AlignTemplate:
        """Derives a template that reproduces the framing of a set of training crops.

        With ``mode="quad"`` the FFHQ constants are solved so that the quad built from
        ``mean_landmarks`` is exactly the crop ``[-0.5, size - 0.5]^2``: the half side ``size/2``
        gives ``eye_scale`` and ``mouth_scale`` (both terms of the max are then equal for the
        mean face), the crop centre gives ``center_shift`` and ``lateral_shift``, and the
        direction of the quad's x axis gives ``angle``.

        Args:
            mean_landmarks: ``(68, 2)`` mean landmark positions in pixels of ``size`` x ``size``
                training crops.
            size: Crop side in pixels.
            name: Template name.
            mode: ``"quad"`` or ``"points"`` (5-point least-squares targets).

        Returns:
            The template.
        """
        eye_avg, e2e, e2m, lm = _eye_mouth(mean_landmarks)
        if mode == "points":
            pts = (five_points(lm) + 0.5) / size
            return cls(name=name, size=size, mode="points", points=tuple(map(tuple, pts.tolist())))
        check_choice(mode, ("quad", "points"), "mode")
        x = e2e - np.flipud(e2m) * np.array([-1.0, 1.0])
        half = size / 2.0
        centre = np.array([(size - 1) / 2.0, (size - 1) / 2.0])
        coeffs = np.linalg.solve(np.stack([e2m, e2e], axis=1), centre - eye_avg)
        angle = math.degrees(math.atan2(x[1], x[0]))
        return cls(
            name=name,
            size=size,
            mode="quad",
            eye_scale=float(half / np.hypot(*e2e)),
            mouth_scale=float(half / np.hypot(*e2m)),
            center_shift=float(coeffs[0]),
            lateral_shift=float(coeffs[1]),
            angle=float(angle),
        )

    def with_size(self, size: int) -> AlignTemplate:
        """The same framing at another output size."""
        d = asdict(self)
        d["size"] = size
        if d["points"] is not None:
            d["points"] = tuple(tuple(p) for p in d["points"])
        return AlignTemplate(**d)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (``AlignTemplate(**d)`` after ``from_dict`` restores it)."""
        d = asdict(self)
        if d["points"] is not None:
            d["points"] = [list(p) for p in d["points"]]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlignTemplate:
        """Inverse of :meth:`to_dict`; unknown keys raise ConfigError."""
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"Unknown AlignTemplate keys {sorted(unknown)}; allowed: {sorted(known)}")
        d = dict(d)
        if d.get("points") is not None:
            d["points"] = tuple(tuple(float(v) for v in p) for p in d["points"])
        return cls(**d)

    def matrix(self, landmarks: np.ndarray) -> np.ndarray:
        """Similarity transform from photo pixels to crop pixels for these landmarks.

        Args:
            landmarks: ``(68, 2)`` in photo pixels.

        Returns:
            ``(3, 3)`` float64 matrix M with ``[u, v, 1] = M @ [x, y, 1]``.
        """
        if self.mode == "points":
            assert self.points is not None
            dst = np.asarray(self.points, dtype=np.float64) * self.size - 0.5
            return similarity_from_points(five_points(landmarks), dst)
        centre, x_vec, _ = quad_from_landmarks(landmarks, self)
        half = float(np.hypot(*x_vec))
        x_hat = x_vec / half
        y_hat = np.array([-x_hat[1], x_hat[0]])
        s = self.size / (2.0 * half)
        rot = np.stack([x_hat, y_hat])  # rows: photo -> face frame
        lin = s * rot
        m = np.eye(3)
        m[:2, :2] = lin
        m[:2, 2] = (self.size - 1) / 2.0 - lin @ centre
        return m


def quad_from_landmarks(
    landmarks: np.ndarray, template: AlignTemplate | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The FFHQ oriented square for a face.

    Args:
        landmarks: ``(68, 2)`` photo pixels.
        template: Constants (FFHQ when None); must be ``mode="quad"``.

    Returns:
        ``(c, x, y)``: centre ``(2,)`` and the half-side vectors ``(2,)`` pointing to the crop's
        right and down. Corners are ``c - x - y, c - x + y, c + x + y, c + x - y``.
    """
    t = template or AlignTemplate.ffhq()
    eye_avg, e2e, e2m, _ = _eye_mouth(landmarks)
    x = e2e - np.flipud(e2m) * np.array([-1.0, 1.0])
    norm = np.hypot(*x)
    if norm == 0:
        raise FaceNotFoundError("Degenerate landmarks (eyes and mouth coincide); cannot align this face.")
    x = x / norm
    x = _rot(-t.angle) @ x
    x = x * max(np.hypot(*e2e) * t.eye_scale, np.hypot(*e2m) * t.mouth_scale)
    y = np.flipud(x) * np.array([-1.0, 1.0])
    c = eye_avg + e2m * t.center_shift + e2e * t.lateral_shift
    return c, x, y


@dataclass(frozen=True)
class AlignedFace:
    """A square face crop and the exact transform back to its photo.

    Attributes:
        crop: ``(S, S, 3)`` uint8 RGB.
        matrix: ``(3, 3)`` float64, photo pixel -> crop pixel (pixel centres at integers).
        inverse: ``(3, 3)`` float64, crop pixel -> photo pixel.
        landmarks: ``(68, 2)`` landmarks in crop pixels, or None (whole-image alignment).
        source_box: Detector box ``(left, top, right, bottom)`` in photo pixels, or None.
        face_index: Size rank of the face in the photo (-1 for whole-image alignment).
        template_name: Name of the :class:`AlignTemplate` used (``"whole_image"`` for the
            whole-image fallback).
        photo_size: ``(height, width)`` of the photo it came from.
        whole_image: True when no face was used and the whole photo was fitted into the crop.
        source: Photo file name for messages.
        faces_found: Usable faces the detector found in the photo (None: not detected here, e.g. a
            whole-image alignment or an alignment read back from a bundle).
    """

    crop: np.ndarray
    matrix: np.ndarray
    inverse: np.ndarray
    landmarks: np.ndarray | None
    source_box: tuple[float, float, float, float] | None
    face_index: int
    template_name: str
    photo_size: tuple[int, int]
    whole_image: bool = False
    source: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)
    faces_found: int | None = None

    @property
    def size(self) -> int:
        """Crop side S."""
        return int(self.crop.shape[0])

    def to_tensor(self) -> torch.Tensor:
        """The crop as float32 ``(3, S, S)`` in [-1, 1]."""
        return uint8_to_tensor(self.crop)

    def photo_to_crop(self, points: np.ndarray) -> np.ndarray:
        """Maps ``(N, 2)`` photo pixel positions into the crop."""
        return apply_matrix(self.matrix, points)

    def crop_to_photo(self, points: np.ndarray) -> np.ndarray:
        """Maps ``(N, 2)`` crop pixel positions into the photo."""
        return apply_matrix(self.inverse, points)


def align_landmarks(
    photo: Photo,
    landmarks: np.ndarray,
    template: AlignTemplate | None = None,
    *,
    face_index: int = 0,
    source_box: tuple[float, float, float, float] | None = None,
) -> AlignedFace:
    """Aligns the face given by 68 landmarks.

    Args:
        photo: The photo.
        landmarks: ``(68, 2)`` photo pixels.
        template: Framing (FFHQ 1024 when None).
        face_index: Recorded in the result.
        source_box: Recorded in the result.

    Returns:
        The :class:`AlignedFace`.
    """
    t = template or AlignTemplate.ffhq()
    lm = np.asarray(landmarks, dtype=np.float64)
    m = t.matrix(lm)
    crop = warp_to_crop(photo.pixels, m, t.size)
    return AlignedFace(
        crop=crop,
        matrix=m,
        inverse=np.linalg.inv(m),
        landmarks=apply_matrix(m, lm),
        source_box=source_box,
        face_index=face_index,
        template_name=t.name,
        photo_size=(photo.height, photo.width),
        source=photo.name,
    )


def align_face(photo: Photo, face: DetectedFace, template: AlignTemplate | None = None) -> AlignedFace:
    """Aligns one detected face (see :func:`align_landmarks`)."""
    return align_landmarks(photo, face.landmarks, template, face_index=face.index, source_box=face.box)


def align_whole_image(photo: Photo, template: AlignTemplate | None = None) -> AlignedFace:
    """Fits the whole photo into the square crop (explicit fallback when no face is found).

    The photo is centred in a square of side max(H, W); the rest is filled by FFHQ's blurred
    reflection padding. The result is marked ``whole_image=True``, ``face_index=-1``,
    ``template_name="whole_image"`` and has no landmarks.

    Args:
        photo: The photo.
        template: Only its ``size`` is used (FFHQ 1024 when None).

    Returns:
        The :class:`AlignedFace`.
    """
    size = (template or AlignTemplate.ffhq()).size
    side = max(photo.height, photo.width)
    s = size / side
    m = np.eye(3)
    m[0, 0] = m[1, 1] = s
    m[0, 2] = (size - 1) / 2.0 - s * (photo.width - 1) / 2.0
    m[1, 2] = (size - 1) / 2.0 - s * (photo.height - 1) / 2.0
    crop = warp_to_crop(photo.pixels, m, size)
    logger.warning("%s: no face used; aligned the whole image", photo.name)
    return AlignedFace(
        crop=crop,
        matrix=m,
        inverse=np.linalg.inv(m),
        landmarks=None,
        source_box=None,
        face_index=-1,
        template_name="whole_image",
        photo_size=(photo.height, photo.width),
        whole_image=True,
        source=photo.name,
        notes=("no face detected: whole image fitted into the crop",),
    )


def align_photo(
    photo: Photo,
    *,
    template: AlignTemplate | None = None,
    index: int = 0,
    detector: Detector = "hog",
    upsample: int = 1,
    on_missing: OnMissing = "raise",
) -> AlignedFace:
    """Detects faces and aligns the one at ``index`` (0 = largest).

    Args:
        photo: The photo.
        template: Framing (FFHQ 1024 when None).
        index: Which face, by size rank.
        detector: ``"hog"`` or ``"cnn"``.
        upsample: Detector upsampling steps.
        on_missing: ``"raise"`` (FaceNotFoundError) or ``"whole_image"`` (fall back to
            :func:`align_whole_image`, marked in the result).

    Returns:
        The :class:`AlignedFace`.

    Raises:
        FaceNotFoundError: If no usable face (or no face ``index``) and ``on_missing="raise"``.
    """
    check_choice(on_missing, ("raise", "whole_image"), "on_missing")
    try:
        face = detect_face(photo, index=index, detector=detector, upsample=upsample)
    except FaceNotFoundError:
        if on_missing == "whole_image":
            return align_whole_image(photo, template)
        raise
    return align_face(photo, face, template)


def user_mask_to_crop(mask: str | Path | Image.Image | np.ndarray | torch.Tensor, aligned: AlignedFace,
                      photo: Photo | None, resolution: int) -> torch.Tensor:
    """A user's out-of-domain mask, drawn on the photo or on the crop, as the in-domain mask of the
    crop at the model resolution.

    Args:
        mask: A mask file (read with the photos' limits and formats; its luminance), a PIL image
            (luminance / 255), or an ``(H, W)`` array or tensor (nonzero = out of domain).
            White / nonzero marks what the generator should not reproduce (hands, glasses, ...).
        aligned: The face the mask is for.
        photo: The photo ``aligned`` came from: the mask then has the photo's size and is warped
            with ``aligned.inverse``. None: the mask has the crop's size ``S x S``.
        resolution: The model resolution R.

    Returns:
        ``(1, R, R)`` float32 CPU, 1 = in domain (the warped out-of-domain mask below 0.5).

    Raises:
        ImageError: Unreadable mask file, a mask that is not 2-D, or one whose size matches neither
            the photo nor the crop (the message says which size is expected).
    """
    if isinstance(mask, (str, Path)):
        arr = load_mask_array(mask)
    elif isinstance(mask, Image.Image):
        arr = np.asarray(mask.convert("L"), dtype=np.float32) / 255.0
    else:
        t = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask).float().squeeze()
        if t.ndim != 2:
            raise ImageError(f"mask must be 2-D (H, W), got shape {tuple(t.shape)}")
        arr = (t > 0).float().cpu().numpy()
    h, w = arr.shape
    S, R = aligned.size, int(resolution)
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


def mean_landmarks_from_images(
    paths: Iterable[str | Path],
    size: int,
    *,
    detector: Detector = "hog",
    upsample: int = 1,
) -> tuple[np.ndarray, int, list[str]]:
    """Mean 68-point landmarks of a set of (already cropped) training images.

    Each image is padded by 25% of its side with its edge colour so faces touching the border
    are still found, the largest face's landmarks are mapped to a ``size`` x ``size`` frame
    (pixel-centre convention), and all are averaged.

    Args:
        paths: Image files (e.g. the UTKFace crops).
        size: Frame side the landmarks are expressed in.
        detector: Detector for the crops.
        upsample: Detector upsampling steps.

    Returns:
        ``(mean (68, 2), number used, failed file names)``.

    Raises:
        FaceNotFoundError: If no image yields a face.
    """
    total = np.zeros((68, 2))
    used = 0
    failed: list[str] = []
    for p in paths:
        try:
            photo = load_image(p)
        except ImageError as exc:
            logger.warning("skipping %s: %s", p, exc)
            failed.append(str(p))
            continue
        h, w = photo.height, photo.width
        padn = int(round(0.25 * max(h, w)))
        padded = np.pad(photo.pixels, ((padn, padn), (padn, padn), (0, 0)), mode="edge")
        det = find_faces(
            Photo(pixels=padded, original_size=photo.original_size, path=photo.path),
            detector=detector,
            upsample=upsample,
            min_size=max(8, min(h, w) // 4),
        )
        if not det.faces:
            failed.append(str(p))
            continue
        lm = det.faces[0].landmarks - padn
        lm = (lm + 0.5) * np.array([size / w, size / h]) - 0.5
        total += lm
        used += 1
    if used == 0:
        raise FaceNotFoundError("No face found in any of the template images; check the paths.")
    return total / used, used, failed


def template_from_images(
    paths: Sequence[str | Path] | Iterable[str | Path],
    size: int,
    *,
    name: str = "custom",
    mode: Literal["quad", "points"] = "quad",
    detector: Detector = "hog",
    upsample: int = 1,
) -> AlignTemplate:
    """Derives the alignment template of a model from its training crops.

    Use it once for the bundled model (UTKFace crops): the aligner then frames new photos the
    way the model saw faces in training. Example::

        paths = sorted(Path("path/to/utkface").glob("*.jpg"))[:2000]
        template = template_from_images(paths, 256, name="utkface")
        json.dump(template.to_dict(), open("align_template.json", "w"))

    Args:
        paths: Training image files (square crops).
        size: Output side of the template.
        name: Template name.
        mode: ``"quad"`` (FFHQ construction, fitted constants) or ``"points"``.
        detector: Detector for the crops.
        upsample: Detector upsampling steps.

    Returns:
        The :class:`AlignTemplate`.
    """
    mean, used, failed = mean_landmarks_from_images(paths, size, detector=detector, upsample=upsample)
    logger.info("template %s: %d images used, %d without a face", name, used, len(failed))
    return AlignTemplate.from_landmarks(mean, size, name=name, mode=mode)
