"""The benchmark runner: every method on the same images, seeds, encoder and step rules.

:func:`run_benchmark` loads a model and a folder of aligned faces, inverts every image with every
method (and ablation variant), edits each inversion along two directions, scores everything and
writes ``results.json``, ``report.md`` and the plots (:mod:`dhr.bench.report`).

Protocol (written into the report):

- **Inputs**: the first ``n`` images of the folder in sorted order, resized to the model's
  resolution R (Lanczos) with a warning (refused under ``strict``); with ``occlusion`` each gets one
  seeded synthetic occluder (:func:`dhr.bench.occlusion.occlude`, seed ``seed + index``, object
  patches cut from the *other* images of the set).
- **Fairness**: ``pti``, ``feature`` and ``dhr`` start from the same W+ code (the model's encoder,
  else the same seeded latent optimisation); all optimisation uses seed ``seed``; the step counts
  are those of the base config times ``steps_scale`` (at least 1). The base config is the model's
  recommended one (``model.json`` over the reference defaults: optim 1000, coarse 40, DHR 100 / 50
  weight steps, PTI 350; the bundled ``faces-64`` recommends the same since issue #15) unless ``base`` is given. Every method uses the model's own perceptual metric for its
  losses. One image at a time (batch 1) so time and memory are per image.
- **Scoring**: reconstructions are clamped and rounded to uint8, then evaluated at
  ``min(256, R)`` (antialiased resize when R > 256) against the uint8 input: MSE, PSNR (correct
  4/MSE peak; the reference's 2/MSE as ``psnr_ref``), SSIM, LPIPS (best available backbone,
  named in the report), identity similarity (dlib if installed). Region metrics use the DHR
  mask of the image (the main ``dhr`` run's mask, or one computed with the same coarse inversion
  and segmentation when ``dhr`` is not benchmarked) for *every* method, so all are scored on the
  same pixels: ``in.*`` in-domain, ``ood.*`` out-of-domain. With occlusion: ``occ_in.*`` inside
  the occluder, ``occ_out.*`` outside, and ``iou_ood``: IoU of the method's predicted
  out-of-domain mask with the occluder (methods with a mask only).
- **Editing**: for each inversion and each of two directions at ``edit_strength``:
  ``attr_per_unit`` (classifier score change per unit strength, when the classifier scores an
  attribute of the direction's name), ``id_kept`` (identity similarity inversion vs edit),
  ``ood_lpips``/``ood_mse`` (change inside the DHR out-of-domain mask) and, with occlusion,
  ``occ_lpips``/``occ_mse`` (the edit vs the occluded input inside the occluder).

A failure of one image (or of one method on one image) is recorded in ``failures`` and the run
continues.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import platform
import re
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dhr.checks import check_choice
from dhr.config import InvertConfig
from dhr.errors import ConfigError, DHRError, ImageError

__all__ = [
    "ABLATIONS",
    "BENCH_METHODS",
    "IMAGE_SUFFIXES",
    "BenchConfig",
    "merge_results",
    "MethodSpec",
    "PeakMemory",
    "list_images",
    "parse_ablations",
    "parse_methods",
    "run_benchmark",
    "scale_steps",
]

logger = logging.getLogger(__name__)

BENCH_METHODS: tuple[str, ...] = ("encoder", "optim", "pti", "feature", "dhr")
ABLATIONS: tuple[str, ...] = ("weight-only", "feature-only", "hybrid", "parsing", "no-parsing", "superpixels",
                              "no-superpixels", "feature-res=<R>", "theta=<T>")
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
EVAL_MAX_RESOLUTION = 256
LPIPS_CHOICES = ("auto", "alex", "squeeze", "vgg", "model")
IDENTITY_CHOICES = ("auto", "dlib", "none")
PARSER_CHOICES = ("auto", "landmarks", "bisenet", "farl", "none")

ProgressFn = Callable[[str, dict], None]


@dataclass(frozen=True)
class MethodSpec:
    """One benchmarked variant.

    Attributes:
        label: Row name in the report (``dhr``, ``dhr[no-parsing]``, ...).
        method: The engine method.
        overrides: Nested config overrides (as for :meth:`InvertConfig.from_dict`) on top of the base.
    """

    label: str
    method: str
    overrides: dict = field(default_factory=dict)


@dataclass(frozen=True)
class BenchConfig:
    """Options of :func:`run_benchmark` (see the module docstring for the protocol).

    Attributes:
        data: Folder of aligned face images.
        out: Output folder (created).
        model: Bundled model name or model folder.
        methods: Methods among :data:`BENCH_METHODS`.
        ablations: DHR variants (see :func:`parse_ablations`).
        n: Use the first n images (sorted); None = all.
        occlusion: Paste seeded synthetic occluders and score against their masks.
        steps_scale: Factor on every optimisation step count (base config's x factor, >= 1 step).
        strict: Refuse images that are not already R x R instead of resizing them.
        seed: Seed of the optimisations and the occluders.
        base: Base inversion config (its steps are scaled too); default: the model's recommended config
            (:meth:`dhr.models.zoo.FaceModel.recommended_config`).
        edits: Direction names to edit along (default: the first two the classifier can score,
            else the first two of the model).
        edit_strength: Strength of every edit.
        lpips: Evaluation LPIPS: ``auto`` (alex if its weights resolve locally, else squeeze, else the
            model's own metric), a backbone name, or ``model``.
        identity: ``auto`` (dlib if installed), ``dlib`` (required) or ``none``.
        parser: DHR's face parser: ``auto``/``landmarks`` (landmark parsing when dlib finds the face),
            ``bisenet``, ``farl`` (the reference's; needs the landmarks too) or ``none``.
        trust_parser: Allow the ``farl`` TorchScript file without a registry digest.
        qualitative: Number of images with a qualitative sheet.
        device: ``cpu``, ``cuda``, ``auto``.
        overrides: ``KEY=VALUE`` options applied to the base config before scaling
            (:func:`dhr.config.apply_overrides`), e.g. ``("segment.theta_skin=0.3",)``.
        shard: ``(i, k)``: score only images ``i, i + k, i + 2k, ...`` of the sorted list (occluders and
            seeds are those of the whole run), so k processes or machines can share the work; combine
            the k output folders with :func:`merge_results`. None = every image.
        clean_mask: With ``occlusion``, also segment each face without its occluder (one more coarse
            inversion per image) to count false alarms on the clean face.
        spread: With ``n``, take n images spread evenly over the sorted list instead of the first n.
    """

    data: Path
    out: Path
    model: str = "faces-64"
    methods: tuple[str, ...] = BENCH_METHODS
    ablations: tuple[str, ...] = ()
    n: int | None = None
    occlusion: bool = False
    steps_scale: float = 1.0
    strict: bool = False
    seed: int = 0
    base: InvertConfig | None = None
    edits: tuple[str, ...] | None = None
    edit_strength: float = 2.0
    lpips: str = "auto"
    identity: str = "auto"
    parser: str = "auto"
    trust_parser: bool = False
    qualitative: int = 2
    device: str = "cpu"
    overrides: tuple[str, ...] = ()
    shard: tuple[int, int] | None = None
    clean_mask: bool = True
    spread: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", Path(self.data))
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "methods", tuple(self.methods))
        object.__setattr__(self, "ablations", tuple(self.ablations))
        if not self.methods and not self.ablations:
            raise ConfigError(f"no methods to benchmark; choose from {list(BENCH_METHODS)}")
        for m in self.methods:
            check_choice(m, BENCH_METHODS, "method")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"methods {list(self.methods)} contain duplicates")
        if self.n is not None and self.n < 1:
            raise ConfigError(f"n={self.n} must be >= 1")
        if not (math.isfinite(self.steps_scale) and self.steps_scale > 0):
            raise ConfigError(f"steps_scale={self.steps_scale} must be a finite number > 0")
        if not math.isfinite(self.edit_strength) or self.edit_strength == 0:
            raise ConfigError(f"edit_strength={self.edit_strength} must be finite and non-zero")
        check_choice(self.lpips, LPIPS_CHOICES, "lpips")
        check_choice(self.identity, IDENTITY_CHOICES, "identity")
        check_choice(self.parser, PARSER_CHOICES, "parser")
        check_choice(self.device, ("cpu", "cuda", "auto"), "device")
        if self.base is not None and not isinstance(self.base, InvertConfig):
            raise ConfigError(f"base must be an InvertConfig, got {type(self.base).__name__}")
        parse_ablations(self.ablations)
        object.__setattr__(self, "overrides", tuple(self.overrides))
        from dhr.config import parse_overrides

        parse_overrides(self.overrides)
        if self.shard is not None:
            i, k = self.shard
            if not (isinstance(i, int) and isinstance(k, int) and k >= 1 and 0 <= i < k):
                raise ConfigError(f"shard={self.shard!r} must be (i, k) with 0 <= i < k, e.g. (0, 2) and (1, 2)")


# --------------------------------------------------------------------------------------------
# Method specs, ablations and step budgets


def parse_methods(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"encoder,optim,dhr"`` -> ``("encoder", "optim", "dhr")``; unknown names raise ConfigError."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out = tuple(s.strip() for s in items if s.strip())
    for m in out:
        check_choice(m, BENCH_METHODS, "method")
    return out


_FEATURE_RES = re.compile(r"^feature-res=(\d+)$")
_THETA = re.compile(r"^theta=([0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)$")


def parse_ablations(items: Sequence[str]) -> list[MethodSpec]:
    """DHR ablation variants, each mapped to existing config fields.

    ``weight-only`` (``refine.feature_lr = 0``: f never moves from the generator's feature),
    ``feature-only`` (``refine.tune = "none"``: no weight modulation, masked feature only),
    ``hybrid`` (DHR as configured), ``parsing`` / ``no-parsing`` (``segment.use_parsing``),
    ``superpixels`` / ``no-superpixels`` (``segment.use_superpixels``), ``feature-res=R``
    (``refine.feature_resolution``), ``theta=T`` (``segment.theta``, one τ for every class).
    Items may also be comma-separated lists.

    Raises:
        ConfigError: Unknown or malformed ablation.
    """
    specs: list[MethodSpec] = []
    flat = [s.strip() for item in items for s in str(item).split(",") if s.strip()]
    for a in flat:
        if a == "weight-only":
            o: dict = {"refine": {"feature_lr": 0.0}}
        elif a == "feature-only":
            o = {"refine": {"tune": "none"}}
        elif a == "hybrid":
            o = {}
        elif a in ("parsing", "no-parsing"):
            o = {"segment": {"use_parsing": a == "parsing"}}
        elif a in ("superpixels", "no-superpixels"):
            o = {"segment": {"use_superpixels": a == "superpixels"}}
        elif m := _FEATURE_RES.match(a):
            o = {"refine": {"feature_resolution": int(m.group(1))}}
        elif m := _THETA.match(a):
            o = {"segment": {"theta": float(m.group(1))}}
        else:
            raise ConfigError(f"unknown ablation {a!r}; choose from {list(ABLATIONS)}")
        label = f"dhr[{a}]"
        if any(s.label == label for s in specs):
            raise ConfigError(f"ablation {a!r} given twice")
        specs.append(MethodSpec(label, "dhr", o))
    return specs


def _scaled(steps: int, factor: float, minimum: int = 1) -> int:
    return max(minimum, round(steps * factor))


def scale_steps(config: InvertConfig, factor: float) -> InvertConfig:
    """Multiplies every optimisation step count by ``factor`` (at least 1 step; weight steps >= 0).

    Scaled: ``optim.steps``, ``coarse.steps``, ``refine.steps``, ``refine.weight_steps``, ``pti.steps``.
    """
    r = config.refine
    return dataclasses.replace(
        config,
        optim=dataclasses.replace(config.optim, steps=_scaled(config.optim.steps, factor)),
        coarse=dataclasses.replace(config.coarse, steps=_scaled(config.coarse.steps, factor)),
        refine=dataclasses.replace(r, steps=_scaled(r.steps, factor),
                                   weight_steps=_scaled(r.weight_steps, factor, 0 if r.weight_steps == 0 else 1)),
        pti=dataclasses.replace(config.pti, steps=_scaled(config.pti.steps, factor)),
    )


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def _method_config(base: InvertConfig, spec: MethodSpec, embed: str) -> InvertConfig:
    d = _merge(base.to_dict(), spec.overrides)
    d["method"] = spec.method
    d["embed"] = None if spec.method in ("encoder", "optim") else embed
    return InvertConfig.from_dict(d)


# --------------------------------------------------------------------------------------------
# Inputs


def list_images(folder: Path, n: int | None = None, *, spread: bool = False) -> list[Path]:
    """Image files of ``folder`` (sorted, not recursive), the first ``n`` (``spread``: ``n`` spread
    evenly over the sorted list, e.g. over UTKFace's age-first names).

    Raises:
        ImageError: Missing folder, not a folder, or no image file in it.
    """
    folder = Path(folder)
    if not folder.exists():
        raise ImageError(f"data folder {folder} does not exist; pass a folder of aligned face images")
    if not folder.is_dir():
        raise ImageError(f"--data {folder} is not a folder; pass a folder of aligned face images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ImageError(f"no images in {folder} (looked for {', '.join(IMAGE_SUFFIXES)}); "
                         "put aligned face crops there")
    if n is None or n >= len(files):
        return files
    if spread:
        return [files[i] for i in np.linspace(0, len(files) - 1, n).round().astype(int)]
    return files[:n]


@dataclass
class _Item:
    name: str
    pixels: np.ndarray  # (R, R, 3) uint8 at model resolution (clean)
    original_size: tuple[int, int]
    notes: list[str]
    landmarks: np.ndarray | None = None  # (68, 2) at model resolution


def _load_item(path: Path, R: int, strict: bool) -> _Item:
    from PIL import Image

    from dhr.io.image import load_image

    photo = load_image(path)
    px = photo.pixels
    h, w = px.shape[:2]
    notes = list(getattr(photo, "notes", ()))
    if (h, w) != (R, R):
        if strict:
            raise ImageError(f"{path.name} is {w}x{h}, the model needs {R}x{R}; under --strict images are not "
                             f"resized (resize them yourself or drop --strict)")
        im = Image.fromarray(px)
        if h != w:
            side = min(h, w)
            left, top = (w - side) // 2, (h - side) // 2
            im = im.crop((left, top, left + side, top + side))
            notes.append(f"not square ({w}x{h}): centre-cropped to {side}x{side}")
        im = im.resize((R, R), Image.LANCZOS)
        px = np.asarray(im, dtype=np.uint8).copy()
        notes.append(f"resized from {w}x{h} to {R}x{R}")
        logger.warning("benchmark: %s is %dx%d; resized to the model's %dx%d (use --strict to refuse)",
                       path.name, w, h, R, R)
    return _Item(path.name, px, (w, h), notes)


def _detect_landmarks(item: _Item) -> None:
    """Landmarks of the clean crop at model resolution (upscaled for the detector)."""
    from PIL import Image

    from dhr.faces.detect import crop_landmarks

    R = item.pixels.shape[0]
    up = max(1, math.ceil(256 / R))
    big = np.asarray(Image.fromarray(item.pixels).resize((R * up, R * up), Image.BICUBIC))
    face = crop_landmarks(big, fallback="none")
    if face is None:
        item.notes.append("no face detected: DHR segmentation without a face parser")
        return
    item.landmarks = np.asarray(face.landmarks, dtype=np.float64) / up


FRAMING_SAMPLE = 8
"""Images whose landmarks are detected only for the framing check (when DHR's parser did not need them)."""


def _check_framing(items: Sequence[_Item], model: Any) -> dict[str, Any]:
    """Compares the crops' framing with the model's alignment template; warns on a mismatch.

    The crops are used as given (only resized), so a framing the model was not trained on (FFHQ's
    looser crops for ``faces-64``) silently gives bad reconstructions. Uses the landmarks found for
    DHR's parser, else detects them on the first :data:`FRAMING_SAMPLE` images.

    Returns:
        ``{"template", "checked", "median_scale", "median_shift", "matches", "warning"}`` for the report.
    """
    from dhr.faces.align import AlignTemplate
    from dhr.faces.framing import framing_of, framing_warning

    template = (AlignTemplate.from_dict(dict(model.template)) if model.template
                else AlignTemplate.ffhq(model.resolution))
    with_lm = [it for it in items if it.landmarks is not None]
    if not with_lm:
        for it in items[:FRAMING_SAMPLE]:
            try:
                _detect_landmarks(it)
            except (DHRError, ImportError) as e:
                logger.info("benchmark: framing check skipped for %s: %s", it.name, e)
        with_lm = [it for it in items if it.landmarks is not None]
    framings = [framing_of(it.landmarks, it.pixels.shape[0], template) for it in with_lm]
    warning = framing_warning(framings, template, what="the benchmark images")
    if warning:
        logger.warning("benchmark: %s", warning)
    return {"template": template.name, "checked": len(framings),
            "median_scale": float(np.median([f.scale for f in framings])) if framings else None,
            "median_shift": float(np.median([f.shift for f in framings])) if framings else None,
            "matches": None if not framings else warning is None, "warning": warning}


# --------------------------------------------------------------------------------------------
# Measurement helpers


def _malloc_trim() -> None:
    """Returns freed heap pages to the OS (glibc), so the resident size reflects live memory."""
    import ctypes
    import ctypes.util

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
    peak (``"tracemalloc"``; does not see torch's own allocator).
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


def _quantize(x: torch.Tensor) -> torch.Tensor:
    from dhr.io.image import tensor_to_uint8, uint8_to_tensor

    return uint8_to_tensor(tensor_to_uint8(x.detach().float().cpu()))


def _to_eval(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _mask_to_eval(m: torch.Tensor, size: int) -> torch.Tensor:
    if m.shape[-1] == size:
        return m
    return (F.interpolate(m, size=(size, size), mode="area") >= 0.5).float()


def _iou(pred: torch.Tensor, gt: torch.Tensor) -> float:
    p, g = pred.bool(), gt.bool()
    union = (p | g).sum().item()
    return float((p & g).sum().item() / union) if union else math.nan


def _false_alarm(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """Fraction of the pixels outside the ground-truth region that ``pred`` marks."""
    p, g = pred.bool(), gt.bool()
    clean = (~g).sum().item()
    return float((p & ~g).sum().item() / clean) if clean else math.nan


def _finite(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(float(v)) else None


class _Scorer:
    """Reconstruction and editing metrics with the benchmark's evaluation models."""

    def __init__(self, lpips: torch.nn.Module, identity: object | None, classifier: torch.nn.Module | None,
                 eval_size: int) -> None:
        self.lpips = lpips
        self.identity = identity
        self.classifier = classifier
        self.size = eval_size
        tensors = [*lpips.parameters(), *lpips.buffers()]
        self.device = tensors[0].device if tensors else torch.device("cpu")

    def id_embed(self, x: torch.Tensor, landmarks: np.ndarray | None) -> torch.Tensor | None:
        if self.identity is None:
            return None
        return self.identity.embed(x[0], landmarks)

    def id_sim(self, a: torch.Tensor | None, b: torch.Tensor | None) -> float | None:
        if a is None or b is None or self.identity is None:
            return None
        return _finite(self.identity.similarity(a, b))

    def region(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None, prefix: str) -> dict[str, float | None]:
        from dhr.metrics.image import masked_lpips, mse, psnr_from_mse, ssim

        xe, ye = _to_eval(x, self.size), _to_eval(y, self.size)
        me = None if mask is None else _mask_to_eval(mask, self.size)
        e = mse(xe, ye, mask=me)
        dev = self.device
        lp = masked_lpips(self.lpips, xe.to(dev), ye.to(dev), mask=None if me is None else me.to(dev))
        out = {
            f"{prefix}mse": _finite(e.item()),
            f"{prefix}psnr": _finite(psnr_from_mse(e).item()),
            f"{prefix}ssim": _finite(ssim(xe, ye, mask=me).item()),
            f"{prefix}lpips": _finite(lp.item()),
        }
        if not prefix:
            out["psnr_ref"] = _finite(psnr_from_mse(e, "reference").item())
        return out


# --------------------------------------------------------------------------------------------
# Evaluation models


def _pick_lpips(choice: str, model: Any, device: torch.device) -> tuple[torch.nn.Module, str]:
    from dhr.metrics.lpips import LPIPS

    if choice == "model":
        if model.perceptual is None:
            raise ConfigError(f"--lpips model: model {model.name} has no perceptual metric; use alex or squeeze")
        return model.perceptual, f"model ({type(model.perceptual).__name__}, distilled; not LPIPS)"
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
    return model.perceptual, f"model ({type(model.perceptual).__name__}, distilled; not LPIPS)"


def _pick_identity(choice: str) -> tuple[object | None, str]:
    if choice == "none":
        return None, "none"
    try:
        import dlib  # noqa: F401
    except ImportError:
        if choice == "dlib":
            raise ConfigError("--identity dlib needs dlib: pip install dlib-bin face-recognition-models") from None
        return None, "none (dlib not installed: pip install dlib-bin face-recognition-models)"
    from dhr.faces.identity import DlibIdentity

    return DlibIdentity(), "dlib ResNet descriptor (1 - euclidean distance; same person > 0.4)"


def _pick_edits(model: Any, names: Sequence[str] | None, classifier_keys: set[str]) -> list[Any]:
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
    scored = [n for n in all_names if n in classifier_keys]
    chosen = (scored + [n for n in all_names if n not in scored])[:2]
    return [directions[n] for n in chosen]


# --------------------------------------------------------------------------------------------
# The runner


def _calibration_note(model: Any, base: InvertConfig) -> str:
    """Says whether the model's thresholds were calibrated with this benchmark's coarse budget."""
    cal = ((model.manifest.get("training") or {}).get("calibration") or {}) if model.manifest else {}
    steps = cal.get("coarse_steps")
    if steps is None:
        return "the model.json records no calibration budget (thresholds as shipped)"
    same = "the same budget" if steps == base.coarse.steps else "NOT the same budget"
    return (f"segmentation thresholds calibrated with {steps} coarse steps on {cal.get('n', '?')} training crops; "
            f"this benchmark's coarse inversion runs {base.coarse.steps}: {same}")


def _reference_domain(G, target, perceptual, config: InvertConfig, parsing):
    """DHR's mask of an image (coarse inversion + segmentation) when DHR itself was not benchmarked."""
    from dhr.embed.optimize import optimize_latent
    from dhr.segmentation.domain import segment

    coarse, maps = optimize_latent(G, target, perceptual, config.coarse)
    return segment(target[0], coarse[0].image, list(maps[0]), parsing=parsing, config=config.segment)


def run_benchmark(config: BenchConfig, *, progress: ProgressFn | None = None, command: str | None = None) -> dict:
    """Runs the benchmark and writes ``results.json``, ``report.md`` and plots into ``config.out``.

    Args:
        config: See :class:`BenchConfig`.
        progress: Optional ``progress(event, info)`` (events ``image``, ``method``, ``done``).
        command: The command line, recorded in the report.

    Returns:
        The results dict (as written to ``results.json``).

    Raises:
        ConfigError: Bad options, unknown model/method/ablation/direction, unavailable metric weights.
        ImageError: Missing or empty data folder; under ``strict`` an image of the wrong size.
    """
    from dhr.bench.occlusion import occlude
    from dhr.bench.report import write_report
    from dhr.editing import apply_edits
    from dhr.engine import invert, render
    from dhr.io.image import uint8_to_tensor
    from dhr.models.zoo import load_model

    cfg = config
    files = list_images(cfg.data, cfg.n, spread=cfg.spread)
    specs = [MethodSpec(m, m) for m in cfg.methods] + parse_ablations(cfg.ablations)
    if cfg.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
    model = load_model(cfg.model, device=device)
    G = model.generator
    R = G.resolution
    eval_size = min(EVAL_MAX_RESOLUTION, R)
    base_source = "given" if cfg.base is not None else ("the model's recommended config (model.json)"
                                                          if model.manifest.get("config") else "reference defaults")
    if cfg.overrides:
        base_source += " with " + ", ".join(cfg.overrides)
    from dhr.config import apply_overrides

    base = scale_steps(apply_overrides(cfg.base or model.recommended_config(), cfg.overrides), cfg.steps_scale)
    embed = "encoder" if model.encoder is not None else "optim"
    configs = {s.label: _method_config(base, s, embed) for s in specs}  # validates every override up front
    perceptual = model.perceptual
    if perceptual is None:
        from dhr.metrics.lpips import LPIPS

        perceptual = LPIPS.from_registry("alex", download=False).to(device)
    loss_name = type(perceptual).__name__
    from dhr.faces.parsing import load_parser
    from dhr.engine import net_name
    from dhr.pipeline import resolve_coarse_perceptual

    coarse_perceptual = resolve_coarse_perceptual(base.coarse_perceptual, model, perceptual, device)
    parser_name = "landmarks" if cfg.parser == "auto" else cfg.parser
    face_parser = load_parser(parser_name, device=device, trust=cfg.trust_parser)
    lpips_metric, lpips_name = _pick_lpips(cfg.lpips, model, device)
    identity, identity_name = _pick_identity(cfg.identity)
    classifier = model.classifier
    classifier_keys: set[str] = set()
    if classifier is not None:
        from dhr.metrics.editing import classifier_scores

        probe = torch.zeros(1, 3, R, R, device=device)
        classifier_keys = set(classifier_scores(classifier, probe))
    edits = _pick_edits(model, cfg.edits, classifier_keys)
    scorer = _Scorer(lpips_metric, identity, classifier, eval_size)
    mem = PeakMemory(device)
    if cfg.strict:
        # Refuse up front, before any work, when an image would need resizing.
        from PIL import Image

        for f in files:
            try:
                with Image.open(f) as im:
                    size = im.size
            except OSError:
                continue  # unreadable files are recorded as failures below
            if size != (R, R):
                raise ImageError(f"{f.name} is {size[0]}x{size[1]}, the model needs {R}x{R}; under --strict images "
                                 "are not resized (resize them yourself or drop --strict)")

    failures: list[dict] = []
    items: list[_Item] = []
    for f in files:
        try:
            items.append(_load_item(f, R, cfg.strict))
        except (DHRError, OSError) as e:
            if cfg.shard is None or cfg.shard[0] == 0:  # every shard loads every file; shard 0 reports
                failures.append({"image": f.name, "method": None, "stage": "load",
                                 "error": f"{type(e).__name__}: {e}"})
            logger.warning("benchmark: %s failed to load: %s", f.name, e)
    mine = set(range(len(items))) if cfg.shard is None else {j for j in range(len(items)) if j % cfg.shard[1] == cfg.shard[0]}
    for j, it in enumerate(items):
        if j not in mine:
            continue
        if any(s.label.startswith("dhr") for s in specs) and parser_name in ("landmarks", "farl"):
            try:
                _detect_landmarks(it)
            except (DHRError, ImportError) as e:
                it.notes.append(f"landmark detection failed ({type(e).__name__}): no face parser")
        elif any(s.method == "dhr" for s in specs):
            it.notes.append(f"face parser {parser_name} (no landmarks needed)" if face_parser is not None
                            else "face parser disabled (--parser none)")
    framing = _check_framing([items[j] for j in sorted(mine)], model)

    results: list[dict] = []
    sheets: list[dict] = []
    order = sorted(range(len(specs)), key=lambda k: 0 if specs[k].label == "dhr" else 1)
    for idx, it in enumerate(items):
        if idx not in mine:
            continue
        t_img = time.perf_counter()
        rec: dict[str, Any] = {"image": it.name, "original_size": list(it.original_size), "notes": it.notes,
                               "methods": {}}
        try:
            clean = it.pixels
            occ = None
            if cfg.occlusion:
                sources = [o.pixels for j, o in enumerate(items) if j != idx]
                occ = occlude(clean, cfg.seed + idx, sources=sources)
                rec["occluder"] = {"shape": occ.shape, "fill": occ.fill, "seed": occ.seed, **occ.params}
                pixels = occ.image
            else:
                pixels = clean
            target = uint8_to_tensor(pixels)[None]
            target_dev = target.to(device)
            occ_mask = None if occ is None else torch.from_numpy(occ.mask).float()[None, None]
            parsing = None
            if face_parser is not None and (it.landmarks is not None or parser_name == "bisenet"):
                parsing = face_parser.parse(target_dev[0], it.landmarks)
            tgt_id = scorer.id_embed(target, it.landmarks)
            if progress is not None:
                progress("image", {"index": idx, "total": len(items), "image": it.name})
        except Exception as e:  # noqa: BLE001 - one image's failure is recorded; the benchmark goes on
            failures.append({"image": it.name, "method": None, "stage": "prepare", "error": f"{type(e).__name__}: {e}"})
            logger.warning("benchmark: %s failed before inversion: %s", it.name, e)
            continue
        ref_mask: torch.Tensor | None = None
        ref_source = None
        sheet = {"image": it.name, "input": pixels, "rows": []} if len(sheets) < cfg.qualitative else None
        invs: dict[str, Any] = {}
        for k in order:
            spec = specs[k]
            mcfg = configs[spec.label]
            if progress is not None:
                progress("method", {"index": idx, "image": it.name, "method": spec.label})
            try:
                with mem.measure():
                    t0 = time.perf_counter()
                    inv = invert(G, target_dev, config=mcfg, perceptual=perceptual,
                                 coarse_perceptual=coarse_perceptual, encoder=model.encoder,
                                 parsing=[parsing if mcfg.segment.use_parsing else None] if spec.method == "dhr"
                                 else None)[0]
                    elapsed = time.perf_counter() - t0
                invs[spec.label] = inv
                rec["methods"][spec.label] = {"time_s": elapsed, "peak_mem_mb": _finite(mem.peak_mb),
                                              "timings": inv.meta.get("timings", {})}
                if spec.label == "dhr" and inv.domain is not None:
                    ref_mask, ref_source = inv.domain.mask[None].float().cpu(), "dhr"
            except Exception as e:  # noqa: BLE001 - recorded, the other methods and images go on
                failures.append({"image": it.name, "method": spec.label, "stage": "invert",
                                 "error": f"{type(e).__name__}: {e}"})
                logger.warning("benchmark: %s on %s failed: %s", spec.label, it.name, e)
        if not invs:
            results.append(rec)
            continue
        if ref_mask is None:
            try:
                dom = _reference_domain(G, target_dev, coarse_perceptual, configs.get("dhr", _method_config(
                    base, MethodSpec("dhr", "dhr"), embed)), parsing)
                ref_mask, ref_source = dom.mask[None].float().cpu(), "coarse+segment"
            except Exception as e:  # noqa: BLE001 - region metrics are then skipped for this image
                failures.append({"image": it.name, "method": None, "stage": "reference_mask",
                                 "error": f"{type(e).__name__}: {e}"})
        rec["reference_mask"] = {"source": ref_source,
                                 "in_domain_fraction": None if ref_mask is None else float(ref_mask.mean())}
        if occ_mask is not None and ref_mask is not None:
            rec["reference_mask"]["iou_ood"] = _finite(_iou(1 - ref_mask, occ_mask))
            rec["reference_mask"]["ood_false_alarm"] = _finite(_false_alarm(1 - ref_mask, occ_mask))
            # False alarms on the same face without its occluder: DHR's segmentation of the clean crop.
            if cfg.clean_mask:
                try:
                    clean_t = uint8_to_tensor(it.pixels)[None].to(device)
                    clean_parsing = None
                    if face_parser is not None and (it.landmarks is not None or parser_name == "bisenet"):
                        clean_parsing = face_parser.parse(clean_t[0], it.landmarks)
                    dcfg = configs.get("dhr", _method_config(base, MethodSpec("dhr", "dhr"), embed))
                    clean_dom = _reference_domain(G, clean_t, coarse_perceptual, dcfg,
                                                  clean_parsing if dcfg.segment.use_parsing else None)
                    rec["reference_mask"]["clean_ood_fraction"] = float(1 - clean_dom.mask.float().mean())
                except Exception as e:  # noqa: BLE001 - recorded; the occluded scores stand
                    failures.append({"image": it.name, "method": None, "stage": "clean_mask",
                                     "error": f"{type(e).__name__}: {e}"})
        for spec in specs:
            if spec.label not in invs:
                continue
            inv = invs[spec.label]
            entry = rec["methods"][spec.label]
            try:
                recon = _quantize(inv.image[None])
                m = scorer.region(recon, target, None, "")
                rec_id = scorer.id_embed(recon, it.landmarks)
                m["id"] = scorer.id_sim(tgt_id, rec_id)
                if ref_mask is not None:
                    m.update(scorer.region(recon, target, ref_mask, "in."))
                    m.update(scorer.region(recon, target, 1 - ref_mask, "ood."))
                if occ_mask is not None:
                    m.update(scorer.region(recon, target, occ_mask, "occ_in."))
                    m.update(scorer.region(recon, target, 1 - occ_mask, "occ_out."))
                    if inv.domain is not None:
                        ood_pred = 1 - inv.domain.mask[None].cpu()
                        m["iou_ood"] = _finite(_iou(ood_pred, occ_mask))
                        m["ood_false_alarm"] = _finite(_false_alarm(ood_pred, occ_mask))
                if inv.weight_delta:
                    m["delta_norm"] = _finite(math.sqrt(sum(float(d.detach().float().pow(2).sum())
                                                            for d in inv.weight_delta.values())))
                entry["metrics"] = m
                row = {"method": spec.label, "inversion": recon, "edits": [],
                       "mask": (inv.domain.mask[None].cpu() if inv.domain is not None else ref_mask)}
                ed: dict[str, float | None] = {}
                for d in edits:
                    ws_e = apply_edits(inv.ws[None].to(device), [(d, cfg.edit_strength)])[0]
                    img_e = _quantize(render(G, inv, ws_e)[None])
                    row["edits"].append((f"{d.name} {cfg.edit_strength:+g}", img_e))
                    pre = f"edit.{d.name}."
                    if classifier is not None and d.name in classifier_keys:
                        from dhr.metrics.editing import attribute_change

                        ed[pre + "attr_per_unit"] = _finite(attribute_change(
                            classifier, recon.to(device), img_e.to(device), cfg.edit_strength, d.name).item())
                    ed[pre + "id_kept"] = scorer.id_sim(rec_id, scorer.id_embed(img_e, it.landmarks))
                    if ref_mask is not None:
                        r = scorer.region(img_e, recon, 1 - ref_mask, "ood.")
                        ed[pre + "ood_lpips"], ed[pre + "ood_mse"] = r["ood.lpips"], r["ood.mse"]
                    if occ_mask is not None:
                        r = scorer.region(img_e, target, occ_mask, "occ.")
                        ed[pre + "occ_lpips"], ed[pre + "occ_mse"] = r["occ.lpips"], r["occ.mse"]
                entry["edits"] = ed
                if sheet is not None:
                    sheet["rows"].append(row)
            except Exception as e:  # noqa: BLE001 - recorded, the benchmark goes on
                failures.append({"image": it.name, "method": spec.label, "stage": "score",
                                 "error": f"{type(e).__name__}: {e}"})
                logger.warning("benchmark: scoring %s on %s failed: %s", spec.label, it.name, e)
        if sheet is not None and sheet["rows"]:
            sheet["mask_label"] = "occluder" if occ_mask is not None else "DHR mask"
            sheet["occluder"] = occ_mask
            sheets.append(sheet)
        rec["wall_s"] = time.perf_counter() - t_img
        results.append(rec)
        logger.info("benchmark: %s done in %.1f s", it.name, rec["wall_s"])

    steps = {"optim": base.optim.steps, "coarse": base.coarse.steps, "refine": base.refine.steps,
             "refine_weight": base.refine.weight_steps, "pti": base.pti.steps}
    out = {
        "benchmark": {
            "data": str(cfg.data), "model": model.name, "model_resolution": R, "methods": [s.label for s in specs],
            "n_requested": cfg.n, "spread": cfg.spread, "n_images": len(files), "occlusion": cfg.occlusion, "steps_scale": cfg.steps_scale,
            "steps": steps, "seed": cfg.seed, "strict": cfg.strict,
            "shard": None if cfg.shard is None else list(cfg.shard),
            "overrides": list(cfg.overrides),
            "edits": [{"direction": d.name, "strength": cfg.edit_strength} for d in edits],
            "configs": {label: c.to_dict() for label, c in configs.items()},
        },
        "protocol": {
            "eval_resolution": eval_size,
            "quantisation": "clamp to [-1, 1], round to uint8, back to [-1, 1]; antialiased bilinear resize to the "
                            "evaluation resolution when the model is larger",
            "psnr": "10 log10(4 / MSE) (peak-to-peak 2 of [-1, 1]); psnr_ref = 10 log10(2 / MSE) as the reference code",
            "ssim": "Gaussian 11x11, sigma 1.5, K1 0.01, K2 0.03, L 2, mean over the full map",
            "lpips": lpips_name,
            "identity": identity_name,
            "identity_landmarks": "the input's landmarks for every reconstruction and edit of that image "
                                  "(dlib detection only when none were found)",
            "loss_perceptual": loss_name,
            "coarse_perceptual": f"{net_name(coarse_perceptual)} (coarse inversion, optimisation embedding, error "
                                 f"maps; coarse_perceptual={base.coarse_perceptual!r})",
            "parsing": ("none (--parser none)" if face_parser is None else
                        f"{parser_name} parser on the (occluded) input crop" + (
                            "; dlib landmarks detected on the clean (unoccluded) crop, upscaled to >= 256 px (the "
                            "alignment is given); no parser where no face is found"
                            if parser_name in ("landmarks", "farl") else "")),
            "embedding": f"pti/feature/dhr start from the same W+ code ({embed})",
            "step_budget": f"step counts of the base config ({base_source}) x {cfg.steps_scale} (>= 1): " +
                           ", ".join(f"{k} {v}" for k, v in steps.items()),
            "regions": "in./ood. use the DHR mask of the image for every method (1 = in-domain)",
            "calibration": _calibration_note(model, base),
            "memory": {"cuda_max_allocated": "torch.cuda.max_memory_allocated during invert()",
                       "rss_hwm": "extra peak resident memory of the process during invert() (Linux VmHWM "
                                  "after clear_refs, minus VmRSS before, after malloc_trim); includes "
                                  "one-off allocations of the first run",
                       "tracemalloc": "tracemalloc peak (Python allocations only; torch tensors not seen)",
                       }[mem.method],
            "time": "wall-clock seconds of invert() per image (batch 1)",
        },
        "environment": {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
                        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()},
        "framing": framing,
        "images": results,
        "failures": failures,
    }
    from dhr.bench.report import summarize, verdicts

    labels = [s.label for s in specs]
    out["summary"] = summarize(results, labels)
    out["verdicts"] = verdicts(results, labels, reference="dhr", seed=cfg.seed)
    if command is not None:
        out["benchmark"]["command"] = command
    write_report(out, Path(cfg.out), sheets=sheets)
    if progress is not None:
        progress("done", {"images": len(results), "failures": len(failures)})
    return out


def merge_results(folders: Sequence[str | Path], out: str | Path) -> dict:
    """Combines the output folders of a sharded benchmark (``shard=(i, k)`` for every i) into one report.

    The shards must come from the same benchmark (same data, model, methods, steps, seed, ...); each
    shard index must appear once and all k must be present. Images are put back in the sorted order of
    the whole run, summaries and verdicts are recomputed over all of them, and the shards'
    qualitative sheets are copied.

    Returns:
        The merged results dict (as written to ``out/results.json``).

    Raises:
        ConfigError: Missing or unreadable ``results.json``, shards of different benchmarks, a shard given
            twice or missing.
    """
    import json
    import shutil

    from dhr.bench.report import summarize, verdicts, write_report

    loaded = []
    for f in folders:
        path = Path(f) / "results.json"
        try:
            loaded.append((Path(f), json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: cannot read a benchmark result ({e}); run dhr bench --shard I/K into that "
                              "folder first") from None
    if not loaded:
        raise ConfigError("nothing to merge: give the output folders of the shards")

    def identity(r: dict) -> dict:
        b = dict(r["benchmark"])
        for k in ("shard", "command"):
            b.pop(k, None)
        return b

    ref = identity(loaded[0][1])
    seen: dict[int, Path] = {}
    counts = set()
    for folder, r in loaded:
        shard = r["benchmark"].get("shard")
        if shard is None:
            raise ConfigError(f"{folder} holds an unsharded benchmark; only --shard I/K outputs can be merged")
        if identity(r) != ref:
            diff = sorted(k for k in set(ref) | set(identity(r)) if ref.get(k) != identity(r).get(k))
            raise ConfigError(f"{folder} is a different benchmark from {loaded[0][0]} (differs in {diff})")
        i, k = shard
        counts.add(k)
        if i in seen:
            raise ConfigError(f"shard {i}/{k} is given twice: {seen[i]} and {folder}")
        seen[i] = folder
    if len(counts) != 1:
        raise ConfigError(f"shards of different counts {sorted(counts)} cannot be merged")
    (k,) = counts
    missing = sorted(set(range(k)) - set(seen))
    if missing:
        raise ConfigError(f"shards {missing} of {k} are missing; run them with --shard I/{k}")
    first = loaded[0][1]
    images = sorted((img for _, r in loaded for img in r["images"]), key=lambda d: d["image"])
    failures = [f for _, r in loaded for f in r["failures"]]
    labels = first["benchmark"]["methods"]
    merged = {key: first[key] for key in first if key not in ("images", "failures", "summary", "verdicts", "files")}
    merged["benchmark"] = {**first["benchmark"], "shard": None,
                           "merged_from": [str(seen[i]) for i in range(k)]}
    commands = [r["benchmark"].get("command") for _, r in sorted(loaded, key=lambda fr: fr[1]["benchmark"]["shard"][0])]
    if any(commands):
        merged["benchmark"]["command"] = "\n".join(c for c in commands if c)
    merged["environment"] = {**first["environment"], "shards": k}
    merged["images"], merged["failures"] = images, failures
    merged["summary"] = summarize(images, labels)
    merged["verdicts"] = verdicts(images, labels, reference="dhr", seed=first["benchmark"]["seed"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    extra: dict[str, Path] = {}
    for i in range(k):
        for q in sorted(seen[i].glob("qualitative_*.png")):
            dst = out / f"qualitative_s{i}_{q.stem.split('_')[-1]}.png"
            shutil.copyfile(q, dst)
            extra[dst.stem] = dst
    write_report(merged, out, extra=extra)
    return merged
