"""Result bundles: one inversion saved as ``<stem>.safetensors`` + ``<stem>.json``, and read back.

- :mod:`dhr.bundle.codec`: quantisation (the storage formats of a weight delta and a feature) and
  :func:`as_stored`, a result as a bundle stores it (tensors round-tripped, image re-rendered).
- :mod:`dhr.bundle.store`: the file format (tensors, JSON sidecar with the render spec and
  provenance: hashes, versions, timings, checks) for any :class:`~dhr.types.Inversion`.
- :mod:`dhr.bundle.photo`: what a pipeline result adds (the alignment record and the source
  photo) and its re-hydration into a :class:`~dhr.results.PhotoInversion`.
"""

from __future__ import annotations

from dhr.bundle.codec import (
    SMALL_TENSOR,
    as_stored,
    decode_tensor,
    encode_tensor,
    roundtrip_tensor,
    target_from_uint8,
    target_to_uint8,
)
from dhr.bundle.photo import alignment_record, load_photo_bundle
from dhr.bundle.store import (
    MAX_BUNDLE_BYTES,
    MAX_SIDECAR_BYTES,
    bundle_paths,
    load_bundle,
    model_sha256,  # deprecated alias of state_dict_sha256, not in __all__
    save_bundle,
    state_dict_sha256,
    tensor_sha256,
    validate_bundle,
)
from dhr.types import DELTA_FORMATS, FEATURE_FORMATS, DeltaFormat, FeatureFormat

__all__ = [
    "DELTA_FORMATS",
    "FEATURE_FORMATS",
    "MAX_BUNDLE_BYTES",
    "MAX_SIDECAR_BYTES",
    "SMALL_TENSOR",
    "DeltaFormat",
    "FeatureFormat",
    "alignment_record",
    "as_stored",
    "bundle_paths",
    "decode_tensor",
    "encode_tensor",
    "load_bundle",
    "load_photo_bundle",
    "roundtrip_tensor",
    "save_bundle",
    "state_dict_sha256",
    "target_from_uint8",
    "target_to_uint8",
    "tensor_sha256",
    "validate_bundle",
]
