"""Quantisation: the storage formats of a weight delta and a feature, and results as a bundle stores them.

Delta storage formats (:data:`~dhr.types.DELTA_FORMATS`):

- ``fp32``: exact.
- ``fp16``: half precision (default; half the size of an fp32 delta).
- ``int8``: per-output-channel (dim 0) absmax scale, values in [-127, 127].
- ``int4``: per-output-channel absmax scale, values in [-7, 7], two values packed per byte.

Tensors with fewer than :data:`SMALL_TENSOR` elements (biases, noise strengths, small affines)
are kept in fp32 by the integer formats. Quantisation is idempotent on its own output.

The refinement returns its tensors exactly and records the formats they are to be stored in
(:class:`~dhr.types.RenderSpec`); :func:`as_stored` applies them and re-renders the image from
the stored values, so that ``render(G, load_bundle(save_bundle(as_stored(G, [inv])[0])))``
equals the stored result's ``image``. :func:`dhr.invert` (and so :class:`dhr.Pipeline`) returns
stored results.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch

from dhr.checks import check_choice
from dhr.refinement.render import render_many
from dhr.types import DELTA_FORMATS, Inversion

__all__ = ["SMALL_TENSOR", "encode_tensor", "decode_tensor", "roundtrip_tensor", "as_stored",
           "target_to_uint8", "target_from_uint8"]

SMALL_TENSOR = 1024
_QMAX = {"int8": 127, "int4": 7}


def _effective_format(t: torch.Tensor, fmt: str) -> str:
    if fmt in _QMAX and (t.ndim < 1 or t.numel() < SMALL_TENSOR):
        return "fp32"
    return fmt


def encode_tensor(t: torch.Tensor, fmt: str) -> tuple[dict[str, torch.Tensor], str]:
    """Encodes a float tensor for storage.

    Args:
        t: Any float tensor.
        fmt: One of :data:`DELTA_FORMATS`.

    Returns:
        ``(parts, effective_format)``: parts by suffix (``""`` for a plain tensor, ``"q"`` and
        ``"scale"`` for integer formats) as contiguous CPU tensors, and the format actually used
        (small tensors fall back to ``fp32`` under integer formats).
    """
    check_choice(fmt, DELTA_FORMATS, "format")
    fmt = _effective_format(t, fmt)
    t = t.detach().to("cpu", torch.float32)
    if fmt == "fp32":
        return {"": t.contiguous()}, fmt
    if fmt == "fp16":
        return {"": t.to(torch.float16).contiguous()}, fmt
    qmax = _QMAX[fmt]
    rows = t.reshape(t.shape[0], -1)
    scale = rows.abs().amax(dim=1) / qmax  # (rows,)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(rows / safe[:, None]).clamp_(-qmax, qmax).to(torch.int8)
    if fmt == "int8":
        return {"q": q.reshape(-1).contiguous(), "scale": scale.contiguous()}, fmt
    u = (q.reshape(-1).to(torch.int16) + 8).to(torch.uint8)  # [1, 15]
    if u.numel() % 2:
        u = torch.cat([u, u.new_full((1,), 8)])
    packed = (u[0::2] | (u[1::2] << 4)).contiguous()
    return {"q": packed, "scale": scale.contiguous()}, fmt


def decode_tensor(parts: dict[str, torch.Tensor], fmt: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`encode_tensor`; returns fp32 of ``shape``."""
    check_choice(fmt, DELTA_FORMATS, "format")
    shape = tuple(int(s) for s in shape)
    if fmt in ("fp32", "fp16"):
        return parts[""].to(torch.float32).reshape(shape)
    n = math.prod(shape)
    q = parts["q"]
    if fmt == "int4":
        low = (q & 0x0F).to(torch.int16)
        high = (q >> 4).to(torch.int16)
        q = torch.stack([low, high], dim=1).reshape(-1)[:n] - 8
    scale = parts["scale"].to(torch.float32)
    return (q.to(torch.float32).reshape(shape[0], -1) * scale[:, None]).reshape(shape)


def roundtrip_tensor(t: torch.Tensor, fmt: str) -> torch.Tensor:
    """``decode(encode(t))`` on ``t``'s device and dtype: the value a bundle gives back."""
    parts, eff = encode_tensor(t, fmt)
    return decode_tensor(parts, eff, tuple(t.shape)).to(device=t.device, dtype=t.dtype)


def as_stored(G: torch.nn.Module, inversions: Sequence[Inversion]) -> list[Inversion]:
    """The inversions as a bundle stores them: tensors round-tripped through their render spec's
    storage formats, images re-rendered from the stored values.

    A delta tensor that stores as all zeros is dropped (it changes nothing). The images of the
    whole sequence are rendered in one batched call (as the refinement renders its batch); when
    no stored value differs from the given one, the inversions are returned unchanged.

    Args:
        G: The generator the inversions were made with.
        inversions: Results of one refinement call (any methods).

    Returns:
        One stored :class:`Inversion` per input, in order.
    """
    out, changed = [], False
    for inv in inversions:
        spec = inv.render_spec
        delta = {}
        for name, d in inv.weight_delta.items():
            q = roundtrip_tensor(d, spec.delta_format)
            changed = changed or not torch.equal(q, d)
            if bool((q != 0).any()):
                delta[name] = q
        feature = None if inv.feature is None else roundtrip_tensor(inv.feature, spec.feature_format)
        changed = changed or len(delta) != len(inv.weight_delta) or \
            (feature is not None and not torch.equal(feature, inv.feature))
        out.append(dataclasses.replace(inv, weight_delta=delta, feature=feature))
    if not changed:
        return list(inversions)
    images = render_many(G, out)
    return [dataclasses.replace(inv, image=images[i]) for i, inv in enumerate(out)]


def target_to_uint8(target: torch.Tensor) -> torch.Tensor:
    """``(3, R, R)`` float in [-1, 1] -> uint8 CPU tensor (the bundle's target storage)."""
    return ((target.detach().to("cpu", torch.float32).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).contiguous()


def target_from_uint8(t: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`target_to_uint8`: float32 in [-1, 1] (exact for 8-bit crops)."""
    return t.to(torch.float32) / 127.5 - 1.0
