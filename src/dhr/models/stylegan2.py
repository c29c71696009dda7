"""StyleGAN2 generator in pure PyTorch (the discriminator is in :mod:`dhr.models.discriminator`).

The generator is split into a mapping network (z -> w) and a synthesis network (w+ -> image).
Layers are named by resolution: ``synthesis.b64.conv0`` is the upsampling conv of the 64x64
block, ``conv1`` its second conv, ``torgb`` its RGB output. The synthesis can stop after any
block (:meth:`SynthesisNetwork.run_until`) and resume from there (:meth:`SynthesisNetwork.run_from`);
the composition is the plain forward, bit for bit. The generator knows nothing about inversion:
per-image weights go through :func:`torch.func.functional_call`. The discriminator (training
only) is in :mod:`dhr.models.discriminator`, re-exported here.

W index per layer (identical to the rosinality layout, ``num_ws = 2 * log2(resolution) - 2``):
``b4.conv1`` w0, ``b4.torgb`` w1; for the block of level k >= 1 (resolution 4 * 2**k):
``conv0`` w(2k-1), ``conv1`` w(2k), ``torgb`` w(2k+1).

Notation (paper -> code): θ = ``synthesis`` parameters; f = ``SynthesisState.features``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from dhr.checks import check_choice, check_shape
from dhr.errors import ConfigError, ShapeError
from dhr.models.discriminator import Discriminator, DiscriminatorConfig
from dhr.models.ops import bias_leaky_relu, make_kernel, upfirdn2d

__all__ = [
    "GeneratorConfig",
    "DiscriminatorConfig",
    "SynthesisState",
    "MappingNetwork",
    "SynthesisNetwork",
    "Generator",
    "Discriminator",
    "NoiseMode",
]

NoiseMode = Literal["const", "random", "none"]
_NOISE_MODES = ("const", "random", "none")


def _is_pow2(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture of a :class:`Generator` (the constructor arguments, stored in ``config.json``).

    Attributes:
        resolution: Output size, a power of two in [8, 1024].
        style_dim: Width of z and w.
        n_mapping: Number of fully connected layers of the mapping network.
        channel_base: Channels at resolution r are ``min(channel_max, channel_base * channel_multiplier // r)``.
        channel_max: Upper bound on channels.
        channel_multiplier: Rosinality's multiplier (2 for config-f).
        lr_mapping: Learning-rate multiplier of the mapping layers.
        blur_kernel: FIR taps for up/downsampling.
    """

    resolution: int = 1024
    style_dim: int = 512
    n_mapping: int = 8
    channel_base: int = 16384
    channel_max: int = 512
    channel_multiplier: int = 2
    lr_mapping: float = 0.01
    blur_kernel: tuple[int, ...] = (1, 3, 3, 1)

    def __post_init__(self) -> None:
        if not (_is_pow2(self.resolution) and 8 <= self.resolution <= 1024):
            raise ConfigError(f"resolution={self.resolution} must be a power of two between 8 and 1024")
        if self.style_dim < 1 or self.n_mapping < 1:
            raise ConfigError(f"style_dim={self.style_dim} and n_mapping={self.n_mapping} must be >= 1")
        if self.channel_base < 1 or self.channel_max < 1 or self.channel_multiplier < 1:
            raise ConfigError("channel_base, channel_max and channel_multiplier must be >= 1")
        object.__setattr__(self, "blur_kernel", tuple(int(t) for t in self.blur_kernel))

    @property
    def log2_resolution(self) -> int:
        return int(math.log2(self.resolution))

    @property
    def num_ws(self) -> int:
        """Number of per-layer styles in W+ (``n_latent`` / ``n_styles`` elsewhere)."""
        return 2 * self.log2_resolution - 2

    @property
    def resolutions(self) -> list[int]:
        """Block resolutions ``[4, 8, ..., resolution]``."""
        return [2**i for i in range(2, self.log2_resolution + 1)]

    def channels(self, resolution: int) -> int:
        """Feature channels of the block at ``resolution``."""
        return max(1, min(self.channel_max, self.channel_base * self.channel_multiplier // resolution))

    @property
    def synthesis_macs(self) -> int:
        """Multiply-adds of the convolutions of one synthesis forward for one image (the blur filters,
        modulation and the mapping network, all small, are left out). A 64 px ``faces-64`` generator:
        ~0.18 G; config-f at 1024: ~75 G. Used to size CPU threading (:func:`dhr.threads.fit_threads_to_model`)."""
        total, prev = 0, 0
        for res in self.resolutions:
            ch = self.channels(res)
            if prev:  # conv0: 3x3 transposed, stride 2, from the previous block's resolution
                total += prev * ch * 9 * (res // 2) ** 2
            total += ch * ch * 9 * res * res + 3 * ch * res * res  # conv1 and toRGB
            prev = ch
        return total

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["blur_kernel"] = list(self.blur_kernel)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> GeneratorConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown generator config keys {sorted(unknown)}; known: {sorted(names)}")
        return cls(**d)


@dataclass(frozen=True)
class SynthesisState:
    """The running state of the synthesis after a block: what ``run_from`` resumes from.

    Attributes:
        features: ``(B, C, r, r)`` output of the block's last conv (after noise, bias, activation).
            In the paper this is f at resolution r.
        rgb: ``(B, 3, r, r)`` RGB skip accumulated up to and including this block's ``torgb``.
        resolution: r.
    """

    features: torch.Tensor
    rgb: torch.Tensor
    resolution: int


# --------------------------------------------------------------------------------------------
# Layers


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: ``y = x @ (W * gain).T + b * lr_mul``."""

    def __init__(self, in_features: int, out_features: int, *, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activate: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.gain = lr_mul / math.sqrt(in_features)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.gain
        if self.activate:
            return bias_leaky_relu(F.linear(x, w), self.bias * self.lr_mul)
        return F.linear(x, w, self.bias * self.lr_mul)


class ModulatedConv(nn.Module):
    """Modulated (and optionally demodulated) convolution, optionally upsampling by 2.

    Computed as modulate-activations -> shared conv -> demodulate, which equals the per-sample
    weight formulation and batches as one convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int, *,
                 demodulate: bool = True, up: bool = False, blur_kernel: Sequence[int] = (1, 3, 3, 1)) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.demodulate, self.up = demodulate, up
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.affine = EqualLinear(style_dim, in_channels, bias_init=1.0)
        self.gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        if up:
            p = (len(blur_kernel) - 2) - (kernel_size - 1)
            self.blur_pad = ((p + 1) // 2 + 1, p // 2 + 1)
            self.register_buffer("blur", make_kernel(blur_kernel) * 4, persistent=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)  # (B, Cin)
        weight = self.weight * self.gain
        x = x * styles[:, :, None, None].to(x.dtype)
        if self.up:
            x = F.conv_transpose2d(x, weight.transpose(0, 1).to(x.dtype), stride=2)
            x = upfirdn2d(x, self.blur, pad=self.blur_pad)
        else:
            x = F.conv2d(x, weight.to(x.dtype), padding=self.kernel_size // 2)
        if self.demodulate:
            w2 = weight.float().square().sum(dim=[2, 3])  # (Cout, Cin)
            dcoefs = torch.rsqrt(styles.float().square() @ w2.t() + 1e-8)  # (B, Cout)
            x = x * dcoefs[:, :, None, None].to(x.dtype)
        return x


class StyledConv(nn.Module):
    """Modulated conv + per-pixel noise + bias + leaky ReLU. Holds its fixed noise buffer."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, resolution: int, *, up: bool = False,
                 blur_kernel: Sequence[int] = (1, 3, 3, 1)) -> None:
        super().__init__()
        self.conv = ModulatedConv(in_channels, out_channels, 3, style_dim, up=up, blur_kernel=blur_kernel)
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.resolution = resolution
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))

    def forward(self, x: torch.Tensor, w: torch.Tensor, *, noise_mode: NoiseMode = "const",
                noise: torch.Tensor | None = None) -> torch.Tensor:
        x = self.conv(x, w)
        if noise is None:
            if noise_mode == "const":
                noise = self.noise_const
            elif noise_mode == "random":
                noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        if noise is not None:
            x = x + self.noise_strength.to(x.dtype) * noise.to(x.dtype)
        return bias_leaky_relu(x, self.bias)


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB (no demodulation) + bias; adds the upsampled skip."""

    def __init__(self, in_channels: int, style_dim: int, *, blur_kernel: Sequence[int] = (1, 3, 3, 1)) -> None:
        super().__init__()
        self.conv = ModulatedConv(in_channels, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(3))
        self.register_buffer("up_kernel", make_kernel(blur_kernel) * 4, persistent=False)
        p = len(blur_kernel) - 2
        self.up_pad = ((p + 1) // 2 + 1, p // 2)

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        out = self.conv(x, w) + self.bias.to(x.dtype)[None, :, None, None]
        if skip is not None:
            out = out + upfirdn2d(skip, self.up_kernel, up=2, pad=self.up_pad)
        return out


class SynthesisBlock(nn.Module):
    """One resolution level: ``conv0`` (upsampling; absent at 4x4), ``conv1``, ``torgb``."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, resolution: int,
                 blur_kernel: Sequence[int]) -> None:
        super().__init__()
        self.resolution = resolution
        if resolution == 4:
            self.const = nn.Parameter(torch.randn(1, out_channels, 4, 4))
            self.conv0 = None
        else:
            self.conv0 = StyledConv(in_channels, out_channels, style_dim, resolution, up=True, blur_kernel=blur_kernel)
        self.conv1 = StyledConv(out_channels, out_channels, style_dim, resolution, blur_kernel=blur_kernel)
        self.torgb = ToRGB(out_channels, style_dim, blur_kernel=blur_kernel)

    @property
    def num_ws(self) -> int:
        return 2 if self.conv0 is None else 3

    def forward(self, x: torch.Tensor | None, rgb: torch.Tensor | None, ws: torch.Tensor, *,
                noise_mode: NoiseMode = "const", noise: Sequence[torch.Tensor | None] = (None, None)
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Runs the block. ``ws`` is ``(B, num_ws, D)`` holding this block's styles in layer order."""
        if self.conv0 is None:
            x = self.const.expand(ws.shape[0], -1, -1, -1).to(ws.dtype)
            x = self.conv1(x, ws[:, 0], noise_mode=noise_mode, noise=noise[1])
            rgb = self.torgb(x, ws[:, 1], rgb)
        else:
            x = self.conv0(x, ws[:, 0], noise_mode=noise_mode, noise=noise[0])
            x = self.conv1(x, ws[:, 1], noise_mode=noise_mode, noise=noise[1])
            rgb = self.torgb(x, ws[:, 2], rgb)
        return x, rgb


# --------------------------------------------------------------------------------------------
# Networks


class MappingNetwork(nn.Module):
    """z -> w: pixel norm then ``n_mapping`` equalised linear layers with leaky ReLU."""

    def __init__(self, style_dim: int, n_mapping: int, lr_mul: float = 0.01) -> None:
        super().__init__()
        self.style_dim = style_dim
        self.layers = nn.ModuleList(
            EqualLinear(style_dim, style_dim, lr_mul=lr_mul, activate=True) for _ in range(n_mapping)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Maps ``z (B, D)`` to ``w (B, D)``."""
        check_shape(z, ["B", self.style_dim], "z")
        x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        for layer in self.layers:
            x = layer(x)
        return x


class SynthesisNetwork(nn.Module):
    """w+ -> image. Blocks are attributes ``b4, b8, ..., b{resolution}``."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        self.resolutions = config.resolutions
        self.num_ws = config.num_ws
        prev = 0
        for res in self.resolutions:
            ch = config.channels(res)
            setattr(self, f"b{res}", SynthesisBlock(prev, ch, config.style_dim, res, config.blur_kernel))
            prev = ch

    def block(self, resolution: int) -> SynthesisBlock:
        """The block at ``resolution``."""
        if resolution not in self.resolutions:
            raise ConfigError(f"resolution {resolution} is not a block of this generator; blocks: {self.resolutions}")
        return getattr(self, f"b{resolution}")

    def ws_slice(self, resolution: int) -> slice:
        """The W+ indices used by the block at ``resolution``."""
        k = int(math.log2(resolution)) - 2
        return slice(0, 2) if k == 0 else slice(2 * k - 1, 2 * k + 2)

    def noise_layers(self) -> list[StyledConv]:
        """The noise-carrying convs in W order (rosinality's ``noises.noise_i`` order)."""
        layers = []
        for res in self.resolutions:
            blk = self.block(res)
            if blk.conv0 is not None:
                layers.append(blk.conv0)
            layers.append(blk.conv1)
        return layers

    def _broadcast(self, ws: torch.Tensor) -> torch.Tensor:
        if ws.ndim == 2:
            ws = ws[:, None].expand(-1, self.num_ws, -1)
        check_shape(ws, ["B", self.num_ws, self.config.style_dim], "ws")
        return ws

    def forward(self, ws: torch.Tensor, *, start: SynthesisState | None = None, stop: int | None = None,
                noise_mode: NoiseMode = "const", noise: Sequence[torch.Tensor] | None = None
                ) -> torch.Tensor | SynthesisState:
        """Runs the synthesis, optionally resuming from ``start`` and/or stopping after block ``stop``.

        Prefer :meth:`run_until` / :meth:`run_from`; this single entry point exists so that
        :func:`torch.func.functional_call` can drive either half with substituted weights.

        Args:
            ws: ``(B, num_ws, D)`` W+ codes, or ``(B, D)`` W codes broadcast to every layer.
            start: State returned by ``run_until``; blocks up to ``start.resolution`` are skipped.
            stop: If given, stop after the block at this resolution and return its state.
            noise_mode: ``const`` (fixed buffers), ``random`` (fresh N(0, 1)) or ``none`` (zeros).
            noise: Optional explicit noise maps in W order (``noise_layers()``), ``(B or 1, 1, r, r)`` each.

        Returns:
            ``(B, 3, R, R)`` raw (unclamped) image, or a :class:`SynthesisState` when ``stop`` is set.
        """
        check_choice(noise_mode, _NOISE_MODES, "noise_mode")
        ws = self._broadcast(ws)
        if stop is not None and stop not in self.resolutions:
            raise ConfigError(f"stop={stop} is not a block resolution; blocks: {self.resolutions}")
        if noise is not None and len(noise) != len(self.noise_layers()):
            raise ShapeError(f"noise must hold {len(self.noise_layers())} maps, got {len(noise)}")
        x = rgb = None
        first = 4
        if start is not None:
            if start.resolution not in self.resolutions:
                raise ConfigError(f"start.resolution={start.resolution} is not a block resolution {self.resolutions}")
            x, rgb, first = start.features, start.rgb, start.resolution * 2
            if stop is not None and stop < first:
                raise ConfigError(f"stop={stop} lies before start.resolution={start.resolution}")
        noise_idx = 0
        for res in self.resolutions:
            blk = self.block(res)
            n_noise = 1 if blk.conv0 is None else 2
            if res >= first:
                nz: tuple = (None, None)
                if noise is not None:
                    nz = (None, noise[noise_idx]) if n_noise == 1 else (noise[noise_idx], noise[noise_idx + 1])
                x, rgb = blk(x, rgb, ws[:, self.ws_slice(res)], noise_mode=noise_mode, noise=nz)
                if stop == res:
                    return SynthesisState(features=x, rgb=rgb, resolution=res)
            noise_idx += n_noise
        if stop is not None:  # start == stop == last block is impossible here; stop was validated above
            raise ConfigError(f"stop={stop} was not reached")
        return rgb

    def run_until(self, ws: torch.Tensor, resolution: int, **kwargs) -> SynthesisState:
        """Runs blocks ``b4 .. b{resolution}`` and returns their state (features f and RGB skip)."""
        return self(ws, stop=resolution, **kwargs)

    def run_from(self, ws: torch.Tensor, state: SynthesisState, **kwargs) -> torch.Tensor:
        """Finishes the image from ``state`` (possibly with blended features)."""
        return self(ws, start=state, **kwargs)


class Generator(nn.Module):
    """StyleGAN2 generator: :class:`MappingNetwork` + :class:`SynthesisNetwork` + the mean latent.

    Example:
        >>> G = Generator(GeneratorConfig(resolution=32, style_dim=64, n_mapping=2, channel_base=256, channel_max=32))
        >>> w = G.mapping(torch.randn(2, 64))
        >>> img = G(w)  # (2, 3, 32, 32), roughly in [-1, 1] for a trained model
    """

    def __init__(self, config: GeneratorConfig | None = None, **kwargs) -> None:
        super().__init__()
        if config is None:
            config = GeneratorConfig(**kwargs)
        elif kwargs:
            raise ConfigError("pass either a GeneratorConfig or keyword arguments, not both")
        self.config = config
        self.mapping = MappingNetwork(config.style_dim, config.n_mapping, config.lr_mapping)
        self.synthesis = SynthesisNetwork(config)
        self.register_buffer("w_avg", torch.zeros(config.style_dim))

    @property
    def num_ws(self) -> int:
        return self.config.num_ws

    @property
    def resolution(self) -> int:
        return self.config.resolution

    @property
    def style_dim(self) -> int:
        return self.config.style_dim

    def forward(self, ws: torch.Tensor, **kwargs) -> torch.Tensor | SynthesisState:
        """Synthesises from W or W+ codes; keyword arguments as :meth:`SynthesisNetwork.forward`."""
        return self.synthesis(ws, **kwargs)

    def run_until(self, ws: torch.Tensor, resolution: int, **kwargs) -> SynthesisState:
        return self.synthesis.run_until(ws, resolution, **kwargs)

    def run_from(self, ws: torch.Tensor, state: SynthesisState, **kwargs) -> torch.Tensor:
        return self.synthesis.run_from(ws, state, **kwargs)

    def truncate(self, ws: torch.Tensor, psi: float, w_avg: torch.Tensor | None = None) -> torch.Tensor:
        """``w_avg + psi * (ws - w_avg)`` on every layer."""
        avg = (self.w_avg if w_avg is None else w_avg).to(ws)
        return avg + psi * (ws - avg)

    def sample_ws(self, z: torch.Tensor, *, truncation: float = 1.0) -> torch.Tensor:
        """Maps ``z (B, D)`` to broadcast W+ codes ``(B, num_ws, D)`` with optional truncation."""
        w = self.mapping(z)
        if truncation != 1.0:
            w = self.truncate(w, truncation)
        return w[:, None].expand(-1, self.num_ws, -1)

    @torch.no_grad()
    def mean_latent(self, n: int = 4096, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean of ``n`` mapped latents ``(D,)`` (drawn on CPU, mapped on the model's device)."""
        p = next(self.parameters())
        z = torch.randn(n, self.style_dim, generator=generator).to(p)
        return self.mapping(z).mean(0)

    def noise_shapes(self) -> list[tuple[int, int, int, int]]:
        return [tuple(layer.noise_const.shape) for layer in self.synthesis.noise_layers()]
