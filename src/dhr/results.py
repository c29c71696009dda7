"""What :class:`dhr.Pipeline` hands back: one inverted face, one edit, one sweep.

Frozen dataclasses in the style of ``diffusers``' outputs: tensors and arrays as fields (shapes
documented), PIL views as properties. They hold data only; rendering and pasting stay in the
pipeline, and :mod:`dhr.bundle` saves and re-hydrates a :class:`PhotoInversion`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dhr.editing.media import save_gif
from dhr.faces.align import AlignedFace
from dhr.io.image import Photo, tensor_to_uint8, to_pil
from dhr.records import final_losses
from dhr.types import Inversion

__all__ = ["EditResult", "PhotoInversion", "SweepResult", "edit_label"]


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
        return to_pil(self.inversion.image)

    @property
    def aligned_image(self) -> Image.Image:
        """The aligned input crop as a PIL RGB image."""
        if self.aligned is not None:
            return to_pil(self.aligned.crop)
        return to_pil(self.inversion.target)

    @property
    def mask_image(self) -> Image.Image | None:
        """The domain mask m (white = in-domain) as a PIL ``L`` image, or None for methods without one."""
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
        return final_losses(self.inversion.losses)

    def to_numpy(self) -> np.ndarray:
        """The reconstruction as ``(R, R, 3)`` uint8."""
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
        paste_mode: How it was pasted (``"delta"`` or ``"crop"``; see :mod:`dhr.faces.paste`), or None.
    """

    tensor: torch.Tensor
    ws: torch.Tensor
    strengths: dict[str, float]
    pasted_pixels: np.ndarray | None = None
    paste_mask: np.ndarray | None = None
    paste_mode: str | None = None

    @property
    def crop(self) -> Image.Image:
        """The edited crop as a PIL image."""
        return to_pil(self.tensor)

    @property
    def pasted(self) -> Image.Image | None:
        """The photo with the edit pasted back, as a PIL image (None without a photo)."""
        return None if self.pasted_pixels is None else to_pil(self.pasted_pixels)

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
        return save_gif(self.frames, path, fps=fps, pingpong=True)


def edit_label(strengths: Mapping[str, float]) -> str:
    """``{"age": 2, "smile": -1}`` -> ``age+2_smile-1``; empty -> ``inversion``."""
    if not strengths:
        return "inversion"
    return "_".join(f"{k}{float(v):+g}" for k, v in strengths.items())
