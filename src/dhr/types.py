"""Frozen dataclasses exchanged between pipeline stages.

Data flows one way: photo -> align -> embed -> segment -> refine -> edit -> paste back -> save.
Tensors inside these records are per image (no batch dimension) unless stated otherwise.

Notation (paper -> code): m = ``DomainMask.mask`` (1 = in-domain), f = ``Inversion.feature``,
θ* - θ = ``Inversion.weight_delta``.

:class:`RenderSpec` is everything besides the tensors that decides how an :class:`Inversion`
renders and how a bundle stores it; the names of the storage formats live here so that the stages
can name them without depending on :mod:`dhr.bundle`, which implements them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from dhr.checks import check_choice
from dhr.errors import ConfigError

__all__ = ["Embedding", "DomainMask", "RenderSpec", "Inversion", "DeltaFormat", "FeatureFormat", "NoiseMode",
           "DELTA_FORMATS", "FEATURE_FORMATS", "NOISE_MODES"]

DeltaFormat = Literal["fp32", "fp16", "int8", "int4"]
FeatureFormat = Literal["fp32", "fp16"]
NoiseMode = Literal["const", "none"]
DELTA_FORMATS: tuple[str, ...] = ("fp32", "fp16", "int8", "int4")
"""Storage formats of a weight delta (implemented by :mod:`dhr.bundle.codec`)."""
FEATURE_FORMATS: tuple[str, ...] = ("fp32", "fp16")
"""Storage formats of the feature f*."""
NOISE_MODES: tuple[str, ...] = ("const", "none")
"""Per-pixel noise of the generator: its fixed buffers, or none."""


@dataclass(frozen=True)
class Embedding:
    """Result of the embedding stage for one image.

    Attributes:
        ws: ``(num_ws, D)`` W+ code.
        image: ``(3, R, R)`` generator output for ``ws`` in [-1, 1] (unclamped).
        method: Name of the embedding method (``encoder``, ``optim``, ...).
        noise: Optional optimised noise maps (W order), each ``(1, 1, r, r)``.
        losses: Loss curves by name.
    """

    ws: torch.Tensor
    image: torch.Tensor
    method: str
    noise: tuple[torch.Tensor, ...] | None = None
    losses: dict[str, list[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class DomainMask:
    """Domain-specific segmentation of one image (paper section 3.3).

    Attributes:
        mask: ``(1, R, R)`` float in {0, 1}; 1 = in-domain (tuned via θ), 0 = out-of-domain (via f).
        mask_superpixel: ``(1, R, R)`` superpixel test alone (m_s), or None if disabled.
        mask_parsing: ``(1, R, R)`` parsing test alone (m_p), or None if no parser.
        error_maps: Per-layer spatial error maps ``(1, h_l, w_l)`` between coarse inversion and target.
        superpixels: ``(R, R)`` int64 SLIC labels starting at 1, or None.
        parsing: ``(K, R, R)`` class probabilities of the parser, or None.
        scores: ``(S,)`` per-superpixel error score v_k (label k+1), or None.
        coarse: ``(3, R, R)`` coarse inversion image, or None.
        mask_occluder: ``(1, R, R)`` occluder-network test alone (m_o), or None when no network is set.
        occluder: ``(R, R)`` the occluder network's per-pixel probability, or None.
    """

    mask: torch.Tensor
    mask_superpixel: torch.Tensor | None = None
    mask_parsing: torch.Tensor | None = None
    error_maps: tuple[torch.Tensor, ...] = ()
    superpixels: torch.Tensor | None = None
    parsing: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    coarse: torch.Tensor | None = None
    mask_occluder: torch.Tensor | None = None
    occluder: torch.Tensor | None = None


@dataclass(frozen=True)
class RenderSpec:
    """How an :class:`Inversion` renders and is stored, besides its tensors.

    The blend block is the inversion's own ``feature_resolution`` (it is the shape of its
    ``feature``); everything else the renderer and the bundle need is here.

    Attributes:
        noise_mode: Per-pixel noise of the generator: ``const`` (its fixed buffers) or ``none``.
        freeze_ood_skip: Renders under an edited code also blend the RGB skip at the feature
            resolution with the inversion's own, so out-of-domain regions stay fixed
            (``RefineConfig.blend_rgb_skip``).
        delta_format: Storage format of ``weight_delta`` in a bundle (:data:`DELTA_FORMATS`).
        feature_format: Storage format of ``feature`` in a bundle (:data:`FEATURE_FORMATS`).

    Raises:
        ConfigError: A value outside its choices.
    """

    noise_mode: NoiseMode = "const"
    freeze_ood_skip: bool = False
    delta_format: DeltaFormat = "fp16"
    feature_format: FeatureFormat = "fp32"

    def __post_init__(self) -> None:
        check_choice(self.noise_mode, NOISE_MODES, "noise_mode")
        check_choice(self.delta_format, DELTA_FORMATS, "delta_format")
        check_choice(self.feature_format, FEATURE_FORMATS, "feature_format")
        if not isinstance(self.freeze_ood_skip, bool):
            raise ConfigError(f"freeze_ood_skip must be True or False, got {self.freeze_ood_skip!r}")

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain JSON types (the ``render`` section of a bundle's sidecar)."""
        return {"noise_mode": self.noise_mode, "freeze_ood_skip": self.freeze_ood_skip,
                "delta_format": self.delta_format, "feature_format": self.feature_format}


@dataclass(frozen=True)
class Inversion:
    """A finished inversion of one image: everything needed to re-render and edit without optimising.

    Rendering rule (reference section 1.9): with θ' = θ + ``weight_delta``,
    ``state = run_until(ws, feature_resolution)`` under θ', features blended as
    ``state.features * m + feature * (1 - m)`` with m = ``feature_mask``, then ``run_from``.

    Attributes:
        ws: ``(num_ws, D)`` W+ code (the pivot; edits move it).
        image: ``(3, R, R)`` final reconstruction in [-1, 1] (unclamped).
        target: ``(3, R, R)`` the aligned input in [-1, 1].
        method: ``dhr``, ``pti``, ``feature``, ``encoder`` or ``optim``.
        weight_delta: Synthesis tensors that changed, as ``tuned - base`` (names as in
            ``Generator.state_dict()``); empty when no weights were tuned.
        feature: ``(C, r, r)`` optimised feature f*, or None.
        feature_resolution: r, or None.
        feature_mask: ``(1, r, r)`` soft in-domain mask at feature resolution, or None
            (None with a feature means the feature replaces the generator's everywhere).
        domain: The segmentation, or None for methods without one.
        losses: Loss curves by name.
        meta: Provenance (config, timings, hashes, versions); never read by the renderer.
        render_spec: How it renders and is stored (noise, skip freezing, storage formats).
    """

    ws: torch.Tensor
    image: torch.Tensor
    target: torch.Tensor
    method: str
    weight_delta: dict[str, torch.Tensor] = field(default_factory=dict)
    feature: torch.Tensor | None = None
    feature_resolution: int | None = None
    feature_mask: torch.Tensor | None = None
    domain: DomainMask | None = None
    losses: dict[str, list[float]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    render_spec: RenderSpec = field(default_factory=RenderSpec)
