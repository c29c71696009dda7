"""IR / IR-SE residual backbones (ArcFace, CurricularFace) in the InsightFace key layout.

The networks load the public checkpoints by their parameter names, unchanged:
``model_ir_se50.pth`` (TreB1eN InsightFace_Pytorch, used by pSp/e4e for the identity loss and
encoder initialisation) and ``CurricularFace_Backbone.pth`` (IR-101, used to score identity
similarity in evaluation).

Key layout (``i`` counts units over all four stages)::

    input_layer.0                 Conv2d(in, 64, 3x3, stride 1, pad 1, no bias)
    input_layer.1                 BatchNorm2d(64)
    input_layer.2                 PReLU(64)
    body.{i}.res_layer.0          BatchNorm2d(c_in)
    body.{i}.res_layer.1          Conv2d(c_in, c, 3x3, stride 1, no bias)
    body.{i}.res_layer.2          PReLU(c)
    body.{i}.res_layer.3          Conv2d(c, c, 3x3, stride s, no bias)
    body.{i}.res_layer.4          BatchNorm2d(c)
    body.{i}.res_layer.5.fc1/fc2  squeeze-excitation 1x1 convs, reduction 16 (IR-SE only)
    body.{i}.shortcut_layer.0/1   Conv2d 1x1 stride s + BatchNorm2d, only where c_in != c;
                                  otherwise a parameter-free MaxPool2d(1, s) (subsampling)
    output_layer.0                BatchNorm2d(512)
    output_layer.1                Dropout
    output_layer.2                Flatten
    output_layer.3                Linear(512 * 7 * 7, 512)     (input 112; 14 * 14 for 224)
    output_layer.4                BatchNorm1d(512, affine)     (affine=False for CurricularFace)

Stages have 64, 128, 256 and 512 channels; the first unit of every stage has stride 2. Units per
stage: 50 layers -> (3, 4, 14, 3) = 24 units, 100 -> (3, 13, 30, 3) = 49, 152 -> (3, 8, 36, 3) = 50.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from dhr.checks import check_choice, check_shape
from dhr.errors import CheckpointError, ConfigError

__all__ = [
    "STAGE_UNITS",
    "STAGE_CHANNELS",
    "PSP_ID_CROP_256",
    "SEModule",
    "IRUnit",
    "build_ir_body",
    "stage_units",
    "Depth",
    "make_input_layer",
    "stage_end_indices",
    "IRBackbone",
    "ArcFace",
    "CurricularFace",
    "read_checkpoint",
    "load_state_dict_strict",
    "build_empty",
]

logger = logging.getLogger(__name__)

#: Units per stage for each supported depth.
STAGE_UNITS: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    152: (3, 8, 36, 3),
}
#: Output channels of the four stages.
STAGE_CHANNELS: tuple[int, int, int, int] = (64, 128, 256, 512)

#: The pSp/e4e identity-loss crop of a 256x256 face: rows 35:223, columns 32:220.
PSP_ID_CROP_256: tuple[int, int, int, int] = (35, 223, 32, 220)

IRMode = Literal["ir", "ir_se"]
#: A depth (50, 100, 152) or explicit units per stage.
Depth = int | tuple[int, int, int, int]
_M = TypeVar("_M", bound=nn.Module)


class SEModule(nn.Module):
    """Squeeze-and-excitation gate: ``x * sigmoid(fc2(relu(fc1(mean_hw(x)))))``.

    ``fc1`` and ``fc2`` are bias-free 1x1 convolutions (keys ``fc1.weight``, ``fc2.weight``).
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = x.mean(dim=(2, 3), keepdim=True)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(gate))))
        return x * gate


class IRUnit(nn.Module):
    """One improved-residual unit: ``res_layer(x) + shortcut_layer(x)``.

    Args:
        in_channels: Channels of the input.
        channels: Channels of the output.
        stride: Spatial stride of the unit (1 or 2), applied by the second 3x3 conv.
        use_se: Append a squeeze-excitation gate as ``res_layer.5`` (IR-SE).
    """

    def __init__(self, in_channels: int, channels: int, stride: int, *, use_se: bool) -> None:
        super().__init__()
        if in_channels == channels:
            # A 1x1 max pool with stride s is plain subsampling; it has no parameters.
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                nn.BatchNorm2d(channels),
            )
        layers: list[nn.Module] = [
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False),
            nn.PReLU(channels),
            nn.Conv2d(channels, channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(channels),
        ]
        if use_se:
            layers.append(SEModule(channels, 16))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


def stage_units(num_layers: Depth) -> tuple[int, int, int, int]:
    """Units per stage for a depth: ``STAGE_UNITS[num_layers]``, or a 4-tuple given as is.

    Raises:
        ConfigError: For an unknown depth or a tuple that is not four positive ints.
    """
    if isinstance(num_layers, tuple):
        if len(num_layers) != 4 or not all(isinstance(n, int) and n >= 1 for n in num_layers):
            raise ConfigError(f"num_layers={num_layers} must be 50, 100, 152 or four positive unit counts")
        return num_layers
    if num_layers not in STAGE_UNITS:
        raise ConfigError(f"num_layers={num_layers} is not supported; choose one of {sorted(STAGE_UNITS)}")
    return STAGE_UNITS[num_layers]


def build_ir_body(num_layers: Depth, mode: IRMode) -> nn.Sequential:
    """Builds the ``body`` of an IR / IR-SE network (every unit in one flat ``nn.Sequential``).

    Args:
        num_layers: 50, 100 or 152 (official layouts), or four unit counts per stage (e.g. ``(1, 1, 1, 1)``
            for tiny test models).
        mode: ``"ir"`` (no squeeze-excitation) or ``"ir_se"``.

    Returns:
        The body; it maps ``(B, 64, H, W)`` to ``(B, 512, H/16, W/16)``.
    """
    check_choice(mode, ("ir", "ir_se"), "mode")
    units: list[nn.Module] = []
    in_ch = 64
    for n_units, ch in zip(stage_units(num_layers), STAGE_CHANNELS):
        for k in range(n_units):
            units.append(IRUnit(in_ch, ch, 2 if k == 0 else 1, use_se=mode == "ir_se"))
            in_ch = ch
    return nn.Sequential(*units)


def stage_end_indices(num_layers: Depth) -> tuple[int, int, int, int]:
    """Body indices of the last unit of each stage (``(2, 6, 20, 23)`` for 50 layers).

    Stage k's last unit outputs ``STAGE_CHANNELS[k]`` channels at ``1 / 2**(k+1)`` of the input size.
    """
    ends: list[int] = []
    total = 0
    for n in stage_units(num_layers):
        total += n
        ends.append(total - 1)
    return ends[0], ends[1], ends[2], ends[3]


def make_input_layer(in_channels: int = 3) -> nn.Sequential:
    """The stem ``input_layer.{0 conv3x3, 1 BN, 2 PReLU}`` mapping ``in_channels`` to 64 channels."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False),
        nn.BatchNorm2d(64),
        nn.PReLU(64),
    )


class IRBackbone(nn.Module):
    """Face-recognition backbone: stem, IR/IR-SE body, BN-Dropout-Linear-BN head, L2 normalisation.

    Args:
        num_layers: 50, 100 or 152, or four unit counts per stage (see :func:`build_ir_body`).
        mode: ``"ir"`` or ``"ir_se"``.
        input_size: 112 or 224 (sets the Linear layer's input, 512 * (input_size / 16) ** 2).
        drop_ratio: Dropout probability before the Linear layer (training only).
        affine: Whether the final ``BatchNorm1d`` has a learnt scale and shift.

    Shapes:
        ``forward``: ``(B, 3, input_size, input_size)`` normalised to [-1, 1] -> ``(B, 512)`` unit-norm rows.
    """

    def __init__(self, num_layers: Depth = 50, *, mode: IRMode = "ir_se", input_size: int = 112,
                 drop_ratio: float = 0.4, affine: bool = True) -> None:
        super().__init__()
        check_choice(input_size, (112, 224), "input_size")
        self.num_layers = num_layers
        self.mode = mode
        self.input_size = input_size
        side = input_size // 16
        self.input_layer = make_input_layer(3)
        self.body = build_ir_body(num_layers, mode)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512),
            nn.Dropout(drop_ratio),
            nn.Flatten(),
            nn.Linear(512 * side * side, 512),
            nn.BatchNorm1d(512, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embeds aligned faces.

        Args:
            x: ``(B, 3, S, S)`` with ``S = input_size``, RGB in [-1, 1].

        Returns:
            ``(B, 512)`` L2-normalised embeddings (cosine similarity = dot product).
        """
        check_shape(x, ["B", 3, self.input_size, self.input_size], "x")
        feats = self.output_layer(self.body(self.input_layer(x)))
        return F.normalize(feats, p=2, dim=1)

    def embed(self, images: torch.Tensor, *, crop: Literal["none", "psp"] = "none") -> torch.Tensor:
        """Identity embedding of face images of any size, with the pSp resize/crop convention.

        ``crop="psp"`` reproduces the pSp/e4e identity loss: the image is average-pooled to 256x256
        (as pSp's ``face_pool``; a no-op for 256 input), rows 35:223 and columns 32:220 are kept
        (the inner face of an FFHQ-aligned crop) and the 188x188 result is adaptive-average-pooled to
        112x112. ``crop="none"`` only pools the whole image to ``input_size`` (use it for faces already
        aligned to the ArcFace 112 template, as the evaluation script does).

        Args:
            images: ``(B, 3, H, W)`` RGB in [-1, 1], any float dtype and device.
            crop: ``"none"`` or ``"psp"``.

        Returns:
            ``(B, 512)`` L2-normalised embeddings; differentiable w.r.t. ``images``.
        """
        check_choice(crop, ("none", "psp"), "crop")
        check_shape(images, ["B", 3, "H", "W"], "images")
        x = images
        if crop == "psp":
            if x.shape[-2:] != (256, 256):
                x = F.adaptive_avg_pool2d(x, (256, 256))
            top, bottom, left, right = PSP_ID_CROP_256
            x = x[:, :, top:bottom, left:right]
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.adaptive_avg_pool2d(x, (self.input_size, self.input_size))
        return self(x)

    @classmethod
    def _from_checkpoint(cls, path_or_state: str | os.PathLike[str] | Mapping[str, torch.Tensor],
                         **kwargs: object) -> IRBackbone:
        state = read_checkpoint(path_or_state)
        model = build_empty(cls, **kwargs)
        load_state_dict_strict(model, state, source=_describe(path_or_state))
        model.eval().requires_grad_(False)
        return model


class ArcFace(IRBackbone):
    """IR-SE50 ArcFace of TreB1eN InsightFace (``model_ir_se50.pth``), 112x112 input.

    Built as ``Backbone(112, 50, 'ir_se', drop_ratio=0.6, affine=True)``; the 512-d output is
    L2-normalised. Used by pSp/e4e as the training identity loss.
    """

    def __init__(self) -> None:
        super().__init__(50, mode="ir_se", input_size=112, drop_ratio=0.6, affine=True)

    @classmethod
    def from_checkpoint(cls, path_or_state: str | os.PathLike[str] | Mapping[str, torch.Tensor]) -> ArcFace:
        """Loads ``model_ir_se50.pth`` (or its state dict); returns a frozen model in eval mode on CPU.

        Raises:
            CheckpointError: If the file cannot be read or its keys/shapes are not IR-SE50's.
        """
        model = cls._from_checkpoint(path_or_state)
        assert isinstance(model, ArcFace)
        return model


class CurricularFace(IRBackbone):
    """IR-101 CurricularFace (``CurricularFace_Backbone.pth``): no squeeze-excitation, 49 units,
    final ``BatchNorm1d`` without affine parameters; 112x112 input. Used to score identity similarity.
    """

    def __init__(self) -> None:
        super().__init__(100, mode="ir", input_size=112, drop_ratio=0.4, affine=False)

    @classmethod
    def from_checkpoint(cls, path_or_state: str | os.PathLike[str] | Mapping[str, torch.Tensor]) -> CurricularFace:
        """Loads ``CurricularFace_Backbone.pth`` (or its state dict); frozen, eval mode, CPU.

        Raises:
            CheckpointError: If the file cannot be read or its keys/shapes are not IR-101's.
        """
        model = cls._from_checkpoint(path_or_state)
        assert isinstance(model, CurricularFace)
        return model


# --------------------------------------------------------------------------------------------
# Checkpoint helpers (shared by the encoder and BiSeNet loaders)


def _describe(path_or_state: object) -> str:
    if isinstance(path_or_state, (str, os.PathLike)):
        return str(path_or_state)
    return "the given state dict"


def read_checkpoint(path_or_state: str | os.PathLike[str] | Mapping[str, object]) -> dict[str, object]:
    """Reads a checkpoint with ``torch.load(map_location="cpu", weights_only=True)``.

    Pickled Python objects other than tensors and plain containers are refused (``weights_only``),
    so reading a file never runs code from it.

    Args:
        path_or_state: A file path, or an already-loaded mapping (returned as a shallow copy).

    Returns:
        The top-level mapping of the file.

    Raises:
        CheckpointError: If the file is missing, unreadable, needs arbitrary unpickling, or is not a mapping.
    """
    if isinstance(path_or_state, Mapping):
        return dict(path_or_state)
    path = Path(path_or_state)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; download it or pass the right path")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, ValueError, OSError, EOFError, pickle.UnpicklingError) as exc:
        raise CheckpointError(
            f"cannot read {path} as a tensors-only checkpoint ({type(exc).__name__}: {str(exc)[:300]}); "
            "the file is corrupt or pickles Python objects, which dhr refuses to execute; read it with "
            "dhr.models.convert.import_checkpoint (no code execution) and pass the tensors instead"
        ) from exc
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, expected a state dict (a mapping)")
    return dict(obj)


def _strip_prefix(state: Mapping[str, object], prefix: str) -> dict[str, object]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


def build_empty(cls: type[_M], *args: object, **kwargs: object) -> _M:
    """Constructs ``cls(*args, **kwargs)`` on CPU with uninitialised storage (no random init).

    Only for models that are filled by :func:`load_state_dict_strict` right after, which requires
    every parameter and buffer to be present in the checkpoint.
    """
    with torch.device("meta"):
        model = cls(*args, **kwargs)
    return model.to_empty(device="cpu")


def load_state_dict_strict(model: nn.Module, state: Mapping[str, object], *, source: str = "checkpoint") -> None:
    """Loads ``state`` into ``model`` requiring the exact key set and shapes.

    A ``module.`` prefix (DataParallel) is removed, and BatchNorm ``num_batches_tracked`` counters
    missing from old (PyTorch < 0.4.1) files are filled with zeros; nothing else is forgiven.

    Raises:
        CheckpointError: Listing missing keys, unexpected keys or mismatched shapes.
    """
    state = _strip_prefix(state, "module.")
    own = model.state_dict()
    for key, value in own.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = []
    for k in sorted(set(own) & set(state)):
        got = state[k]
        got_shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        if got_shape != tuple(own[k].shape):
            wrong_shape.append(f"{k}: file {got_shape} vs model {tuple(own[k].shape)}")
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:4]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:4]})")
        if wrong_shape:
            parts.append(f"{len(wrong_shape)} with another shape (e.g. {wrong_shape[:3]})")
        raise CheckpointError(
            f"{source} does not match {type(model).__name__}: " + "; ".join(parts)
            + ". Check that the file is the right network (and depth/variant)."
        )
    model.load_state_dict(state, strict=True)
    logger.debug("loaded %d tensors from %s into %s", len(state), source, type(model).__name__)
