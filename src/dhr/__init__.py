"""dhr: Domain-Specific Hybrid Refinement for StyleGAN2 inversion and editing of real photos.

Public API (imported lazily, so ``import dhr`` is instant)::

    import dhr
    pipe = dhr.Pipeline.from_pretrained("faces-64")        # the bundled model
    inv = pipe.invert("photo.jpg")[0]
    edited = pipe.edit(inv, age=2)
    model = dhr.load("faces-64")                           # the networks alone
    results = dhr.invert(model.generator, images, config=dhr.InvertConfig(), perceptual=model.perceptual)
"""

from __future__ import annotations

import importlib
from typing import Any

from dhr.threads import apply_wait_policy as _apply_wait_policy

__version__ = "0.1.0"

# OpenMP reads OMP_WAIT_POLICY once, when torch loads it: set a passive policy now, before any dhr module
# imports torch, unless the user chose one (see dhr.threads).
_apply_wait_policy()

_LAZY = {
    "Pipeline": ("dhr.pipeline", "Pipeline"),
    "load": ("dhr.models.zoo", "load_model"),
    "available_models": ("dhr.models.zoo", "available_models"),
    "invert": ("dhr.engine", "invert"),
    "render": ("dhr.engine", "render"),
    "InvertConfig": ("dhr.config", "InvertConfig"),
    "Generator": ("dhr.models.stylegan2", "Generator"),
    "GeneratorConfig": ("dhr.models.stylegan2", "GeneratorConfig"),
    "LPIPS": ("dhr.metrics.lpips", "LPIPS"),
    "DHRError": ("dhr.errors", "DHRError"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dhr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
