"""Embedding stage: photo -> W/W+ code and its reconstruction (:class:`dhr.types.Embedding`).

- :mod:`dhr.embed.optimize`: latent optimisation (DHR's coarse inversion, the plain baseline).
- :mod:`dhr.embed.encoder`: encoder embedding (SmallEncoder, e4e, pSp).
"""

from __future__ import annotations

from dhr.embed.encoder import EncoderAdapter, encode
from dhr.embed.optimize import OptimConfig, optimize_latent

__all__ = ["EncoderAdapter", "OptimConfig", "encode", "optimize_latent"]
