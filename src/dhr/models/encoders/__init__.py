"""Image encoders and identity backbones that load official checkpoints by their key layout.

- :mod:`dhr.models.encoders.irse`: IR / IR-SE backbones, :class:`ArcFace` (IR-SE50) and
  :class:`CurricularFace` (IR-101) identity networks.
- :mod:`dhr.models.encoders.psp`: pSp ``GradualStyleEncoder`` and e4e ``Encoder4Editing``,
  :func:`load_encoder` for official ``encoder.*`` weights.
"""

from __future__ import annotations

from dhr.models.encoders.irse import ArcFace, CurricularFace, IRBackbone
from dhr.models.encoders.psp import Encoder4Editing, GradualStyleEncoder, LatentEncoder, load_encoder

__all__ = [
    "ArcFace",
    "CurricularFace",
    "IRBackbone",
    "Encoder4Editing",
    "GradualStyleEncoder",
    "LatentEncoder",
    "load_encoder",
]
