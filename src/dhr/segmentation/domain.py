"""Domain-Specific Segmentation (paper section 3.3; reference sections 1.2-1.4).

Splits an aligned image into in-domain pixels (m = 1, later reconstructed by tuning the generator's
weights θ) and out-of-domain pixels (m = 0, reconstructed by the optimised feature f):

1. SLIC superpixels of the target (:mod:`dhr.segmentation.superpixels`).
2. Score v_k of superpixel k = sum over the perceptual layers of the layer's error-map mean inside it
   (:func:`dhr.segmentation.error_map.superpixel_scores`).
3. Superpixel test m_s(k) = [v_k < τ(c_k)], where c_k is the superpixel's dominant parsing class (argmax
   of the class probabilities summed over it) and τ(c) the per-class threshold of the parser
   (``parsing.thresholds(theta_skin, theta_inner, theta_other)``: 0.7 skin, 0.8 inner-face parts, 0.6
   every other class in the reference). ``theta`` set: one τ for every class, as in the paper.
4. Parsing test m_p = [P(out-of-domain classes) < 0.5] (``parsing.ood_probability()``).
5. Optional occluder test (``occluder`` set; not in the reference): m_o(k) = [mean over superpixel k of
   the occluder network's probability < ``occluder_threshold``] (:mod:`dhr.segmentation.occluder`). It
   finds what the error test cannot: objects the generator partly draws (a hand, a patch of another
   face, glasses), whose coarse-inversion error stays as low as the clean skin's. Without superpixels
   the test is per pixel.
6. m = m_s · m_p · m_o.
7. Optional clean-up (``min_region`` > 0, off in the reference): out-of-domain connected regions of m
   (4-connected) smaller than ``min_region`` of the image are put back in domain. A region of a few
   pixels is not an occluder the feature branch should own; on a small model the coarse inversion's
   error leaves such specks around the face. It knows nothing of what an occluder looks like, only
   its size.

Without a parser (``parsing=None`` or ``use_parsing=False``) there is no m_p and every superpixel uses
``theta`` if set, else ``theta_other`` (0.6: the threshold the reference gives class 0, which is what all
superpixels resolve to when its parsing fails). To reproduce that failure path exactly (m_p all ones,
class 0 everywhere) pass :func:`reference_parsing_fallback` as the parsing, explicitly.

Size: about 500 lines, one module because the seven steps above share one set of per-superpixel
arrays and one config; the pieces with their own state live beside it (superpixels, error maps, the
occluder network).

Notation (paper -> code): m = ``DomainMask.mask``; τ = ``theta`` (per class: ``theta_skin`` θ1,
``theta_inner`` θ2, ``theta_other``); v_i = ``DomainMask.scores``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from dhr.checks import check_choice, check_shape
from dhr.errors import ConfigError, ShapeError
from dhr.segmentation.error_map import TINY_POLICIES, TinyPolicy, error_image, superpixel_scores
from dhr.segmentation.superpixels import slic_labels
from dhr.types import DomainMask

__all__ = [
    "SegmentConfig",
    "ParsingLike",
    "parsing_probs",
    "FallbackParsing",
    "reference_parsing_fallback",
    "superpixel_mask",
    "drop_small_regions",
    "occluder_mask",
    "occluder_test",
    "segment",
    "save_domain_pngs",
]

logger = logging.getLogger(__name__)


@runtime_checkable
class ParsingLike(Protocol):
    """A face parsing of the aligned image (``dhr.faces.parsing.ParsingResult`` implements it).

    The class probabilities are read from ``probs`` or, if absent, ``probabilities`` (the name
    ``ParsingResult`` uses); see :func:`parsing_probs`. ``isinstance`` checks the methods and
    ``class_names`` only.

    Attributes:
        probs: ``(K, R, R)`` class probabilities.
        class_names: K class names.
    """

    class_names: tuple[str, ...]

    def thresholds(self, theta_skin: float, theta_inner: float, theta_other: float) -> torch.Tensor:
        """Superpixel threshold of every class, ``(K,)``."""
        ...

    def ood_probability(self) -> torch.Tensor:
        """Summed probability of the out-of-domain classes per pixel, ``(R, R)``."""
        ...


def parsing_probs(parsing: object) -> torch.Tensor:
    """The ``(K, R, R)`` class probabilities of a parsing (``probs`` or ``probabilities``)."""
    probs = getattr(parsing, "probs", None)
    if probs is None:
        probs = getattr(parsing, "probabilities", None)
    if not isinstance(probs, torch.Tensor):
        raise ConfigError(f"parsing {type(parsing).__name__} has no 'probs' / 'probabilities' tensor")
    return probs


@dataclass(frozen=True)
class FallbackParsing:
    """The reference's behaviour when parsing fails: one class (index 0, threshold ``theta_other``)
    and an all-in-domain parsing mask. Use only by explicit choice (see :func:`reference_parsing_fallback`).
    """

    probs: torch.Tensor
    class_names: tuple[str, ...] = ("fallback",)

    def thresholds(self, theta_skin: float, theta_inner: float, theta_other: float) -> torch.Tensor:
        return torch.tensor([theta_other], dtype=torch.float32)

    def ood_probability(self) -> torch.Tensor:
        return torch.zeros(self.probs.shape[-2:], dtype=self.probs.dtype, device=self.probs.device)


def reference_parsing_fallback(resolution: int, *, device: torch.device | str | None = None) -> FallbackParsing:
    """Parsing stand-in reproducing the reference after a parsing failure (no face found, ...).

    The reference catches every exception of its parser with a bare ``except``, sets m_p to all ones and
    a zero ``parsing_result``, so each superpixel's dominant class is index 0 (threshold 0.6). Callers
    that want this must catch the specific error themselves and pass this object as ``parsing``; record
    that they did.

    Args:
        resolution: R of the aligned image.
        device: Device of the probabilities.

    Returns:
        A :class:`FallbackParsing` with ``probs`` zeros ``(1, R, R)``.
    """
    if resolution < 1:
        raise ConfigError(f"resolution={resolution} must be positive")
    return FallbackParsing(probs=torch.zeros(1, resolution, resolution, device=device))


@dataclass(frozen=True)
class SegmentConfig:
    """Options of :func:`segment` (defaults: the reference's ``dhr.yaml`` values; bugs fixed).

    Attributes:
        theta_skin: τ of the parser's skin class (``dhr_theta1``).
        theta_inner: τ of the inner-face classes: ears, brows, eyes, nose, mouth, lips (``dhr_theta2``).
        theta_other: τ of every other class (hard-coded 0.6 in the reference), and of every superpixel
            when there is no parser.
        theta: If set, one τ for every class (the paper's single threshold), overriding the three above.
        n_segments: SLIC segments.
        compactness: SLIC compactness.
        sigma: SLIC pre-smoothing.
        slic_bgr: Feed SLIC BGR pixels, reproducing the reference's ``cv2.imread`` bug.
        uint8_truncate: Truncate instead of round when converting the target to uint8 for SLIC. Off in
            :meth:`reference` too: the reference runs SLIC on the image file itself (section 1.3), whose
            bytes rounding recovers exactly; truncating would lower 63 of the 256 levels by one.
        use_superpixels: Apply the superpixel error test m_s (False: m = m_p, or all ones without parser).
        use_parsing: Use the parser (m_p and per-class thresholds) when one is given.
        ood_parsing_threshold: m_p = [P(out-of-domain classes) < this].
        tiny_superpixel: Superpixels lost at a coarse layer: ``upsample`` (default; score them on the
            upsampled layer map so none vanishes), ``in`` / ``out`` (explicitly in / out of domain), or
            ``reference`` (NaN score, hence out of domain, as the reference does silently).
        min_region: Out-of-domain connected regions smaller than this fraction of the image are put
            back in domain (0 = off, the reference).
        occluder: Folder of an occluder network (:class:`dhr.segmentation.occluder.OccluderNet`, native
            format) whose per-superpixel mean probability adds the test m_o; None = off (the reference).
            A relative path in a model's ``model.json`` is resolved against the model folder.
        occluder_threshold: m_o(k) = [mean occluder probability in superpixel k < this].
    """

    theta_skin: float = 0.7
    theta_inner: float = 0.8
    theta_other: float = 0.6
    theta: float | None = None
    n_segments: int = 200
    compactness: float = 30.0
    sigma: float = 1.0
    slic_bgr: bool = False
    uint8_truncate: bool = False
    use_superpixels: bool = True
    use_parsing: bool = True
    ood_parsing_threshold: float = 0.5
    tiny_superpixel: TinyPolicy = "upsample"
    min_region: float = 0.0
    occluder: str | None = None
    occluder_threshold: float = 0.5

    def __post_init__(self) -> None:
        check_choice(self.tiny_superpixel, TINY_POLICIES, "tiny_superpixel")
        if not (0.0 < self.occluder_threshold <= 1.0):
            raise ConfigError(f"occluder_threshold={self.occluder_threshold} must be a probability in (0, 1], e.g. 0.5")
        if self.occluder is not None and not (isinstance(self.occluder, str) and self.occluder.strip()):
            raise ConfigError(f"occluder={self.occluder!r} must be the folder of an occluder network (or None for off)")
        if not (0.0 <= self.min_region < 1.0):
            raise ConfigError(f"min_region={self.min_region} must be a fraction of the image in [0, 1), e.g. 0.02")
        for name in ("theta_skin", "theta_inner", "theta_other", "theta"):
            v = getattr(self, name)
            if v is not None and not (v >= 0 and np.isfinite(v)):
                raise ConfigError(f"{name}={v} must be a finite threshold >= 0")
        if self.n_segments < 1:
            raise ConfigError(f"n_segments={self.n_segments} must be >= 1")
        if not self.compactness > 0:
            raise ConfigError(f"compactness={self.compactness} must be > 0")
        if self.sigma < 0:
            raise ConfigError(f"sigma={self.sigma} must be >= 0")
        if not 0 < self.ood_parsing_threshold <= 1:
            raise ConfigError(f"ood_parsing_threshold={self.ood_parsing_threshold} must be in (0, 1]")

    @classmethod
    def reference(cls, **overrides) -> SegmentConfig:
        """Bit-for-bit reference behaviour: BGR SLIC on the file's exact pixels, NaN for lost superpixels."""
        base = dict(slic_bgr=True, uint8_truncate=False, tiny_superpixel="reference")
        base.update(overrides)
        return cls(**base)


def _dominant_class(probs: torch.Tensor, labels: torch.Tensor, n: int) -> torch.Tensor:
    """Argmax over classes of the probability mass summed inside each superpixel: ``(S,)`` int64."""
    k = probs.shape[0]
    mass = torch.zeros(k, n + 1, dtype=torch.float64, device=probs.device)
    mass.index_add_(1, labels.reshape(-1).to(probs.device), probs.reshape(k, -1).to(torch.float64))
    return mass[:, 1:].argmax(dim=0)


def superpixel_mask(scores: torch.Tensor, vanished: torch.Tensor, labels: torch.Tensor, thresholds: torch.Tensor,
                    *, tiny: TinyPolicy = "upsample") -> torch.Tensor:
    """m_s: superpixel k is in-domain when ``scores[k-1] < thresholds[k-1]``.

    Args:
        scores: ``(S,)`` scores v_k (NaN allowed).
        vanished: ``(S,)`` bool, superpixels lost at a coarse layer.
        labels: ``(R, R)`` labels in ``1..S``.
        thresholds: ``(S,)`` threshold of each superpixel.
        tiny: ``in`` puts vanished superpixels in domain; every other policy leaves them to the test
            (NaN < τ is False: out of domain).

    Returns:
        ``(1, R, R)`` float in {0, 1}.
    """
    inside = scores < thresholds.to(scores)
    if tiny == "in":
        inside = inside | vanished
    lut = torch.cat([torch.zeros(1, dtype=torch.bool, device=inside.device), inside])
    return lut[labels.to(inside.device)].to(torch.float32)[None]


def drop_small_regions(mask: torch.Tensor, min_region: float) -> torch.Tensor:
    """Puts out-of-domain connected regions smaller than ``min_region`` of the image back in domain.

    Args:
        mask: ``(1, H, W)`` in-domain mask in {0, 1}.
        min_region: Smallest out-of-domain region kept, as a fraction of ``H * W``.

    Returns:
        ``(1, H, W)`` float32 mask on ``mask``'s device (4-connected regions).
    """
    from scipy import ndimage

    check_shape(mask, [1, "H", "W"], "mask")
    ood = mask[0].detach().cpu().numpy() < 0.5
    regions, k = ndimage.label(ood)
    if k == 0:
        return mask.to(torch.float32)
    sizes = np.bincount(regions.reshape(-1), minlength=k + 1)
    small = sizes < min_region * ood.size
    small[0] = False
    ood = ood & ~small[regions]
    return torch.from_numpy((~ood).astype(np.float32))[None].to(mask.device)


def occluder_test(prob: torch.Tensor, threshold: float, labels: torch.Tensor | None = None) -> torch.Tensor:
    """m_o from an occluder probability map: in domain where the (superpixel-mean) probability is below ``threshold``.

    Args:
        prob: ``(R, R)`` per-pixel occluder probability.
        threshold: A region is in domain when its mean probability is below this.
        labels: ``(R, R)`` superpixel labels in ``1..S`` (test on each superpixel's mean), or None (per pixel).

    Returns:
        ``(1, R, R)`` float32 mask in {0, 1} (1 = in domain) on ``prob``'s device.
    """
    b = check_shape(prob, ["R", "R"], "prob")
    if labels is None:
        return (prob < threshold).to(torch.float32)[None]
    check_shape(labels, [b["R"], b["R"]], "labels")
    lab = labels.to(device=prob.device, dtype=torch.int64)
    n = int(lab.max())
    sums = torch.zeros(n + 1, dtype=torch.float64, device=prob.device)
    sums.index_add_(0, lab.reshape(-1), prob.reshape(-1).to(torch.float64))
    counts = torch.bincount(lab.reshape(-1), minlength=n + 1).clamp_min(1).to(torch.float64)
    return ((sums / counts) < threshold)[lab].to(torch.float32)[None]


def occluder_mask(target: torch.Tensor, occluder: str, threshold: float, labels: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """m_o of an image: runs the occluder network of folder ``occluder`` and applies :func:`occluder_test`.

    Args:
        target: ``(3, R, R)`` aligned image in [-1, 1].
        occluder: Folder of the occluder network (``SegmentConfig.occluder``).
        threshold: A region is in domain when its mean occluder probability is below this.
        labels: ``(R, R)`` superpixel labels in ``1..S``, or None for a per-pixel test.

    Returns:
        ``(m_o, p)``: ``(1, R, R)`` float32 mask in {0, 1} (1 = in domain) and the ``(R, R)`` probability map,
        both on ``target``'s device.
    """
    from dhr.segmentation.occluder import load_occluder_net, occluder_probability

    p = occluder_probability(load_occluder_net(occluder), target)
    return occluder_test(p, threshold, labels), p


def _check_parsing(parsing: object, size: int) -> torch.Tensor:
    if not isinstance(parsing, ParsingLike):
        raise ConfigError(f"parsing must provide probs, class_names, thresholds() and ood_probability(); "
                          f"got {type(parsing).__name__}")
    probs = parsing_probs(parsing)
    check_shape(probs, ["K", size, size], "parsing.probs")
    return probs


def segment(target: torch.Tensor, coarse_image: torch.Tensor, error_maps: list[torch.Tensor], *,
            parsing: ParsingLike | None = None, config: SegmentConfig | None = None,
            labels: torch.Tensor | None = None) -> DomainMask:
    """Domain-specific segmentation of one aligned image.

    Args:
        target: ``(3, R, R)`` aligned image in [-1, 1] (SLIC runs on it).
        coarse_image: ``(3, R, R)`` coarse inversion G(w) in [-1, 1] (stored in the result).
        error_maps: Per-layer error maps ``(1, h_l, w_l)`` between ``coarse_image`` and ``target``, as
            returned by :func:`dhr.embed.optimize.optimize_latent` or
            :func:`dhr.segmentation.error_map.compute_error_maps`.
        parsing: A :class:`ParsingLike` of the same image, or None (see the module docstring).
        config: Options; defaults to :class:`SegmentConfig`.
        labels: Precomputed ``(R, R)`` superpixel labels (1..S) to use instead of running SLIC.

    Returns:
        A :class:`dhr.types.DomainMask`: ``mask`` m = m_s · m_p · m_o, ``mask_superpixel`` m_s,
        ``mask_parsing`` m_p, the error maps, SLIC labels, parsing probabilities, scores v_k and the
        coarse image. Masks are ``(1, R, R)`` float32 in {0, 1}.

    Raises:
        ShapeError: On inputs of the wrong shape.
        ConfigError: On a malformed parsing object or thresholds.
    """
    config = SegmentConfig() if config is None else config
    b = check_shape(target, [3, "R", "R"], "target")
    size = b["R"]
    check_shape(coarse_image, [3, size, size], "coarse_image")
    maps = tuple(m.detach() for m in error_maps)
    device = target.device
    probs = None
    if parsing is not None and config.use_parsing:
        probs = _check_parsing(parsing, size)
    else:
        parsing = None

    m_p = None
    if parsing is not None:
        ood = parsing.ood_probability()
        check_shape(ood, [size, size], "parsing.ood_probability()")
        m_p = (ood < config.ood_parsing_threshold).to(device=device, dtype=torch.float32)[None]

    m_s = scores = sp_labels = None
    if config.use_superpixels:
        if labels is not None:
            check_shape(labels, [size, size], "labels")
            sp_labels = labels.to(device=device, dtype=torch.int64)
        else:
            sp_labels = slic_labels(target, n_segments=config.n_segments, compactness=config.compactness,
                                    sigma=config.sigma, bgr=config.slic_bgr, truncate=config.uint8_truncate)
        scores, vanished = superpixel_scores(maps, sp_labels, tiny=config.tiny_superpixel)
        scores, vanished = scores.to(device), vanished.to(device)
        n = scores.shape[0]
        if config.theta is not None:
            thr = torch.full((n,), float(config.theta), device=device)
        elif parsing is None:
            thr = torch.full((n,), float(config.theta_other), device=device)
        else:
            per_class = torch.as_tensor(parsing.thresholds(config.theta_skin, config.theta_inner, config.theta_other))
            k = probs.shape[0]
            if per_class.shape != (k,):
                raise ConfigError(f"parsing.thresholds() returned shape {list(per_class.shape)}, expected [{k}] "
                                  f"(one per class of {parsing.class_names})")
            dominant = _dominant_class(probs, sp_labels, n)
            thr = per_class.to(device=device, dtype=torch.float32)[dominant.to(device)]
        m_s = superpixel_mask(scores, vanished, sp_labels, thr, tiny=config.tiny_superpixel)

    m_o = p_occ = None
    if config.occluder is not None:
        m_o, p_occ = occluder_mask(target, config.occluder, config.occluder_threshold, sp_labels)

    mask = torch.ones(1, size, size, device=device)
    if m_s is not None:
        mask = mask * m_s
    if m_p is not None:
        mask = mask * m_p
    if m_o is not None:
        mask = mask * m_o
    if config.min_region > 0:
        mask = drop_small_regions(mask, config.min_region)
    logger.debug("segment: %.1f%% in-domain (%s superpixels)", 100 * float(mask.mean()),
                 "no" if scores is None else scores.shape[0])
    return DomainMask(
        mask=mask,
        mask_superpixel=m_s,
        mask_parsing=m_p,
        error_maps=maps,
        superpixels=sp_labels,
        parsing=None if probs is None else probs.detach(),
        scores=scores,
        coarse=coarse_image.detach(),
        mask_occluder=m_o,
        occluder=p_occ,
    )


# --------------------------------------------------------------------------------------------
# Visualisation

# A perceptually ordered dark-to-bright heat ramp (black, purple, red, orange, yellow, white).
_HEAT = np.array([[0, 0, 0], [60, 15, 110], [180, 30, 80], [240, 110, 20], [250, 220, 60], [255, 255, 255]],
                 dtype=np.float64)


def _heat(v: np.ndarray) -> np.ndarray:
    """Maps ``(H, W)`` values in [0, 1] to ``(H, W, 3)`` uint8 colours of :data:`_HEAT`."""
    pos = np.clip(v, 0, 1) * (len(_HEAT) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(_HEAT) - 2)
    frac = (pos - lo)[..., None]
    return np.round(_HEAT[lo] * (1 - frac) + _HEAT[lo + 1] * frac).astype(np.uint8)


def _palette(k: int) -> np.ndarray:
    """``(K, 3)`` uint8 distinct colours: class 0 black, then golden-ratio hues."""
    import colorsys

    cols = np.zeros((k, 3), dtype=np.float64)
    for i in range(1, k):
        cols[i] = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.75, 0.95)
    return np.round(cols * 255).astype(np.uint8)


def _save(path: Path, pixels: np.ndarray) -> Path:
    from PIL import Image

    from dhr.outputs import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(pixels)).save(tmp)
    return path


def _mask_u8(m: torch.Tensor) -> np.ndarray:
    return (m[0].detach().float().cpu().numpy() > 0.5).astype(np.uint8) * 255


def save_domain_pngs(mask: DomainMask, folder: str | Path, stem: str, *, target: torch.Tensor | None = None
                     ) -> dict[str, Path]:
    """Writes the segmentation's intermediates as PNGs named ``{stem}_{what}.png``.

    Written when available: ``error`` (summed error maps at R, min-max normalised heat map),
    ``superpixels`` (SLIC boundaries in yellow over ``target``, else over the coarse image, enlarged
    to at least 256 px),
    ``parsing`` (argmax class colour map), ``mask_superpixel`` (m_s), ``mask_parsing`` (m_p),
    ``occluder`` (the occluder network's probability, heat map), ``mask_occluder`` (m_o) and ``mask`` (m);
    masks are 0/255 greyscale.

    Args:
        mask: The :class:`DomainMask`.
        folder: Output folder (created).
        stem: File name prefix.
        target: Optional ``(3, R, R)`` image in [-1, 1] to draw the superpixel boundaries over.

    Returns:
        Mapping from name (``error``, ``superpixels``, ...) to the path written.
    """
    from skimage.segmentation import find_boundaries

    from dhr.segmentation.superpixels import to_uint8

    if not isinstance(mask, DomainMask):
        raise ShapeError(f"mask must be a DomainMask, got {type(mask).__name__}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    size = mask.mask.shape[-1]
    out: dict[str, Path] = {}
    if mask.error_maps:
        e = error_image(mask.error_maps, size)[0].cpu().numpy().astype(np.float64)
        span = e.max() - e.min()
        out["error"] = _save(folder / f"{stem}_error.png", _heat((e - e.min()) / span if span > 0 else e * 0))
    if mask.superpixels is not None:
        base = target if target is not None else mask.coarse
        if base is not None:
            check_shape(base, [3, size, size], "target")
            rgb = to_uint8(base)
        else:
            rgb = np.zeros((size, size, 3), np.uint8)
        labels = mask.superpixels.cpu().numpy()
        # Readable at any model size: the face enlarged to >= 256 px, boundaries one pixel wide on top.
        k = max(1, -(-256 // size))
        if k > 1:
            from PIL import Image

            rgb = np.asarray(Image.fromarray(rgb).resize((size * k, size * k), Image.LANCZOS))
            labels = np.repeat(np.repeat(labels, k, axis=0), k, axis=1)
        edges = find_boundaries(labels, mode="inner")
        rgb = rgb.copy()
        rgb[edges] = (255, 230, 0)
        out["superpixels"] = _save(folder / f"{stem}_superpixels.png", rgb)
    if mask.parsing is not None:
        probs = mask.parsing.detach().cpu()
        out["parsing"] = _save(folder / f"{stem}_parsing.png", _palette(probs.shape[0])[probs.argmax(0).numpy()])
    if mask.mask_superpixel is not None:
        out["mask_superpixel"] = _save(folder / f"{stem}_mask_superpixel.png", _mask_u8(mask.mask_superpixel))
    if mask.occluder is not None:
        out["occluder"] = _save(folder / f"{stem}_occluder.png", _heat(mask.occluder.detach().float().cpu().numpy()))
    if mask.mask_occluder is not None:
        out["mask_occluder"] = _save(folder / f"{stem}_mask_occluder.png", _mask_u8(mask.mask_occluder))
    if mask.mask_parsing is not None:
        out["mask_parsing"] = _save(folder / f"{stem}_mask_parsing.png", _mask_u8(mask.mask_parsing))
    out["mask"] = _save(folder / f"{stem}_mask.png", _mask_u8(mask.mask))
    return out
