"""The benchmark runner: every method on the same images, seeds, encoder and step rules.

:func:`run_benchmark` loads a model and a folder of aligned faces, inverts every image with every
method (and ablation variant), edits each inversion along two directions, scores everything and
writes ``results.json``, ``report.md`` and the plots (:mod:`dhr.bench.report`). The protocol it
follows (inputs, fairness, scoring, editing) is written in :mod:`dhr.bench.protocol`; the inputs
are prepared by :mod:`dhr.bench.inputs` and measured by :mod:`dhr.bench.scoring`. Shards of one
run are combined by :func:`dhr.bench.merge.merge_results`.

A failure of one image (or of one method on one image) is recorded in ``failures`` with its stage
(``load``, ``prepare``, ``invert``, ``reference_mask``, ``clean_mask``, ``score``) and reason,
and the run continues (:data:`dhr.bench.scoring.IMAGE_FAILURES`); a bug in dhr stops it.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dhr.bench.inputs import (
    IMAGE_SUFFIXES,
    BenchImage,
    check_framing,
    check_sizes,
    detect_landmarks,
    list_images,
    load_bench_image,
)
from dhr.bench.merge import merge_results
from dhr.bench.occlusion import occlude
from dhr.bench.protocol import (
    ABLATIONS,
    BENCH_METHODS,
    EVAL_MAX_RESOLUTION,
    BenchConfig,
    MethodSpec,
    method_config,
    parse_ablations,
    parse_methods,
    scale_steps,
)
from dhr.bench.report import summarize, verdicts, write_report
from dhr.bench.scoring import (
    IMAGE_FAILURES,
    MEMORY_METHODS,
    PeakMemory,
    Scorer,
    classifier_keys,
    false_alarm,
    finite,
    iou,
    pick_edits,
    pick_identity,
    pick_lpips,
    quantize,
    score_edits,
    score_inversion,
)
from dhr.config import InvertConfig, apply_overrides
from dhr.devices import resolve_device
from dhr.threads import fit_threads_to_model
from dhr.embed.optimize import optimize_latent
from dhr.engine import invert, net_name, require_finite
from dhr.errors import DHRError
from dhr.faces.parsing import load_parser
from dhr.io.image import uint8_to_tensor
from dhr.metrics.lpips import LPIPS
from dhr.models.zoo import load_model
from dhr.pipeline import resolve_coarse_perceptual
from dhr.segmentation.domain import segment

__all__ = [
    "ABLATIONS",
    "BENCH_METHODS",
    "IMAGE_SUFFIXES",
    "BenchConfig",
    "MethodSpec",
    "PeakMemory",
    "list_images",
    "merge_results",
    "parse_ablations",
    "parse_methods",
    "run_benchmark",
    "scale_steps",
]

logger = logging.getLogger(__name__)

ProgressFn = Callable[[str, dict], None]


@dataclass
class _Setup:
    """What is fixed before the first image: the model, the variants and their configs, the evaluators."""

    cfg: BenchConfig
    device: torch.device
    model: Any
    specs: list[MethodSpec]
    base: InvertConfig
    base_source: str
    embed: str
    configs: dict[str, InvertConfig]
    perceptual: torch.nn.Module
    coarse_perceptual: torch.nn.Module
    parser_name: str
    face_parser: Any
    scorer: Scorer
    lpips_name: str
    identity_name: str
    edits: list[Any]
    mem: PeakMemory
    failures: list[dict] = field(default_factory=list)

    @property
    def dhr_config(self) -> InvertConfig:
        """The config of the main ``dhr`` run (also when ``dhr`` itself is not benchmarked)."""
        return self.configs.get("dhr") or method_config(self.base, MethodSpec("dhr", "dhr"), self.embed)

    def fail(self, image: str, method: str | None, stage: str, error: BaseException) -> None:
        """Records one failure (the run goes on)."""
        self.failures.append({"image": image, "method": method, "stage": stage,
                              "error": f"{type(error).__name__}: {error}"})
        logger.warning("benchmark: %s%s failed at %s: %s", image, f" ({method})" if method else "", stage, error)


def _setup(cfg: BenchConfig) -> _Setup:
    """Loads the model and the evaluation models and validates every variant's config up front."""
    device = resolve_device(cfg.device)
    model = load_model(cfg.model, device=device)
    # one thread for a small model when `dhr bench` chose the count (a no-op for library callers)
    fit_threads_to_model(getattr(model.generator.config, "synthesis_macs", float("inf")))
    specs = [MethodSpec(m, m) for m in cfg.methods] + parse_ablations(cfg.ablations)
    base_source = "given" if cfg.base is not None else ("the model's recommended config (model.json)"
                                                          if model.manifest.get("config") else "reference defaults")
    if cfg.overrides:
        base_source += " with " + ", ".join(cfg.overrides)
    base = scale_steps(apply_overrides(cfg.base or model.recommended_config(), cfg.overrides), cfg.steps_scale)
    embed = "encoder" if model.encoder is not None else "optim"
    configs = {s.label: method_config(base, s, embed) for s in specs}
    perceptual = model.perceptual
    if perceptual is None:
        perceptual = LPIPS.from_registry("alex", download=False).to(device)
    parser_name = "landmarks" if cfg.parser == "auto" else cfg.parser
    lpips_metric, lpips_name = pick_lpips(cfg.lpips, model, device)
    identity, identity_name = pick_identity(cfg.identity)
    keys = classifier_keys(model.classifier, model.generator.resolution, device)
    return _Setup(
        cfg=cfg, device=device, model=model, specs=specs, base=base, base_source=base_source, embed=embed,
        configs=configs, perceptual=perceptual,
        coarse_perceptual=resolve_coarse_perceptual(base.coarse_perceptual, model, perceptual, device),
        parser_name=parser_name, face_parser=load_parser(parser_name, device=device, trust=cfg.trust_parser),
        scorer=Scorer(lpips_metric, identity, model.classifier, min(EVAL_MAX_RESOLUTION, model.generator.resolution),
                      keys),
        lpips_name=lpips_name, identity_name=identity_name, edits=pick_edits(model, cfg.edits, keys),
        mem=PeakMemory(device))


def _load_images(run: _Setup, files: Sequence[Path]) -> list[BenchImage]:
    """Every loadable file at model resolution; the others are recorded (by shard 0 only: every
    shard loads every file, so that occluders and seeds are those of the whole run)."""
    R = run.model.generator.resolution
    if run.cfg.strict:
        check_sizes(files, R)
    items = []
    for f in files:
        try:
            items.append(load_bench_image(f, R, run.cfg.strict))
        except (DHRError, OSError) as e:
            if run.cfg.shard is None or run.cfg.shard[0] == 0:
                run.fail(f.name, None, "load", e)
            else:
                logger.warning("benchmark: %s failed to load: %s", f.name, e)
    return items


def _find_landmarks(run: _Setup, items: Sequence[BenchImage]) -> None:
    """Landmarks for DHR's face parser where it needs them, else a note on the parser used."""
    if any(s.label.startswith("dhr") for s in run.specs) and run.parser_name in ("landmarks", "farl"):
        for it in items:
            try:
                detect_landmarks(it)
            except (DHRError, ImportError) as e:
                it.notes.append(f"landmark detection failed ({type(e).__name__}): no face parser")
    elif any(s.method == "dhr" for s in run.specs):
        for it in items:
            it.notes.append(f"face parser {run.parser_name} (no landmarks needed)" if run.face_parser is not None
                            else "face parser disabled (--parser none)")


@dataclass
class _Target:
    """One image as every method sees it: the (occluded) input and what is known about it."""

    item: BenchImage
    pixels: Any  # (R, R, 3) uint8, occluded when the run is
    target: torch.Tensor  # (1, 3, R, R) CPU
    on_device: torch.Tensor  # the same on the run's device
    occ_mask: torch.Tensor | None  # (1, 1, R, R), 1 = occluder
    parsing: Any
    target_id: torch.Tensor | None


def _parse(run: _Setup, image: torch.Tensor, item: BenchImage) -> Any:
    """The face parser's output for ``image`` (``(3, R, R)``), None where it has nothing to work from."""
    if run.face_parser is not None and (item.landmarks is not None or run.parser_name == "bisenet"):
        return run.face_parser.parse(image, item.landmarks)
    return None


def _prepare(run: _Setup, items: Sequence[BenchImage], idx: int, rec: dict) -> _Target:
    """The input of image ``idx``: its seeded occluder (patches cut from the other images), parsing
    and identity embedding."""
    it = items[idx]
    pixels, occ_mask = it.pixels, None
    if run.cfg.occlusion:
        occ = occlude(it.pixels, run.cfg.seed + idx, sources=[o.pixels for j, o in enumerate(items) if j != idx])
        rec["occluder"] = {"shape": occ.shape, "fill": occ.fill, "seed": occ.seed, **occ.params}
        pixels, occ_mask = occ.image, torch.from_numpy(occ.mask).float()[None, None]
    target = uint8_to_tensor(pixels)[None]
    on_device = target.to(run.device)
    return _Target(it, pixels, target, on_device, occ_mask, _parse(run, on_device[0], it),
                   run.scorer.id_embed(target, it.landmarks))


def _reference_domain(run: _Setup, target: torch.Tensor, parsing: Any) -> Any:
    """DHR's mask of an image (coarse inversion + segmentation) when DHR itself was not benchmarked."""
    config = run.dhr_config
    coarse, maps = optimize_latent(run.model.generator, target, run.coarse_perceptual, config.coarse)
    return segment(target[0], coarse[0].image, list(maps[0]), parsing=parsing if config.segment.use_parsing else None,
                   config=config.segment)


def _invert_all(run: _Setup, t: _Target, rec: dict, progress: ProgressFn | None, idx: int) -> dict[str, Any]:
    """Every variant's inversion of one image (``dhr`` first, so its mask is the reference)."""
    invs: dict[str, Any] = {}
    for spec in sorted(run.specs, key=lambda s: 0 if s.label == "dhr" else 1):
        mcfg = run.configs[spec.label]
        if progress is not None:
            progress("method", {"index": idx, "image": t.item.name, "method": spec.label})
        parsing = None
        if spec.method == "dhr":
            parsing = [t.parsing if mcfg.segment.use_parsing else None]
        try:
            with run.mem.measure():
                t0 = time.perf_counter()
                inv = invert(run.model.generator, t.on_device, config=mcfg, perceptual=run.perceptual,
                             coarse_perceptual=run.coarse_perceptual, encoder=run.model.encoder, parsing=parsing)[0]
                elapsed = time.perf_counter() - t0
            require_finite(inv, t.item.name)
        except IMAGE_FAILURES as e:
            run.fail(t.item.name, spec.label, "invert", e)
            continue
        invs[spec.label] = inv
        rec["methods"][spec.label] = {"time_s": elapsed, "peak_mem_mb": finite(run.mem.peak_mb),
                                      "timings": inv.meta.get("timings", {})}
    return invs


def _reference_mask(run: _Setup, t: _Target, invs: dict[str, Any], rec: dict) -> torch.Tensor | None:
    """The image's DHR mask ``(1, 1, R, R)`` (1 = in-domain) that scores every method's regions;
    records its source and, with occlusion, how well it finds the occluder."""
    ref_mask, source = None, None
    if "dhr" in invs and invs["dhr"].domain is not None:
        ref_mask, source = invs["dhr"].domain.mask[None].float().cpu(), "dhr"
    else:
        try:
            dom = _reference_domain(run, t.on_device, t.parsing)
            ref_mask, source = dom.mask[None].float().cpu(), "coarse+segment"
        except IMAGE_FAILURES as e:  # region metrics are then skipped for this image
            run.fail(t.item.name, None, "reference_mask", e)
    entry = rec["reference_mask"] = {"source": source,
                                     "in_domain_fraction": None if ref_mask is None else float(ref_mask.mean())}
    if t.occ_mask is not None and ref_mask is not None:
        entry["iou_ood"] = finite(iou(1 - ref_mask, t.occ_mask))
        entry["ood_false_alarm"] = finite(false_alarm(1 - ref_mask, t.occ_mask))
        if run.cfg.clean_mask:  # false alarms on the same face without its occluder
            try:
                clean = uint8_to_tensor(t.item.pixels)[None].to(run.device)
                clean_dom = _reference_domain(run, clean, _parse(run, clean[0], t.item))
                entry["clean_ood_fraction"] = float(1 - clean_dom.mask.float().mean())
            except IMAGE_FAILURES as e:  # the occluded scores stand
                run.fail(t.item.name, None, "clean_mask", e)
    return ref_mask


def _score_all(run: _Setup, t: _Target, invs: dict[str, Any], ref_mask: torch.Tensor | None, rec: dict,
               sheet: dict | None) -> None:
    """Reconstruction and editing metrics of every inversion of one image (and its sheet rows)."""
    for spec in run.specs:
        if spec.label not in invs:
            continue
        inv = invs[spec.label]
        entry = rec["methods"][spec.label]
        try:
            recon = quantize(inv.image[None])
            entry["metrics"], rec_id = score_inversion(run.scorer, inv, recon, t.target, target_id=t.target_id,
                                                       landmarks=t.item.landmarks, ref_mask=ref_mask,
                                                       occ_mask=t.occ_mask)
            entry["edits"], edited = score_edits(run.scorer, run.model.generator, inv, recon, t.target, run.edits,
                                                 run.cfg.edit_strength, rec_id=rec_id, landmarks=t.item.landmarks,
                                                 ref_mask=ref_mask, occ_mask=t.occ_mask, device=run.device)
        except IMAGE_FAILURES as e:
            run.fail(t.item.name, spec.label, "score", e)
            continue
        if sheet is not None:
            sheet["rows"].append({"method": spec.label, "inversion": recon, "edits": edited,
                                  "mask": inv.domain.mask[None].cpu() if inv.domain is not None else ref_mask})


def _run_image(run: _Setup, items: Sequence[BenchImage], idx: int, progress: ProgressFn | None,
               with_sheet: bool) -> tuple[dict | None, dict | None]:
    """One image through every variant: ``(record, qualitative sheet or None)``; the record is None
    when the image failed before any inversion (the failure says why)."""
    it = items[idx]
    t_img = time.perf_counter()
    rec: dict[str, Any] = {"image": it.name, "original_size": list(it.original_size), "notes": it.notes,
                           "methods": {}}
    if progress is not None:
        progress("image", {"index": idx, "total": len(items), "image": it.name})
    try:
        t = _prepare(run, items, idx, rec)
    except IMAGE_FAILURES as e:
        run.fail(it.name, None, "prepare", e)
        return None, None
    invs = _invert_all(run, t, rec, progress, idx)
    if not invs:
        return rec, None
    ref_mask = _reference_mask(run, t, invs, rec)
    sheet = {"image": it.name, "input": t.pixels, "rows": []} if with_sheet else None
    _score_all(run, t, invs, ref_mask, rec, sheet)
    if sheet is not None:
        sheet["mask_label"] = "occluder" if t.occ_mask is not None else "DHR mask"
        sheet["occluder"] = t.occ_mask
    rec["wall_s"] = time.perf_counter() - t_img
    logger.info("benchmark: %s done in %.1f s", it.name, rec["wall_s"])
    return rec, sheet


def _calibration_note(model: Any, base: InvertConfig) -> str:
    """Says whether the model's thresholds were calibrated with this benchmark's coarse budget."""
    cal = ((model.manifest.get("training") or {}).get("calibration") or {}) if model.manifest else {}
    steps = cal.get("coarse_steps")
    if steps is None:
        return "the model.json records no calibration budget (thresholds as shipped)"
    same = "the same budget" if steps == base.coarse.steps else "NOT the same budget"
    return (f"segmentation thresholds calibrated with {steps} coarse steps on {cal.get('n', '?')} training crops; "
            f"this benchmark's coarse inversion runs {base.coarse.steps}: {same}")


def _protocol(run: _Setup, steps: dict[str, int]) -> dict[str, Any]:
    """The ``protocol`` section of the report: how everything was measured, in words."""
    cfg, base = run.cfg, run.base
    parsing = "none (--parser none)"
    if run.face_parser is not None:
        parsing = f"{run.parser_name} parser on the (occluded) input crop"
        if run.parser_name in ("landmarks", "farl"):
            parsing += ("; dlib landmarks detected on the clean (unoccluded) crop, upscaled to >= 256 px (the "
                        "alignment is given); no parser where no face is found")
    return {
        "eval_resolution": run.scorer.size,
        "quantisation": "clamp to [-1, 1], round to uint8, back to [-1, 1]; antialiased bilinear resize to the "
                        "evaluation resolution when the model is larger",
        "psnr": "10 log10(4 / MSE) (peak-to-peak 2 of [-1, 1]); psnr_ref = 10 log10(2 / MSE) as the reference code",
        "ssim": "Gaussian 11x11, sigma 1.5, K1 0.01, K2 0.03, L 2, mean over the full map",
        "lpips": run.lpips_name,
        "identity": run.identity_name,
        "identity_landmarks": "the input's landmarks for every reconstruction and edit of that image "
                              "(dlib detection only when none were found)",
        "loss_perceptual": type(run.perceptual).__name__,
        "coarse_perceptual": f"{net_name(run.coarse_perceptual)} (coarse inversion, optimisation embedding, error "
                             f"maps; coarse_perceptual={base.coarse_perceptual!r})",
        "parsing": parsing,
        "embedding": f"pti/feature/dhr start from the same W+ code ({run.embed})",
        "step_budget": f"step counts of the base config ({run.base_source}) x {cfg.steps_scale} (>= 1): " +
                       ", ".join(f"{k} {v}" for k, v in steps.items()),
        "regions": "in./ood. use the DHR mask of the image for every method (1 = in-domain)",
        "calibration": _calibration_note(run.model, base),
        "memory": MEMORY_METHODS[run.mem.method],
        "time": "wall-clock seconds of invert() per image (batch 1)",
    }


def _document(run: _Setup, n_files: int, results: list[dict], framing: dict, command: str | None) -> dict:
    """The whole results dict (as written to ``results.json``)."""
    cfg, base = run.cfg, run.base
    steps = {"optim": base.optim.steps, "coarse": base.coarse.steps, "refine": base.refine.steps,
             "refine_weight": base.refine.weight_steps, "pti": base.pti.steps}
    labels = [s.label for s in run.specs]
    out = {
        "benchmark": {
            "data": str(cfg.data), "model": run.model.name, "model_resolution": run.model.generator.resolution,
            "methods": labels, "n_requested": cfg.n, "spread": cfg.spread, "n_images": n_files,
            "occlusion": cfg.occlusion, "steps_scale": cfg.steps_scale, "steps": steps, "seed": cfg.seed,
            "strict": cfg.strict, "shard": None if cfg.shard is None else list(cfg.shard),
            "overrides": list(cfg.overrides),
            "edits": [{"direction": d.name, "strength": cfg.edit_strength} for d in run.edits],
            "configs": {label: c.to_dict() for label, c in run.configs.items()},
        },
        "protocol": _protocol(run, steps),
        "environment": {"device": str(run.device), "torch": torch.__version__, "python": platform.python_version(),
                        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()},
        "framing": framing,
        "images": results,
        "failures": run.failures,
        "summary": summarize(results, labels),
        "verdicts": verdicts(results, labels, reference="dhr", seed=cfg.seed),
    }
    if command is not None:
        out["benchmark"]["command"] = command
    return out


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
    files = list_images(config.data, config.n, spread=config.spread)
    run = _setup(config)
    items = _load_images(run, files)
    shard = config.shard
    mine = [j for j in range(len(items)) if shard is None or j % shard[1] == shard[0]]
    _find_landmarks(run, [items[j] for j in mine])
    framing = check_framing([items[j] for j in mine], run.model)
    results, sheets = [], []
    for idx in mine:
        rec, sheet = _run_image(run, items, idx, progress, with_sheet=len(sheets) < config.qualitative)
        if rec is not None:
            results.append(rec)
        if sheet is not None and sheet["rows"]:
            sheets.append(sheet)
    out = _document(run, len(files), results, framing, command)
    write_report(out, Path(config.out), sheets=sheets)
    if progress is not None:
        progress("done", {"images": len(results), "failures": len(run.failures)})
    return out
