"""Framing check: are aligned crops framed the way the model's alignment template frames faces?

A model only reconstructs faces framed like its training crops (``faces-64``: UTKFace's tight
crops; FFHQ models: the looser FFHQ crop). Aligned crops from elsewhere, given as they are (the
benchmark's ``--data``), may be framed differently: the face is then too small or too large for
the model, and reconstructions are bad with no error. :func:`framing_of` measures the similarity
transform that would re-align a crop's landmarks to the template; :func:`framing_warning` turns a
set of them into one message.

Example:
    >>> f = framing_of(aligned.landmarks, aligned.size, model_template)
    >>> f.matches(), f.describe()
    (False, 'faces 1.52x smaller than the template expects, off-centre by 3% of the side')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dhr.errors import ShapeError
from dhr.faces.align import AlignTemplate

__all__ = ["Framing", "framing_of", "framing_warning", "SCALE_TOLERANCE", "SHIFT_TOLERANCE", "ANGLE_TOLERANCE"]

SCALE_TOLERANCE = 0.15
"""Relative size difference accepted (a face 15 % larger or smaller than the template's)."""
SHIFT_TOLERANCE = 0.08
"""Centre offset accepted, as a fraction of the crop side."""
ANGLE_TOLERANCE = 10.0
"""Roll accepted, in degrees."""


@dataclass(frozen=True)
class Framing:
    """How a crop's face differs from the template's framing.

    Attributes:
        scale: Factor that would re-align the crop: > 1 means the face is smaller in the crop than
            the template wants (a looser crop), < 1 larger (a tighter crop).
        shift: Distance the crop centre would move, as a fraction of the crop side.
        angle: Rotation that would re-align the crop, in degrees.
    """

    scale: float
    shift: float
    angle: float

    def matches(self, scale_tol: float = SCALE_TOLERANCE, shift_tol: float = SHIFT_TOLERANCE,
                angle_tol: float = ANGLE_TOLERANCE) -> bool:
        """True when every difference is within its tolerance."""
        return (abs(math.log(self.scale)) <= math.log1p(scale_tol) and self.shift <= shift_tol
                and abs(self.angle) <= angle_tol)

    def describe(self) -> str:
        """E.g. ``"faces 1.52x smaller than the template expects, off-centre by 3% of the side"``."""
        if self.scale >= 1:
            size = f"faces {self.scale:.2f}x smaller than the template expects"
        else:
            size = f"faces {1 / self.scale:.2f}x larger than the template expects"
        text = f"{size}, off-centre by {self.shift:.0%} of the side"
        if abs(self.angle) > 1:
            text += f", rotated {self.angle:+.0f} deg"
        return text


def framing_of(landmarks: np.ndarray, size: int, template: AlignTemplate) -> Framing:
    """The framing of a ``size`` x ``size`` crop whose 68 landmarks are ``landmarks`` (crop pixels).

    Args:
        landmarks: ``(68, 2)`` float, (x, y) in pixels of the crop.
        size: The crop's side in pixels.
        template: The model's alignment template (any size; used at ``size``).

    Returns:
        The :class:`Framing`; ``Framing(1, 0, 0)`` for a crop aligned with ``template``.

    Raises:
        ShapeError: ``landmarks`` is not ``(68, 2)``.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ShapeError(f"landmarks must be (68, 2), got {list(lm.shape)}")
    m = template.with_size(int(size)).matrix(lm)
    lin = m[:2, :2]
    scale = float(math.sqrt(abs(np.linalg.det(lin))))
    centre = np.array([(size - 1) / 2.0, (size - 1) / 2.0])
    moved = lin @ centre + m[:2, 2]
    shift = float(np.hypot(*(moved - centre)) / size)
    angle = float(math.degrees(math.atan2(lin[1, 0], lin[0, 0])))
    return Framing(scale=scale, shift=shift, angle=angle)


def framing_warning(framings: Sequence[Framing], template: AlignTemplate, what: str = "the inputs") -> str | None:
    """One warning when the median framing of ``framings`` does not match ``template``, else None."""
    if not framings:
        return None
    med = Framing(scale=float(np.median([f.scale for f in framings])),
                  shift=float(np.median([f.shift for f in framings])),
                  angle=float(np.median([f.angle for f in framings])))
    if med.matches():
        return None
    off = sum(not f.matches() for f in framings)
    return (f"{what} are framed differently from the model's alignment template {template.name!r}: "
            f"{med.describe()} (median of {len(framings)}; {off} outside tolerance). Reconstructions will "
            "be poor: align the original photos with `dhr align` (it uses the model's template) or use a "
            "model trained on this framing")
