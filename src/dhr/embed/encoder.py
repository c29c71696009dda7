"""Encoder embedding: an image-to-W+ network followed by one render with the generator's fixed noise.

Three kinds of encoder are accepted:

- :class:`dhr.models.small_encoder.SmallEncoder` (the bundled model), called as ``encoder(x, G.w_avg)``
  at ``encoder.config.resolution``;
- anything following :class:`EncoderAdapter` (``.encode(x) -> ws`` and ``.input_resolution``), e.g. a
  wrapper around an official e4e/pSp network that adds its ``latent_avg``;
- any other module whose ``forward(x)`` returns full W+ codes, e.g.
  :class:`dhr.models.encoders.LatentEncoder` (official e4e/pSp, which read 256 px images).

The target is resized (bilinear with antialias, like the reference's PIL resize) to the encoder's input
resolution when it differs, as the reference feeds ``images_resize`` (256) to its encoders.

Notation (paper -> code): E(x) = ``encode(...)[b].ws``; G(E(x)) = ``.image``.
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from dhr.checks import check_shape
from dhr.errors import ConfigError, ShapeError
from dhr.types import Embedding

__all__ = ["EncoderAdapter", "encode", "encoder_input_resolution"]

logger = logging.getLogger(__name__)

#: Input size of the official e4e / pSp encoders (they read the 256 px ``images_resize``).
OFFICIAL_INPUT_RESOLUTION = 256


@runtime_checkable
class EncoderAdapter(Protocol):
    """An encoder wrapped to return finished W+ codes (any average latent already added).

    Attributes:
        input_resolution: Side of the square ``(B, 3, r, r)`` input it expects.
    """

    input_resolution: int

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Encodes ``x (B, 3, r, r)`` in [-1, 1] to W+ codes ``(B, num_ws, D)``."""
        ...


def encoder_input_resolution(encoder: object, default: int) -> int:
    """The input size an encoder expects.

    Checked in order: ``encoder.input_resolution``; ``encoder.config.resolution`` (SmallEncoder);
    256 for :class:`dhr.models.encoders.LatentEncoder` and the bare official networks; else ``default``.
    """
    value = getattr(encoder, "input_resolution", None)
    if value is not None:
        return int(value)
    from dhr.models.small_encoder import SmallEncoder

    if isinstance(encoder, SmallEncoder):
        return int(encoder.config.resolution)
    from dhr.models.encoders.psp import Encoder4Editing, GradualStyleEncoder, LatentEncoder

    if isinstance(encoder, (LatentEncoder, Encoder4Editing, GradualStyleEncoder)):
        return OFFICIAL_INPUT_RESOLUTION
    return int(default)


@torch.no_grad()
def encode(encoder: nn.Module | EncoderAdapter, G: nn.Module, target: torch.Tensor, *,
           input_resolution: int | None = None, vectorize: bool = False) -> list[Embedding]:
    """Embeds images with an encoder and renders them (inference only, no gradients).

    Args:
        encoder: A SmallEncoder, an :class:`EncoderAdapter`, or a module mapping ``(B, 3, r, r)`` to
            ``(B, num_ws, D)`` codes.
        G: The generator the codes belong to.
        target: ``(B, 3, R, R)`` float in [-1, 1], R = ``G.resolution``.
        input_resolution: Overrides the encoder's input size (see :func:`encoder_input_resolution`;
            defaults to R when nothing is known about the encoder).
        vectorize: Encode the batch in one call. False (default) encodes the images one at a time,
            so each code is bit-identical to the image's B=1 encoding whatever the batch (batched
            convolutions round differently, and the refinement amplifies such differences).

    Returns:
        One :class:`Embedding` per image: ``ws (num_ws, D)``, ``image (3, R, R)`` rendered with the
        generator's fixed noise buffers (unclamped), ``method="encoder"``.

    Raises:
        ShapeError: If ``target`` has the wrong shape or the encoder returns codes of the wrong shape.
        ConfigError: If ``input_resolution`` is not positive.
    """
    if not isinstance(target, torch.Tensor) or target.ndim != 4 or target.shape[1] != 3:
        shape = list(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__
        raise ShapeError(f"target must be a (B, 3, R, R) tensor in [-1, 1], got {shape}")
    b = check_shape(target, ["B", 3, "H", "W"], "target")
    if b["H"] != G.resolution or b["W"] != G.resolution:
        raise ShapeError(f"target is {b['H']}x{b['W']} but the generator renders {G.resolution}x{G.resolution}; "
                         f"align/resize the image to {G.resolution}x{G.resolution}")
    size = input_resolution if input_resolution is not None else encoder_input_resolution(encoder, b["H"])
    if size < 1:
        raise ConfigError(f"input_resolution={size} must be positive")
    x = target
    if size != b["H"]:
        x = F.interpolate(target, size=(size, size), mode="bilinear", align_corners=False, antialias=True)

    from dhr.models.small_encoder import SmallEncoder

    def run(xb: torch.Tensor) -> torch.Tensor:
        if isinstance(encoder, SmallEncoder):
            out = encoder(xb, G.w_avg)
        elif isinstance(encoder, EncoderAdapter):
            out = encoder.encode(xb)
        else:
            out = encoder(xb)
        if not isinstance(out, torch.Tensor):
            raise ShapeError(f"the encoder returned {type(out).__name__}, expected a (B, num_ws, D) tensor")
        check_shape(out, [xb.shape[0], G.num_ws, G.style_dim], "encoder output")
        return out

    ws = run(x) if vectorize else torch.cat([run(x[i:i + 1]) for i in range(b["B"])])
    ws = ws.to(target.dtype)
    images = G(ws, noise_mode="const") if vectorize else torch.cat(
        [G(ws[i:i + 1], noise_mode="const") for i in range(b["B"])])
    logger.debug("encode: %d images at %d px input", b["B"], size)
    return [Embedding(ws=ws[i].clone(), image=images[i].clone(), method="encoder") for i in range(b["B"])]
