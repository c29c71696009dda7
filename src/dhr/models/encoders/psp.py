"""pSp (``GradualStyleEncoder``) and e4e (``Encoder4Editing``) image-to-W+ encoders.

Both share one architecture and the same parameter names as the official checkpoints' ``encoder.*``
keys (prefix stripped): an IR-SE50 stem and body (:mod:`dhr.models.encoders.irse`), a small feature
pyramid and one :class:`GradualStyleBlock` per style (``styles.{k}``)::

    c1 = body[6]  (128 ch, input/4)     c2 = body[20]  (256 ch, input/8)     c3 = body[23]  (512 ch, input/16)
    p2 = up(c3) + latlayer1(c2)         p1 = up(p2) + latlayer2(c1)           (bilinear, align_corners=True)
    styles 0-2 read c3, styles 3-6 read p2, styles 7.. read p1

(for 100/152 layers the taps are the last unit of stages 2, 3 and 4, which is what 6/20/23 are for
50 layers.) pSp predicts every style independently; e4e predicts one code ``w0`` from ``styles.0``
and adds per-style deltas ``styles.i(.)`` for ``1 <= i <= progressive_stage`` (all at inference).
Neither adds the average latent: :class:`LatentEncoder` does, as the official wrappers do.

Notation (paper -> code): E = encoder; w+ (W+ code) = ``LatentEncoder(x)``; w̄ = ``latent_avg``.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from dhr.checks import check_choice, check_shape
from dhr.errors import CheckpointError, ConfigError
from dhr.models.encoders.irse import (
    STAGE_UNITS,
    Depth,
    IRMode,
    build_empty,
    build_ir_body,
    load_state_dict_strict,
    make_input_layer,
    read_checkpoint,
    stage_end_indices,
)
from dhr.models.stylegan2 import EqualLinear

__all__ = [
    "GradualStyleBlock",
    "GradualStyleEncoder",
    "Encoder4Editing",
    "LatentEncoder",
    "EncoderKind",
    "load_encoder",
    "infer_encoder_arch",
]

logger = logging.getLogger(__name__)

EncoderKind = Literal["e4e", "psp"]

#: ``opts["encoder_type"]`` values of the official training scripts -> our kind.
_ENCODER_TYPES: dict[str, EncoderKind] = {"Encoder4Editing": "e4e", "GradualStyleEncoder": "psp"}
#: First style index reading p2, first reading p1 (fixed in the official code).
COARSE_END = 3
MIDDLE_END = 7


class GradualStyleBlock(nn.Module):
    """Maps a ``(B, C_in, S, S)`` map to one ``(B, C_out)`` code.

    ``log2(S)`` stride-2 3x3 convs, each followed by LeakyReLU(0.01), reduce the map to 1x1
    (keys ``convs.{0,2,4,..}``); an equalised linear layer (``linear``, lr_mul 1) follows.
    """

    def __init__(self, in_channels: int, out_channels: int, spatial: int) -> None:
        super().__init__()
        n_down = int(round(math.log2(spatial)))
        if n_down < 1 or 2**n_down != spatial:
            raise ConfigError(f"spatial={spatial} must be a power of two >= 2")
        layers: list[nn.Module] = []
        ch = in_channels
        for _ in range(n_down):
            layers += [nn.Conv2d(ch, out_channels, 3, stride=2, padding=1), nn.LeakyReLU(0.01)]
            ch = out_channels
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_channels, out_channels)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).reshape(x.shape[0], self.out_channels))


def _upsample_add(top: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
    return F.interpolate(top, size=lateral.shape[-2:], mode="bilinear", align_corners=True) + lateral


class _FeaturePyramidEncoder(nn.Module):
    """Shared stem, body, lateral layers and style heads of pSp and e4e.

    Args:
        n_styles: Number of W+ entries, the generator's ``num_ws`` (18 for 1024 px, 14 for 256).
        num_layers: IR depth, 50, 100 or 152, or four unit counts per stage (tiny test models).
        mode: ``"ir_se"`` (official) or ``"ir"``.
        style_dim: Width of each code (512 for FFHQ config-f).
        input_size: Side of the square input; a power of two >= 64 (official: 256).
        in_channels: Input channels (3; ReStyle-style models use 6).
    """

    kind: EncoderKind

    def __init__(self, n_styles: int = 18, *, num_layers: Depth = 50, mode: IRMode = "ir_se", style_dim: int = 512,
                 input_size: int = 256, in_channels: int = 3) -> None:
        super().__init__()
        if n_styles < 1:
            raise ConfigError(f"n_styles={n_styles} must be >= 1 (the generator's num_ws)")
        if input_size < 64 or input_size & (input_size - 1):
            raise ConfigError(f"input_size={input_size} must be a power of two >= 64 (official: 256)")
        self.n_styles = n_styles
        self.style_dim = style_dim
        self.input_size = input_size
        self.in_channels = in_channels
        self.num_layers = num_layers
        self.mode = mode
        self._taps = stage_end_indices(num_layers)[1:]
        self.input_layer = make_input_layer(in_channels)
        self.body = build_ir_body(num_layers, mode)
        self.styles = nn.ModuleList()
        for i in range(n_styles):
            spatial = input_size // (16 if i < COARSE_END else 8 if i < MIDDLE_END else 4)
            self.styles.append(GradualStyleBlock(512, style_dim, spatial))
        self.latlayer1 = nn.Conv2d(256, 512, kernel_size=1)
        self.latlayer2 = nn.Conv2d(128, 512, kernel_size=1)

    def pyramid(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Body taps ``(c1, c2, c3)``: 128 ch at input/4, 256 ch at input/8, 512 ch at input/16."""
        check_shape(x, ["B", self.in_channels, self.input_size, self.input_size], "x")
        h = self.input_layer(x)
        taps: list[torch.Tensor] = []
        for i, unit in enumerate(self.body):
            h = unit(h)
            if i in self._taps:
                taps.append(h)
        return taps[0], taps[1], taps[2]


class GradualStyleEncoder(_FeaturePyramidEncoder):
    """pSp encoder: every style is predicted by its own head from its pyramid level.

    Shapes:
        ``forward``: ``(B, in_channels, input_size, input_size)`` in [-1, 1] -> ``(B, n_styles, style_dim)``
        codes *without* the average latent.
    """

    kind: EncoderKind = "psp"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1, c2, c3 = self.pyramid(x)
        codes = [self.styles[i](c3) for i in range(min(COARSE_END, self.n_styles))]
        if self.n_styles > COARSE_END:
            p2 = _upsample_add(c3, self.latlayer1(c2))
            codes += [self.styles[i](p2) for i in range(COARSE_END, min(MIDDLE_END, self.n_styles))]
            if self.n_styles > MIDDLE_END:
                p1 = _upsample_add(p2, self.latlayer2(c1))
                codes += [self.styles[i](p1) for i in range(MIDDLE_END, self.n_styles)]
        return torch.stack(codes, dim=1)


class Encoder4Editing(_FeaturePyramidEncoder):
    """e4e encoder: ``w_i = w0 + delta_i`` for ``1 <= i <= progressive_stage``, ``w_i = w0`` beyond.

    ``progressive_stage`` (an int in ``[0, n_styles - 1]``; default all deltas, the inference stage)
    reproduces e4e's progressive training; 0 gives a plain W code repeated.

    Shapes:
        ``forward``: ``(B, in_channels, input_size, input_size)`` in [-1, 1] -> ``(B, n_styles, style_dim)``
        codes *without* the average latent.
    """

    kind: EncoderKind = "e4e"

    def __init__(self, n_styles: int = 18, **kwargs: Any) -> None:
        super().__init__(n_styles, **kwargs)
        self.progressive_stage = n_styles - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not 0 <= self.progressive_stage < self.n_styles:
            raise ConfigError(f"progressive_stage={self.progressive_stage} must be in [0, {self.n_styles - 1}]")
        c1, c2, c3 = self.pyramid(x)
        w0 = self.styles[0](c3)
        codes = [w0]
        feats = c3
        p2 = c3
        for i in range(1, self.progressive_stage + 1):
            if i == COARSE_END:
                p2 = feats = _upsample_add(c3, self.latlayer1(c2))
            elif i == MIDDLE_END:
                feats = _upsample_add(p2, self.latlayer2(c1))
            codes.append(w0 + self.styles[i](feats))
        codes += [w0] * (self.n_styles - len(codes))
        return torch.stack(codes, dim=1)


class LatentEncoder(nn.Module):
    """An encoder plus the average latent it was trained around: ``w+ = E(x) + latent_avg``.

    Args:
        encoder: A :class:`GradualStyleEncoder` or :class:`Encoder4Editing`.
        latent_avg: ``(n_styles, style_dim)`` or ``(style_dim,)`` average latent, or None to add nothing
            (pSp trained without ``start_from_latent_avg``). Stored as a buffer.

    Shapes:
        ``forward``: ``(B, C, S, S)`` RGB in [-1, 1] (``S = encoder.input_size``, 256 officially; resize
        first) -> ``(B, n_styles, style_dim)`` W+ codes for the generator.
    """

    def __init__(self, encoder: _FeaturePyramidEncoder, latent_avg: torch.Tensor | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        if latent_avg is not None:
            latent_avg = _check_latent_avg(latent_avg, encoder.n_styles, encoder.style_dim)
        self.register_buffer("latent_avg", latent_avg)

    @property
    def kind(self) -> EncoderKind:
        return self.encoder.kind

    @property
    def n_styles(self) -> int:
        return self.encoder.n_styles

    @property
    def style_dim(self) -> int:
        return self.encoder.style_dim

    @property
    def input_resolution(self) -> int:
        """Side of the square input the encoder reads (256 for the official models)."""
        return int(self.encoder.input_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        codes = self.encoder(x)
        if self.latent_avg is not None:
            codes = codes + self.latent_avg.to(codes.dtype)
        return codes


def _check_latent_avg(latent_avg: object, n_styles: int, style_dim: int) -> torch.Tensor:
    if not isinstance(latent_avg, torch.Tensor):
        raise CheckpointError(f"latent_avg must be a tensor, got {type(latent_avg).__name__}")
    if tuple(latent_avg.shape) not in ((n_styles, style_dim), (style_dim,)):
        raise CheckpointError(
            f"latent_avg has shape {tuple(latent_avg.shape)}, but the encoder predicts {n_styles} styles of "
            f"width {style_dim}: expected ({n_styles}, {style_dim}) or ({style_dim},). The latent average "
            "belongs to another generator; pass the one saved with this encoder."
        )
    return latent_avg.detach().float().clone()


def _opt(opts: object, name: str) -> Any:
    if opts is None:
        return None
    if isinstance(opts, Mapping):
        return opts.get(name)
    return getattr(opts, name, None)


def infer_encoder_arch(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Reads the architecture of a pSp/e4e encoder from its (prefix-free) keys and shapes.

    Returns:
        ``dict(n_styles, num_layers, mode, style_dim, input_size, in_channels)``, the constructor
        arguments of :class:`GradualStyleEncoder` / :class:`Encoder4Editing` (``num_layers`` is
        50/100/152 for official layouts, else the units per stage).

    Raises:
        CheckpointError: If a required key is missing or the layout is not a pSp/e4e feature pyramid.
    """
    def need(key: str) -> torch.Tensor:
        value = state.get(key)
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"encoder weights have no tensor '{key}': not a pSp/e4e GradualStyle encoder "
                "(W-only 'BackboneEncoderUsingLastLayerIntoW' and ReStyle encoders are not supported)"
            )
        return value

    in_channels = int(need("input_layer.0.weight").shape[1])
    units = {int(m.group(1)) for k in state if (m := re.match(r"body\.(\d+)\.", k))}
    # Stages 2-4 start with the only units that change the channel count (conv shortcuts).
    shortcut = re.compile(r"body\.(\d+)\.shortcut_layer\.0\.weight$")
    starts = sorted(int(m.group(1)) for k in state if (m := shortcut.match(k)))
    if not units or units != set(range(len(units))) or len(starts) != 3 or starts[0] < 1:
        raise CheckpointError(
            f"encoder body has {len(units)} units (contiguous: {units == set(range(len(units)))}) and conv "
            f"shortcuts at {starts}; expected units 0..N-1 in four stages (IR-50: 24 units, shortcuts at 3, 7, 21)"
        )
    counts = (starts[0], starts[1] - starts[0], starts[2] - starts[1], len(units) - starts[2])
    if min(counts) < 1:
        raise CheckpointError(f"encoder body stages have {counts} units; every stage needs at least one")
    by_units = {v: n for n, v in STAGE_UNITS.items()}
    num_layers: Depth = by_units.get(counts, counts)
    mode: IRMode = "ir_se" if "body.0.res_layer.5.fc1.weight" in state else "ir"
    styles = {int(m.group(1)) for k in state if (m := re.match(r"styles\.(\d+)\.", k))}
    if not styles or styles != set(range(len(styles))):
        raise CheckpointError(
            f"encoder style heads are {sorted(styles)}; expected styles.0 .. styles.(n_styles-1) with none missing"
        )
    style_dim = int(need("styles.0.linear.weight").shape[0])
    n_convs = len({int(m.group(1)) for k in state if (m := re.match(r"styles\.0\.convs\.(\d+)\.weight$", k))})
    return {
        "n_styles": len(styles),
        "num_layers": num_layers,
        "mode": mode,
        "style_dim": style_dim,
        "input_size": 16 * 2**n_convs,
        "in_channels": in_channels,
    }


def _unwrap(checkpoint: Mapping[str, Any]) -> tuple[dict[str, Any], Any, Any]:
    """Finds (encoder keys without prefix, latent_avg or None, opts or None) in any known container."""
    latent_avg = checkpoint.get("latent_avg")
    opts = checkpoint.get("opts")
    state: Mapping[str, Any] = checkpoint
    if isinstance(checkpoint.get("state_dict"), Mapping):  # official pSp/e4e file
        state = checkpoint["state_dict"]
    elif isinstance(checkpoint.get("encoder"), Mapping):  # GANInverter's converted/native file
        state = checkpoint["encoder"]
        latent_avg = state.get("latent_avg", latent_avg)
        state = {k: v for k, v in state.items() if k != "latent_avg"}
    keys = [k for k in state if isinstance(k, str)]
    if keys and all(k.startswith("module.") for k in keys):
        state = {k[len("module."):]: v for k, v in state.items()}
    if any(k.startswith("encoder.") for k in state):
        state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    return dict(state), latent_avg, opts


def load_encoder(state_dict: str | os.PathLike[str] | Mapping[str, Any], latent_avg: torch.Tensor | None = None,
                 opts: Mapping[str, Any] | object | None = None, *, kind: EncoderKind | Literal["auto"] = "auto"
                 ) -> LatentEncoder:
    """Builds a pSp or e4e encoder from official weights, inferring its shape from the keys.

    Accepted inputs: a path or the loaded top level of an official file (``state_dict`` + ``latent_avg``
    + ``opts``), a state dict with ``encoder.*`` (and possibly ``decoder.*``) keys, GANInverter's
    ``{'encoder': {...}}`` layout, or bare encoder keys. ``n_styles`` is the number of ``styles.{k}``
    heads; depth, SE, style width and input size follow from keys and shapes.

    e4e and pSp have *identical* keys; the kind comes from ``opts["encoder_type"]``
    (``"Encoder4Editing"`` / ``"GradualStyleEncoder"``) or from ``kind``.

    Args:
        state_dict: See above.
        latent_avg: ``(n_styles, D)`` or ``(D,)``; overrides the file's ``latent_avg``.
        opts: The training options (dict or namespace); overrides the file's ``opts``. Used for
            ``encoder_type``, ``start_from_latent_avg``, ``stylegan_size`` and ``n_styles``.
        kind: ``"e4e"``, ``"psp"`` or ``"auto"`` (from ``opts``).

    Returns:
        A :class:`LatentEncoder` in eval mode on CPU (parameters trainable; freeze them if needed).

    Raises:
        CheckpointError: Unknown layout, ambiguous kind, or a mismatch between the heads, ``opts`` and
            ``latent_avg``.
    """
    check_choice(kind, ("auto", "e4e", "psp"), "kind")
    checkpoint = read_checkpoint(state_dict)
    state, file_avg, file_opts = _unwrap(checkpoint)
    opts = opts if opts is not None else file_opts
    latent_avg = latent_avg if latent_avg is not None else file_avg
    arch = infer_encoder_arch(state)

    encoder_type = _opt(opts, "encoder_type")
    opts_kind = _ENCODER_TYPES.get(encoder_type) if encoder_type is not None else None
    if encoder_type is not None and opts_kind is None:
        raise CheckpointError(
            f"opts encoder_type={encoder_type!r} is not supported; supported: {sorted(_ENCODER_TYPES)}"
        )
    if kind == "auto":
        if opts_kind is None:
            raise CheckpointError(
                "cannot tell e4e from pSp: both have the same keys and no opts['encoder_type'] was found; "
                "pass kind='e4e' or kind='psp'"
            )
        kind = opts_kind
    elif opts_kind is not None and opts_kind != kind:
        raise CheckpointError(f"kind={kind!r} contradicts the checkpoint's opts encoder_type={encoder_type!r}")

    n_styles = arch["n_styles"]
    size = _opt(opts, "stylegan_size") or _opt(opts, "output_size")
    if size is not None and 2 * int(math.log2(int(size))) - 2 != n_styles:
        raise CheckpointError(
            f"the encoder has {n_styles} style heads but opts says generator size {size} "
            f"({2 * int(math.log2(int(size))) - 2} styles); the weights and options disagree"
        )
    opt_n = _opt(opts, "n_styles")
    if opt_n is not None and int(opt_n) != n_styles:
        raise CheckpointError(f"the encoder has {n_styles} style heads but opts['n_styles'] is {opt_n}")

    if _opt(opts, "start_from_latent_avg") is False:
        if latent_avg is not None:
            logger.info("opts.start_from_latent_avg is False: the stored latent_avg is not added")
        latent_avg = None
    elif latent_avg is None and _opt(opts, "start_from_latent_avg"):
        raise CheckpointError(
            "opts.start_from_latent_avg is set but no latent_avg was found; pass latent_avg= "
            "(the generator's mean W, repeated per style)"
        )

    cls = Encoder4Editing if kind == "e4e" else GradualStyleEncoder
    encoder = build_empty(cls, n_styles, **{k: v for k, v in arch.items() if k != "n_styles"})
    load_state_dict_strict(encoder, state, source=f"{kind} encoder weights")
    model = LatentEncoder(encoder, latent_avg)
    return model.eval()
