"""Domain-specific segmentation: which pixels the generator can reach (in-domain) and which it cannot.

- :mod:`dhr.segmentation.superpixels`: SLIC labels of the aligned image.
- :mod:`dhr.segmentation.error_map`: per-layer error maps and per-superpixel scores v_k.
- :mod:`dhr.segmentation.domain`: thresholds, parsing and the final :class:`dhr.types.DomainMask`.
"""

from __future__ import annotations

from dhr.segmentation.domain import (
    FallbackParsing,
    ParsingLike,
    SegmentConfig,
    reference_parsing_fallback,
    save_domain_pngs,
    segment,
)
from dhr.segmentation.error_map import compute_error_maps, superpixel_scores
from dhr.segmentation.superpixels import slic_labels

__all__ = [
    "FallbackParsing",
    "ParsingLike",
    "SegmentConfig",
    "compute_error_maps",
    "reference_parsing_fallback",
    "save_domain_pngs",
    "segment",
    "slic_labels",
    "superpixel_scores",
]
