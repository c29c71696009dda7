"""The benchmark's measurements: image and edit metrics, peak memory, and the evaluation models.

Every method is scored the same way (see the protocol in :mod:`dhr.bench.protocol`):
reconstructions and edits are quantised to uint8 (:func:`quantize`), resized to the evaluation
resolution and compared with the uint8 input by :class:`Scorer` (MSE, PSNR, SSIM, LPIPS and
identity, whole image or inside a mask); :func:`score_inversion` gives one inversion's
reconstruction metrics, :func:`score_edits` its editing metrics. :class:`PeakMemory` measures the
peak memory of a block. :func:`pick_lpips`, :func:`pick_identity` and :func:`pick_edits` choose
the evaluation models and directions from the options.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import math
import platform
import tracemalloc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dhr.editing import apply_edits
from dhr.engine import render
from dhr.errors import ConfigError, DHRError
from dhr.io.image import tensor_to_uint8, uint8_to_tensor
from dhr.metrics.editing import attribute_change, classifier_scores
from dhr.metrics.image import masked_lpips, mse, psnr_from_mse, ssim
from dhr.metrics.lpips import LPIPS

__all__ = [
    "IMAGE_FAILURES",
    "MEMORY_METHODS",
    "PeakMemory",
    "Scorer",
    "classifier_keys",
    "false_alarm",
    "finite",
    "iou",
    "pick_edits",
    "pick_identity",
    "pick_lpips",
    "quantize",
    "score_edits",
    "score_inversion",
]

logger = logging.getLogger(__name__)

IMAGE_FAILURES: tuple[type[BaseException], ...] = (DHRError, OSError, MemoryError, torch.OutOfMemoryError)
"""What a failure of one image (or of one method on one image) may be: a :class:`DHRError` (no
face, a bad crop, weights that cannot be resolved), an unreadable file, or running out of memory.
It is recorded in the report's ``failures`` with its stage and reason and the run goes on.
Anything else (a ``TypeError``, an ``IndexError``, a shape mismatch) is a bug in dhr and stops
the run with its traceback."""

MEMORY_METHODS: dict[str, str] = {
    "cuda_max_allocated": "torch.cuda.max_memory_allocated during invert()",
    "rss_hwm": "extra peak resident memory of the process during invert() (Linux VmHWM after clear_refs, minus "
               "VmRSS before, after malloc_trim); includes one-off allocations of the first run",
    "tracemalloc": "tracemalloc peak (Python allocations only; torch tensors not seen)",
}
"""What each :attr:`PeakMemory.method` measures, in the report's words."""


# --------------------------------------------------------------------------------------------
# Memory


def _malloc_trim() -> None:
    """Returns freed heap pages to the OS (glibc), so the resident size reflects live memory."""
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory of a block of work.

    CUDA: ``torch.cuda.max_memory_allocated`` after a reset (``method = "cuda_max_allocated"``).
    CPU on Linux: the process's peak resident set size (``VmHWM``, reset through
    ``/proc/self/clear_refs``) minus the resident size before the block (``"rss_hwm"``), i.e. the
    extra memory the block needed, torch tensors included; freed heap pages are returned to the OS
    first (glibc ``malloc_trim``) so that memory kept by an earlier method is not reused unseen. Elsewhere: Python's ``tracemalloc``
    peak (``"tracemalloc"``; does not see torch's own allocator). :data:`MEMORY_METHODS` says it in words.

    Args:
        device: The device the measured work runs on.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.method = "cuda_max_allocated" if device.type == "cuda" else ("rss_hwm" if self._hwm_works() else "tracemalloc")
        self.peak_mb: float = math.nan

    @staticmethod
    def _status(key: str) -> float:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return float(line.split()[1]) / 1024.0
        raise OSError(f"{key} not in /proc/self/status")

    @classmethod
    def _hwm_works(cls) -> bool:
        if platform.system() != "Linux":
            return False
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")
            cls._status("VmHWM")
            return True
        except OSError:
            return False

    @contextlib.contextmanager
    def measure(self) -> Iterator[PeakMemory]:
        """Measures the block; ``peak_mb`` holds the result afterwards (MiB)."""
        if self.method == "cuda_max_allocated":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            yield self
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self.method == "rss_hwm":
            _malloc_trim()
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")
            before = self._status("VmRSS")
            yield self
            self.peak_mb = max(0.0, self._status("VmHWM") - before)
        else:
            tracemalloc.start()
            try:
                yield self
                self.peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
            finally:
                tracemalloc.stop()


# --------------------------------------------------------------------------------------------
# Metrics


def quantize(x: torch.Tensor) -> torch.Tensor:
    """``(..., 3, H, W)`` float in [-1, 1] -> the same on CPU after clamping and rounding to uint8."""
    return uint8_to_tensor(tensor_to_uint8(x.detach().float().cpu()))


def _to_eval(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _mask_to_eval(m: torch.Tensor, size: int) -> torch.Tensor:
    if m.shape[-1] == size:
        return m
    return (F.interpolate(m, size=(size, size), mode="area") >= 0.5).float()


def iou(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """Intersection over union of two binary masks of the same shape (NaN when both are empty)."""
    p, g = pred.bool(), gt.bool()
    union = (p | g).sum().item()
    return float((p & g).sum().item() / union) if union else math.nan


def false_alarm(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """Fraction of the pixels outside the ground-truth region ``gt`` that ``pred`` marks (NaN when
    ``gt`` covers everything)."""
    p, g = pred.bool(), gt.bool()
    clean = (~g).sum().item()
    return float((p & ~g).sum().item() / clean) if clean else math.nan


def finite(v: float | None) -> float | None:
    """``float(v)``, or None for None, NaN and infinities (JSON-safe)."""
    return float(v) if v is not None and math.isfinite(float(v)) else None


@dataclass
class Scorer:
    """Reconstruction and editing metrics with the benchmark's evaluation models.

    Attributes:
        lpips: The evaluation LPIPS (or the model's perceptual metric), on :attr:`device`.
        identity: An identity model with ``embed(image, landmarks)`` and ``similarity(a, b)``, or None.
        classifier: The model's attribute classifier, or None.
        size: The evaluation resolution.
        classifier_keys: The attributes the classifier scores (``age``, ...).
    """

    lpips: torch.nn.Module
    identity: Any | None
    classifier: torch.nn.Module | None
    size: int
    classifier_keys: frozenset[str] = frozenset()

    @property
    def device(self) -> torch.device:
        """The device of the LPIPS network (CPU when it has no tensors)."""
        tensors = [*self.lpips.parameters(), *self.lpips.buffers()]
        return tensors[0].device if tensors else torch.device("cpu")

    def id_embed(self, x: torch.Tensor, landmarks: np.ndarray | None) -> torch.Tensor | None:
        """Identity embedding of ``x[0]`` (``(1, 3, H, W)``), or None without an identity model."""
        if self.identity is None:
            return None
        return self.identity.embed(x[0], landmarks)

    def id_sim(self, a: torch.Tensor | None, b: torch.Tensor | None) -> float | None:
        """Identity similarity of two embeddings (None when either is missing)."""
        if a is None or b is None or self.identity is None:
            return None
        return finite(self.identity.similarity(a, b))

    def region(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None, prefix: str) -> dict[str, float | None]:
        """MSE, PSNR, SSIM and LPIPS of ``x`` against ``y`` inside ``mask``.

        Args:
            x, y: ``(1, 3, H, W)`` in [-1, 1] (CPU).
            mask: ``(1, 1, H, W)`` with 1 = scored pixel, or None for the whole image.
            prefix: Key prefix (``in.``, ``ood.``, ...); the whole image (``""``) also gets ``psnr_ref``.

        Returns:
            ``{prefix + "mse", prefix + "psnr", prefix + "ssim", prefix + "lpips"}`` (None where not finite).
        """
        xe, ye = _to_eval(x, self.size), _to_eval(y, self.size)
        me = None if mask is None else _mask_to_eval(mask, self.size)
        e = mse(xe, ye, mask=me)
        dev = self.device
        lp = masked_lpips(self.lpips, xe.to(dev), ye.to(dev), mask=None if me is None else me.to(dev))
        out = {
            f"{prefix}mse": finite(e.item()),
            f"{prefix}psnr": finite(psnr_from_mse(e).item()),
            f"{prefix}ssim": finite(ssim(xe, ye, mask=me).item()),
            f"{prefix}lpips": finite(lp.item()),
        }
        if not prefix:
            out["psnr_ref"] = finite(psnr_from_mse(e, "reference").item())
        return out


def score_inversion(scorer: Scorer, inv: Any, recon: torch.Tensor, target: torch.Tensor, *,
                    target_id: torch.Tensor | None, landmarks: np.ndarray | None, ref_mask: torch.Tensor | None,
                    occ_mask: torch.Tensor | None) -> tuple[dict[str, float | None], torch.Tensor | None]:
    """Reconstruction metrics of one inversion (the ``metrics`` entry of a method in the report).

    Args:
        scorer: The evaluation models.
        inv: The :class:`dhr.types.Inversion` (its ``domain`` mask and ``weight_delta``).
        recon: ``(1, 3, R, R)`` its quantised reconstruction (:func:`quantize`).
        target: ``(1, 3, R, R)`` the (occluded) input, CPU.
        target_id: Identity embedding of the input (or None).
        landmarks: The input's landmarks, used for every identity embedding of the image.
        ref_mask: ``(1, 1, R, R)`` the image's DHR mask (1 = in-domain) for ``in.``/``ood.``, or None.
        occ_mask: ``(1, 1, R, R)`` the occluder (1 = occluder) for ``occ_in.``/``occ_out.``, or None.

    Returns:
        ``(metrics, rec_id)``: the metrics dict and the reconstruction's identity embedding.
    """
    m = scorer.region(recon, target, None, "")
    rec_id = scorer.id_embed(recon, landmarks)
    m["id"] = scorer.id_sim(target_id, rec_id)
    if ref_mask is not None:
        m.update(scorer.region(recon, target, ref_mask, "in."))
        m.update(scorer.region(recon, target, 1 - ref_mask, "ood."))
    if occ_mask is not None:
        m.update(scorer.region(recon, target, occ_mask, "occ_in."))
        m.update(scorer.region(recon, target, 1 - occ_mask, "occ_out."))
        if inv.domain is not None:
            ood_pred = 1 - inv.domain.mask[None].cpu()
            m["iou_ood"] = finite(iou(ood_pred, occ_mask))
            m["ood_false_alarm"] = finite(false_alarm(ood_pred, occ_mask))
    if inv.weight_delta:
        m["delta_norm"] = finite(math.sqrt(sum(float(d.detach().float().pow(2).sum())
                                               for d in inv.weight_delta.values())))
    return m, rec_id


def score_edits(scorer: Scorer, G: torch.nn.Module, inv: Any, recon: torch.Tensor, target: torch.Tensor,
                directions: Sequence[Any], strength: float, *, rec_id: torch.Tensor | None,
                landmarks: np.ndarray | None, ref_mask: torch.Tensor | None, occ_mask: torch.Tensor | None,
                device: torch.device) -> tuple[dict[str, float | None], list[tuple[str, torch.Tensor]]]:
    """Edits one inversion along each direction at ``strength`` and scores the edits.

    Args:
        scorer: The evaluation models (its ``classifier`` scores ``attr_per_unit``).
        G: The generator the inversion belongs to.
        inv: The :class:`dhr.types.Inversion`.
        recon: ``(1, 3, R, R)`` its quantised reconstruction.
        target: ``(1, 3, R, R)`` the (occluded) input, CPU.
        directions: :class:`dhr.editing.Direction` objects.
        strength: Edit strength (non-zero).
        rec_id: Identity embedding of ``recon`` (or None).
        landmarks, ref_mask, occ_mask: As for :func:`score_inversion`.
        device: The generator's (and classifier's) device.

    Returns:
        ``(edits, images)``: ``{"edit.<name>.attr_per_unit", ".id_kept", ".ood_lpips", ".ood_mse",
        ".occ_lpips", ".occ_mse"}`` (those that apply) and ``[(label, (1, 3, R, R) quantised edit)]``.
    """
    out: dict[str, float | None] = {}
    images: list[tuple[str, torch.Tensor]] = []
    for d in directions:
        ws_e = apply_edits(inv.ws[None].to(device), [(d, strength)])[0]
        img_e = quantize(render(G, inv, ws_e)[None])
        images.append((f"{d.name} {strength:+g}", img_e))
        pre = f"edit.{d.name}."
        if scorer.classifier is not None and d.name in scorer.classifier_keys:
            out[pre + "attr_per_unit"] = finite(attribute_change(
                scorer.classifier, recon.to(device), img_e.to(device), strength, d.name).item())
        out[pre + "id_kept"] = scorer.id_sim(rec_id, scorer.id_embed(img_e, landmarks))
        if ref_mask is not None:
            r = scorer.region(img_e, recon, 1 - ref_mask, "ood.")
            out[pre + "ood_lpips"], out[pre + "ood_mse"] = r["ood.lpips"], r["ood.mse"]
        if occ_mask is not None:
            r = scorer.region(img_e, target, occ_mask, "occ.")
            out[pre + "occ_lpips"], out[pre + "occ_mse"] = r["occ.lpips"], r["occ.mse"]
    return out, images


# --------------------------------------------------------------------------------------------
# Evaluation models


def _model_metric(model: Any) -> tuple[torch.nn.Module, str]:
    return model.perceptual, f"model ({type(model.perceptual).__name__}, distilled; not LPIPS)"


def pick_lpips(choice: str, model: Any, device: torch.device) -> tuple[torch.nn.Module, str]:
    """The evaluation LPIPS and its name for the report.

    Args:
        choice: ``auto`` (alex if its weights resolve locally, else squeeze, else the model's own
            metric), ``alex``/``squeeze``/``vgg`` (required) or ``model``.
        model: The :class:`dhr.models.zoo.FaceModel`.
        device: Where the network goes.

    Raises:
        ConfigError: The chosen weights are not available locally, or no metric at all is.
    """
    if choice == "model":
        if model.perceptual is None:
            raise ConfigError(f"--lpips model: model {model.name} has no perceptual metric; use alex or squeeze")
        return _model_metric(model)
    nets = ("alex", "squeeze") if choice == "auto" else (choice,)
    errors = []
    for net in nets:
        try:
            return LPIPS.from_registry(net, download=False).to(device), f"lpips-{net} (v0.1)"
        except DHRError as e:
            errors.append(f"{net}: {str(e).splitlines()[0]}")
    if choice != "auto":
        raise ConfigError(f"LPIPS-{choice} weights are not available locally ({'; '.join(errors)}); "
                          f"run `dhr weights fetch` or set DHR_WEIGHTS_PATH, or use --lpips auto")
    if model.perceptual is None:
        raise ConfigError("no LPIPS weights resolve locally (alex, squeeze) and the model has no perceptual "
                          "metric; supply LPIPS weights (DHR_WEIGHTS_PATH) to benchmark")
    logger.warning("LPIPS alex/squeeze weights not available locally; scoring with the model's distilled metric")
    return _model_metric(model)


def pick_identity(choice: str) -> tuple[Any | None, str]:
    """The identity model (``auto``: dlib if installed; ``dlib``: required; ``none``) and its name.

    Raises:
        ConfigError: ``dlib`` was asked for and is not installed.
    """
    if choice == "none":
        return None, "none"
    try:
        import dlib  # noqa: F401 - optional dependency, probed
    except ImportError:
        if choice == "dlib":
            raise ConfigError("--identity dlib needs dlib: pip install dlib-bin face-recognition-models") from None
        return None, "none (dlib not installed: pip install dlib-bin face-recognition-models)"
    from dhr.faces.identity import DlibIdentity

    return DlibIdentity(), "dlib ResNet descriptor (1 - euclidean distance; same person > 0.4)"


def classifier_keys(classifier: torch.nn.Module | None, resolution: int, device: torch.device) -> frozenset[str]:
    """The attributes ``classifier`` scores (probed on one black image), empty without one."""
    if classifier is None:
        return frozenset()
    probe = torch.zeros(1, 3, resolution, resolution, device=device)
    return frozenset(classifier_scores(classifier, probe))


def pick_edits(model: Any, names: Sequence[str] | None, scored: frozenset[str] | set[str]) -> list[Any]:
    """The directions to edit along: ``names``, else the first two the classifier scores (``scored``),
    topped up with the model's first directions.

    Raises:
        ConfigError: ``names`` given and the model has no directions, or not these.
    """
    directions = model.directions
    if directions is None or len(directions) == 0:
        if names:
            raise ConfigError(f"--edits {list(names)}: model {model.name} has no directions")
        return []
    if names:
        missing = [n for n in names if n not in directions.names()]
        if missing:
            raise ConfigError(f"unknown directions {missing}; model {model.name} has {directions.names()}")
        return [directions[n] for n in names]
    all_names = directions.names()
    first = [n for n in all_names if n in scored]
    chosen = (first + [n for n in all_names if n not in first])[:2]
    return [directions[n] for n in chosen]
