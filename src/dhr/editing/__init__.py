"""Latent editing: typed directions, their file formats, discovery (SeFa, GANSpace, InterFaceGAN),
edit application on W+ codes, and media outputs. See ``docs/editing.md``.
"""

from __future__ import annotations

from dhr.editing.directions import Direction, GanSpaceParams, apply_edits, parse_edit_spec, sweep_codes, validate_edits
from dhr.editing.ganspace import fit_ganspace, ganspace_directions, pca
from dhr.editing.interfacegan import fit_boundary
from dhr.editing.media import contact_sheet, save_gif, save_mp4, save_png, sweep_grid
from dhr.editing.registry import DirectionSet, GanSpacePCA, load_direction, load_ganspace_pca
from dhr.editing.sefa import SeFaResult, sefa, sefa_directions, style_layers

__all__ = [
    "Direction",
    "DirectionSet",
    "GanSpaceParams",
    "GanSpacePCA",
    "SeFaResult",
    "apply_edits",
    "contact_sheet",
    "fit_boundary",
    "fit_ganspace",
    "ganspace_directions",
    "load_direction",
    "load_ganspace_pca",
    "parse_edit_spec",
    "pca",
    "save_gif",
    "save_mp4",
    "save_png",
    "sefa",
    "sefa_directions",
    "style_layers",
    "sweep_codes",
    "sweep_grid",
    "validate_edits",
]
