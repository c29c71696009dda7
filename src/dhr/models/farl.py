"""FaRL face parser (CelebAMask-HQ fine-tune) loaded from its TorchScript release.

The authors' DHR code parses faces with facer's ``farl/celebm/448`` model, distributed as the
TorchScript archive ``face_parsing.farl.celebm.main_ema_181500_jit.pt``. The scripted network takes a
448x448 aligned face crop with RGB in [0, 1] and returns a tuple whose first element is the
``(B, 19, 448, 448)`` logits in :data:`FARL_CELEBM_CLASSES` order (any normalisation happens inside).

Trust model: a TorchScript archive carries TorchScript IR (a restricted, statically typed language
run by the TorchScript interpreter), not a Python pickle of arbitrary callables. Still, a crafted
archive can do what TorchScript can (e.g. touch files through ops), so :func:`load_farl_parser`
loads a file only if its SHA-256 equals the one the caller expects (normally from the weights
registry) or the caller opts in explicitly with ``trust=True``.

The face alignment (5 landmarks -> 448 crop, ``target_face_scale=0.8``) and the warp back to the
photo are not done here; they belong to the segmentation stage.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from dhr.checks import check_shape
from dhr.errors import CheckpointError, ShapeError
from dhr.fileio import sha256_file

__all__ = ["FARL_CELEBM_CLASSES", "FARL_CELEBM_FILENAME", "FARL_INPUT_SIZE", "FaRLNetwork", "load_farl_parser",
           "sha256_file"]

logger = logging.getLogger(__name__)

#: Released file name (facer ``models-v1`` release).
FARL_CELEBM_FILENAME = "face_parsing.farl.celebm.main_ema_181500_jit.pt"
#: Side of the aligned crop the network expects.
FARL_INPUT_SIZE = 448
#: Label order of the CelebAMask-HQ FaRL parser (rr/lr = right/left ear, rb/lb = brows, re/le = eyes,
#: imouth = inner mouth, llip/ulip = lower/upper lip, earr = earring, neckl = necklace).
FARL_CELEBM_CLASSES: tuple[str, ...] = (
    "background", "neck", "face", "cloth", "rr", "lr", "rb", "lb", "re", "le",
    "nose", "imouth", "llip", "ulip", "hair", "glass", "hat", "earr", "neckl",
)


class FaRLNetwork(nn.Module):
    """Wraps the scripted FaRL network with a checked, documented call.

    Args:
        net: The loaded TorchScript module (or any module with the same signature).
        n_classes: Expected number of logit channels (19).

    Shapes:
        ``forward``: ``(B, 3, 448, 448)`` aligned crops, RGB in [0, 1] -> ``(B, 19, 448, 448)`` logits in
        :data:`FARL_CELEBM_CLASSES` order.
    """

    def __init__(self, net: nn.Module | torch.jit.ScriptModule, *, n_classes: int = len(FARL_CELEBM_CLASSES)) -> None:
        super().__init__()
        self.net = net
        self.n_classes = n_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return FARL_CELEBM_CLASSES

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """Parses aligned face crops.

        Args:
            crops: ``(B, 3, 448, 448)`` float RGB in [0, 1] (facer divides uint8 by 255).

        Returns:
            ``(B, 19, 448, 448)`` logits (apply softmax over dim 1 for the probabilities DHR uses).

        Raises:
            ShapeError: If the input or the network's output has the wrong shape.
        """
        b = check_shape(crops, ["B", 3, FARL_INPUT_SIZE, FARL_INPUT_SIZE], "crops")["B"]
        out = self.net(crops)
        logits = out[0] if isinstance(out, (tuple, list)) else out
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (
            b, self.n_classes, FARL_INPUT_SIZE, FARL_INPUT_SIZE
        ):
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ShapeError(
                f"FaRL network returned {got}, expected ({b}, {self.n_classes}, {FARL_INPUT_SIZE}, "
                f"{FARL_INPUT_SIZE}) logits; is this the CelebAMask-HQ (celebm) parser?"
            )
        return logits


def load_farl_parser(path: str | os.PathLike[str], *, expected_sha256: str | None = None,
                     trust: bool = False) -> FaRLNetwork:
    """Loads the FaRL TorchScript parser on CPU after checking where it came from.

    Args:
        path: The ``.pt`` TorchScript archive.
        expected_sha256: Hex digest the file must have (from the weights registry).
        trust: Load without a digest check. Only for files you produced or verified yourself.

    Returns:
        A :class:`FaRLNetwork` in eval mode with frozen parameters, on CPU (move it with ``.to()``).

    Raises:
        CheckpointError: If the file is missing, its digest differs from ``expected_sha256``, no digest
            was given without ``trust=True``, or it is not a TorchScript archive.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"FaRL parser {path} does not exist; download {FARL_CELEBM_FILENAME} first")
    if expected_sha256 is not None:
        actual = sha256_file(path)
        if actual.lower() != expected_sha256.lower():
            raise CheckpointError(
                f"{path} has sha256 {actual}, expected {expected_sha256}; the file is corrupt or not the "
                "released FaRL parser. Re-download it, or pass trust=True if you produced it yourself."
            )
    elif not trust:
        raise CheckpointError(
            f"refusing to load TorchScript {path} without a digest: pass expected_sha256=<registry digest> "
            "or trust=True for a file you produced or verified yourself"
        )
    else:
        logger.warning("loading TorchScript %s without a digest check (trust=True)", path)
    try:
        with warnings.catch_warnings():
            # TorchScript is deprecated upstream, but the FaRL release exists only in this format.
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.*", category=DeprecationWarning)
            net = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError, OSError) as exc:
        raise CheckpointError(f"{path} is not a loadable TorchScript archive: {str(exc)[:300]}") from exc
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return FaRLNetwork(net).eval()


FaRLParser = FaRLNetwork
"""Deprecated alias of :class:`FaRLNetwork` (its old name, shared with the face parser
:class:`dhr.faces.parsing.FaRLParser` that wraps it)."""
