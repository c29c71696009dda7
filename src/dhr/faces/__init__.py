"""Faces: detection, alignment, paste-back, parsing and identity.

Photo in, photo out::

    photo = load_image("portrait.jpg")                        # dhr.io
    aligned = align_photo(photo, template=AlignTemplate.ffhq(1024))
    ...                                                       # invert / edit aligned.to_tensor()
    result = paste_back(photo, aligned, edited_crop)          # full-size image + blend mask

dlib is imported only when a detector, shape predictor or descriptor is first used.
"""

from __future__ import annotations

from dhr.faces.align import (
    AlignedFace,
    AlignTemplate,
    align_face,
    align_landmarks,
    align_photo,
    align_whole_image,
    template_from_images,
)
from dhr.faces.detect import MIN_FACE_SIZE, DetectedFace, Detection, SkippedFace, detect_face, detect_faces, find_faces
from dhr.faces.identity import DlibIdentity, IdentityModel, IRSEIdentity
from dhr.faces.parsing import (
    BiSeNetParser,
    FaceParser,
    FaRLParser,
    LabelSet,
    LandmarkParser,
    ParsingResult,
)
from dhr.faces.paste import PasteResult, paste_back, seam_score

__all__ = [
    "MIN_FACE_SIZE",
    "AlignTemplate",
    "AlignedFace",
    "BiSeNetParser",
    "DetectedFace",
    "Detection",
    "DlibIdentity",
    "FaRLParser",
    "FaceParser",
    "IRSEIdentity",
    "IdentityModel",
    "LabelSet",
    "LandmarkParser",
    "ParsingResult",
    "PasteResult",
    "SkippedFace",
    "align_face",
    "align_landmarks",
    "align_photo",
    "align_whole_image",
    "detect_face",
    "detect_faces",
    "find_faces",
    "paste_back",
    "seam_score",
    "template_from_images",
]
