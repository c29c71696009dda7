"""Editing metrics: how much an edit changes the attribute, the identity, and what it should keep.

The paper has no quantitative editing metric (only a user study); these are the project's:

- :func:`attribute_change`: change of a classifier score per unit edit strength,
  ``(score(edited) - score(before)) / strength``; e.g. years of age per unit of the ``age``
  direction. A good inversion keeps the generator's editability, so larger is better (in the
  direction's sign).
- :func:`identity_similarity`: similarity of an identity model's embeddings of two images
  (before/after the edit); higher = the person is kept.
- :func:`region_preservation`: MSE and LPIPS between two images inside a region, e.g. the
  out-of-domain mask between the inversion and its edit (DHR should keep a hand or a microphone
  unchanged), or the occluder between the occluded input and the edit; lower = better kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from dhr.errors import ConfigError, ShapeError
from dhr.metrics.image import as_batch, masked_lpips, mse

__all__ = ["attribute_change", "classifier_scores", "identity_similarity", "region_preservation"]


def classifier_scores(classifier: torch.nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Attribute scores ``{name: (B,)}`` of images in [-1, 1].

    Uses ``classifier.scores(x)`` when present (``AttributeClassifier``: ``age`` in years,
    ``gender`` = P(female)), else the module's output, which must be a dict of ``(B,)`` tensors.
    """
    x = as_batch(images, "images")
    with torch.no_grad():
        fn = getattr(classifier, "scores", None)
        out = fn(x) if callable(fn) else classifier(x)
    if not isinstance(out, dict):
        raise ConfigError(f"classifier must return a dict of attribute scores, got {type(out).__name__}")
    return {k: v.detach().reshape(-1) for k, v in out.items() if isinstance(v, torch.Tensor) and v.numel() == x.shape[0]}


def attribute_change(classifier: torch.nn.Module, before: torch.Tensor, after: torch.Tensor, strength: float,
                     attribute: str) -> torch.Tensor:
    """Change of one attribute score per unit edit strength.

    Args:
        classifier: See :func:`classifier_scores`.
        before: ``(B, 3, H, W)`` unedited images (the inversions) in [-1, 1].
        after: ``(B, 3, H, W)`` edited images.
        strength: The edit strength used (non-zero).
        attribute: Score name, e.g. ``age`` or ``gender``.

    Returns:
        ``(B,)`` ``(score(after) - score(before)) / strength``.

    Raises:
        ConfigError: Zero strength or an attribute the classifier does not score.
    """
    if not math.isfinite(strength) or strength == 0:
        raise ConfigError(f"strength must be a finite non-zero number, got {strength}")
    a, b = as_batch(before, "before"), as_batch(after, "after")
    if a.shape != b.shape:
        raise ShapeError(f"before and after must have the same shape, got {list(a.shape)} and {list(b.shape)}")
    s0, s1 = classifier_scores(classifier, a), classifier_scores(classifier, b)
    if attribute not in s0:
        raise ConfigError(f"the classifier does not score {attribute!r}; it scores {sorted(s0)}")
    return (s1[attribute] - s0[attribute]) / float(strength)


def identity_similarity(identity: object, a: torch.Tensor | Sequence[torch.Tensor],
                        b: torch.Tensor | Sequence[torch.Tensor]) -> list[float]:
    """Identity similarity of image pairs ``(a[i], b[i])``.

    Args:
        identity: An :class:`dhr.faces.identity.IdentityModel` (``embed`` + ``similarity``), e.g.
            ``DlibIdentity()`` (``1 - distance``; same person above 0.4).
        a: ``(B, 3, H, W)`` images in [-1, 1] (or a list of ``(3, H, W)``).
        b: Same.

    Returns:
        B similarities (higher = more alike).
    """
    xa = [as_batch(t, "a")[0] for t in (a if not isinstance(a, torch.Tensor) or a.ndim == 4 else [a])]
    xb = [as_batch(t, "b")[0] for t in (b if not isinstance(b, torch.Tensor) or b.ndim == 4 else [b])]
    if len(xa) != len(xb):
        raise ShapeError(f"a and b must hold the same number of images, got {len(xa)} and {len(xb)}")
    return [float(identity.similarity(identity.embed(p), identity.embed(q))) for p, q in zip(xa, xb)]


def region_preservation(perceptual: torch.nn.Module | None, reference: torch.Tensor, edited: torch.Tensor,
                        mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """How unchanged ``edited`` stays w.r.t. ``reference`` inside ``mask``.

    Args:
        perceptual: LPIPS-like metric (see :func:`dhr.metrics.image.masked_lpips`) or None (no LPIPS).
        reference: ``(B, 3, H, W)`` e.g. the inversion (or the occluded input) in [-1, 1].
        edited: ``(B, 3, H, W)`` the edited image.
        mask: ``(B, 1, H, W)`` region, e.g. the out-of-domain mask ``1 - m`` or the occluder.

    Returns:
        ``{"mse": (B,), "lpips": (B,)}`` (lpips only with a metric); NaN for an empty mask.
    """
    out = {"mse": mse(edited, reference, mask=mask)}
    if perceptual is not None:
        out["lpips"] = masked_lpips(perceptual, edited, reference, mask=mask)
    return out
