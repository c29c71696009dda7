"""dhr: Domain-Specific Hybrid Refinement for StyleGAN2 inversion and editing of real photos."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
