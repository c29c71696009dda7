"""The benchmark protocol: what is compared, with which configs and step budgets.

:class:`BenchConfig` holds the options of a run, :class:`MethodSpec` one benchmarked variant
(a method or a DHR ablation, :func:`parse_ablations`), :func:`scale_steps` and
:func:`method_config` the configs every variant runs with. The inputs are in
:mod:`dhr.bench.inputs`, the metrics in :mod:`dhr.bench.scoring`, the loop in :mod:`dhr.bench.run`.

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

A failure of one image (or of one method on one image) is recorded in ``failures`` with its stage
and reason, and the run continues; see :data:`dhr.bench.scoring.IMAGE_FAILURES` for what counts as
one (a bug in dhr is not one: it stops the run).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dhr.checks import check_choice
from dhr.config import InvertConfig, parse_overrides
from dhr.editing.directions import MAX_STRENGTH
from dhr.errors import ConfigError

__all__ = [
    "ABLATIONS",
    "BENCH_METHODS",
    "EVAL_MAX_RESOLUTION",
    "IDENTITY_CHOICES",
    "LPIPS_CHOICES",
    "PARSER_CHOICES",
    "BenchConfig",
    "MethodSpec",
    "method_config",
    "parse_ablations",
    "parse_methods",
    "scale_steps",
]

BENCH_METHODS: tuple[str, ...] = ("encoder", "optim", "pti", "feature", "dhr")
ABLATIONS: tuple[str, ...] = ("weight-only", "feature-only", "hybrid", "parsing", "no-parsing", "superpixels",
                              "no-superpixels", "feature-res=<R>", "theta=<T>")
EVAL_MAX_RESOLUTION = 256
"""Images are scored at ``min(EVAL_MAX_RESOLUTION, R)`` pixels (see :mod:`dhr.bench.scoring`)."""
LPIPS_CHOICES = ("auto", "alex", "squeeze", "vgg", "model")
IDENTITY_CHOICES = ("auto", "dlib", "none")
PARSER_CHOICES = ("auto", "landmarks", "bisenet", "farl", "none")


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
    """Options of :func:`dhr.bench.run.run_benchmark` (see the module docstring for the protocol).

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
        if not math.isfinite(self.edit_strength) or self.edit_strength == 0 or abs(self.edit_strength) > MAX_STRENGTH:
            raise ConfigError(f"edit_strength={self.edit_strength} must be non-zero and within ±{MAX_STRENGTH:g}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed={self.seed!r} must be an integer >= 0")
        if isinstance(self.qualitative, bool) or not isinstance(self.qualitative, int) or self.qualitative < 0:
            raise ConfigError(f"qualitative={self.qualitative!r} must be an integer >= 0 (images with a sheet)")
        if self.edits is not None:
            object.__setattr__(self, "edits", tuple(self.edits))
            if not self.edits or len(set(self.edits)) != len(self.edits):
                raise ConfigError(f"edits {list(self.edits)} must name directions, each once")
        check_choice(self.lpips, LPIPS_CHOICES, "lpips")
        check_choice(self.identity, IDENTITY_CHOICES, "identity")
        check_choice(self.parser, PARSER_CHOICES, "parser")
        check_choice(self.device, ("cpu", "cuda", "auto"), "device")
        if self.base is not None and not isinstance(self.base, InvertConfig):
            raise ConfigError(f"base must be an InvertConfig, got {type(self.base).__name__}")
        parse_ablations(self.ablations)
        object.__setattr__(self, "overrides", tuple(self.overrides))
        parse_overrides(self.overrides)
        if self.shard is not None:
            i, k = self.shard
            if not (isinstance(i, int) and isinstance(k, int) and k >= 1 and 0 <= i < k):
                raise ConfigError(f"shard={self.shard!r} must be (i, k) with 0 <= i < k, e.g. (0, 2) and (1, 2)")


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
    """``steps * factor`` rounded, at least ``minimum``."""
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
    """``base`` with the nested dict ``over`` merged in (a new dict; inner dicts merged, not replaced)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def method_config(base: InvertConfig, spec: MethodSpec, embed: str) -> InvertConfig:
    """The config one benchmarked variant runs with.

    Args:
        base: The (step-scaled) base config of the run.
        spec: The variant; its nested ``overrides`` are merged over ``base``.
        embed: The shared W+ start of the refining methods (``encoder`` or ``optim``); the embedding
            methods themselves (``encoder``, ``optim``) get ``embed = None``.

    Returns:
        The validated :class:`InvertConfig` of the variant.

    Raises:
        ConfigError: An override names an unknown field or gives a bad value.
    """
    d = _merge(base.to_dict(), spec.overrides)
    d["method"] = spec.method
    d["embed"] = None if spec.method in ("encoder", "optim") else embed
    return InvertConfig.from_dict(d)
