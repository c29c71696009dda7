"""Key mapping from foreign StyleGAN2 layouts to the native :class:`~dhr.models.stylegan2.Generator`.

Only tensor dictionaries are handled here (pure functions); reading files safely lives in
:mod:`dhr.models.checkpoint`.
"""

from __future__ import annotations

import math
import re

import torch

from dhr.errors import CheckpointError
from dhr.models.stylegan2 import GeneratorConfig

__all__ = ["rosinality_to_native", "infer_channel_schedule"]


def infer_channel_schedule(channels: dict[int, int], source: str = "checkpoint") -> dict[str, int]:
    """Finds ``channel_base / channel_max / channel_multiplier`` reproducing per-resolution widths."""
    top = max(channels)
    product = channels[top] * top
    channel_max = max(channels.values())
    if product % 16384 == 0:
        base, mult = 16384, product // 16384
    else:
        base, mult = product, 1
    cfg = {"channel_base": base, "channel_max": channel_max, "channel_multiplier": mult}
    for res, ch in channels.items():
        want = max(1, min(channel_max, base * mult // res))
        if want != ch:
            raise CheckpointError(
                f"{source}: channel widths {dict(sorted(channels.items()))} do not follow the StyleGAN2 schedule "
                f"min(channel_max, channel_base * multiplier / resolution); this architecture is not supported"
            )
    return cfg


def rosinality_to_native(
    state: dict[str, torch.Tensor], latent_avg: torch.Tensor | None = None, *, source: str = "checkpoint"
) -> tuple[GeneratorConfig, dict[str, torch.Tensor]]:
    """Converts a rosinality ``g_ema`` state dict (no prefix) to a native config and state dict.

    The architecture (resolution, style width, mapping depth, channels) is inferred from the tensors.

    Args:
        state: rosinality ``Generator.state_dict()``.
        latent_avg: Optional ``(D,)`` mean latent stored as ``w_avg``.
        source: Name used in error messages (usually the file path).

    Raises:
        CheckpointError: If keys are missing or shapes do not form a StyleGAN2 generator.
    """
    try:
        n_rgbs = len({int(m.group(1)) for k in state if (m := re.match(r"to_rgbs\.(\d+)\.", k))})
        n_mapping = len({int(m.group(1)) for k in state if (m := re.match(r"style\.(\d+)\.weight$", k))})
        if n_mapping == 0 or "input.input" not in state or "conv1.conv.weight" not in state:
            raise KeyError("style.N.weight / input.input / conv1.conv.weight")
        style_dim = state["style.1.weight"].shape[1]
        resolution = 2 ** (n_rgbs + 2)
        resolutions = [2**i for i in range(2, n_rgbs + 3)]
        channels = {4: state["input.input"].shape[1]}
        for k, res in enumerate(resolutions[1:]):
            channels[res] = state[f"convs.{2 * k}.conv.weight"].shape[1]
        sched = infer_channel_schedule(channels, source)
        config = GeneratorConfig(resolution=resolution, style_dim=style_dim, n_mapping=n_mapping, **sched)
    except KeyError as e:
        raise CheckpointError(f"{source}: not a rosinality StyleGAN2 generator state dict (missing {e})") from None

    out: dict[str, torch.Tensor] = {}

    def put(dst: str, src: str, fn=lambda t: t) -> None:
        if src not in state:
            raise CheckpointError(f"{source}: missing key '{src}' (expected for a {resolution}px generator)")
        out[dst] = fn(state[src]).float()

    for i in range(n_mapping):
        put(f"mapping.layers.{i}.weight", f"style.{i + 1}.weight")
        put(f"mapping.layers.{i}.bias", f"style.{i + 1}.bias")

    def styled(dst: str, src: str) -> None:
        put(f"{dst}.conv.weight", f"{src}.conv.weight", lambda t: t.squeeze(0))
        put(f"{dst}.conv.affine.weight", f"{src}.conv.modulation.weight")
        put(f"{dst}.conv.affine.bias", f"{src}.conv.modulation.bias")
        put(f"{dst}.noise_strength", f"{src}.noise.weight", lambda t: t.reshape([]))
        put(f"{dst}.bias", f"{src}.activate.bias")

    def torgb(dst: str, src: str) -> None:
        put(f"{dst}.conv.weight", f"{src}.conv.weight", lambda t: t.squeeze(0))
        put(f"{dst}.conv.affine.weight", f"{src}.conv.modulation.weight")
        put(f"{dst}.conv.affine.bias", f"{src}.conv.modulation.bias")
        put(f"{dst}.bias", f"{src}.bias", lambda t: t.reshape(3))

    put("synthesis.b4.const", "input.input")
    styled("synthesis.b4.conv1", "conv1")
    torgb("synthesis.b4.torgb", "to_rgb1")
    put("synthesis.b4.conv1.noise_const", "noises.noise_0")
    for k, res in enumerate(resolutions[1:]):
        styled(f"synthesis.b{res}.conv0", f"convs.{2 * k}")
        styled(f"synthesis.b{res}.conv1", f"convs.{2 * k + 1}")
        torgb(f"synthesis.b{res}.torgb", f"to_rgbs.{k}")
        put(f"synthesis.b{res}.conv0.noise_const", f"noises.noise_{2 * k + 1}")
        put(f"synthesis.b{res}.conv1.noise_const", f"noises.noise_{2 * k + 2}")
    w_avg = latent_avg if latent_avg is not None else torch.zeros(style_dim)
    w_avg = w_avg.reshape(-1, style_dim)[0] if w_avg.numel() != style_dim else w_avg.reshape(style_dim)
    out["w_avg"] = w_avg.float()
    assert math.log2(resolution) == len(resolutions) + 1
    return config, out
