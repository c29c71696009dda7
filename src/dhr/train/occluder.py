"""Trains the occluder network (:class:`dhr.segmentation.occluder.OccluderNet`) of a model.

``python -m dhr.train.occluder --data ../shared/datasets/utkface --out runs/occluder [--steps 6000] [--tune 40]``

Data: UTKFace *training* crops only. The held-out crops (:func:`dhr.train.data.is_validation` with the
model's ``val_fraction``, 0.04) are never loaded into a batch; the training crops whose hash lies in
``[val_fraction, val_fraction + tune_fraction)`` are kept apart as the *tune* set on which the
threshold of the cue is chosen (:func:`tune_threshold`). Each sample is a crop (flipped and
colour-jittered) with 0-2 synthetic occluders from :mod:`dhr.train.occluders` (not the benchmark's
generator) and their exact coverage as label.

Loss: binary cross-entropy plus soft Dice on the per-pixel logits. AdamW, cosine learning rate.
Resumable: ``<out>/state.pt`` holds the weights, the optimiser and the step, written every
``--save-every`` steps; running the same command again continues. At the end the network is saved
in the native format (``<out>/occluder``) and ``<out>/report.json`` holds the training curve and the
tune-set figures. ``--tune N`` then chooses the threshold of the cue inside the model's full segmentation
(:func:`tune_threshold`, ``<out>/tune.json``), and ``--install MODEL_FOLDER`` copies the network into
the model and writes that threshold into its ``model.json`` (:func:`install_occluder`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dhr.errors import ConfigError
from dhr.segmentation.occluder import OccluderNet, OccluderNetConfig, register_occluder_component
from dhr.train.data import FaceDataset, is_validation, prepare_dataset
from dhr.train.occluders import synthetic_occluder

__all__ = ["make_batch", "train_occluder", "evaluate_occluder", "tune_split", "tune_threshold", "install_occluder"]

log = logging.getLogger(__name__)


def tune_split(train: FaceDataset, val_fraction: float, tune_fraction: float) -> tuple[FaceDataset, FaceDataset]:
    """Splits training crops into (fit, tune) by the same name hash as the held-out split."""
    tune = np.array([is_validation(n, val_fraction + tune_fraction) for n in train.names])
    return train.subset(np.nonzero(~tune)[0]), train.subset(np.nonzero(tune)[0])


def make_batch(data: FaceDataset, rng: np.random.Generator, batch: int, *, augment: bool = True,
               p_clean: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of synthetic training samples.

    Returns:
        ``(x, y)``: ``(B, 3, R, R)`` images in [-1, 1] and ``(B, 1, R, R)`` float labels in {0, 1}.
    """
    xs, ys = [], []
    n = len(data)
    for _ in range(batch):
        face = data.images[int(rng.integers(0, n))]
        if augment:
            if rng.random() < 0.5:
                face = face[:, ::-1]
            f = face.astype(np.float64) * rng.uniform(0.8, 1.2) + rng.uniform(-20, 20)
            face = np.clip(np.round(f), 0, 255).astype(np.uint8)
        face = np.ascontiguousarray(face)
        sources = [data.images[int(rng.integers(0, n))] for _ in range(2)]
        s = synthetic_occluder(face, rng, sources=sources, p_clean=p_clean)
        xs.append(s.image)
        ys.append(s.mask)
    x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    y = torch.from_numpy(np.stack(ys)).float()[:, None]
    return x, y


def _loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(logits, y)
    p = torch.sigmoid(logits)
    inter = (p * y).sum()
    dice = 1 - (2 * inter + 1) / (p.sum() + y.sum() + 1)
    return bce + 0.5 * dice


@torch.no_grad()
def evaluate_occluder(net: OccluderNet, x: torch.Tensor, y: torch.Tensor,
                      thresholds: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)) -> list[dict]:
    """Pixel IoU (pooled over the set) and false alarms (outside the occluders) per probability threshold."""
    p = torch.cat([torch.sigmoid(net(x[i:i + 64])) for i in range(0, len(x), 64)])
    out = []
    for t in thresholds:
        pred = p >= t
        gt = y > 0.5
        inter = (pred & gt).sum().item()
        union = (pred | gt).sum().item()
        out.append({"threshold": t, "iou": inter / union if union else float("nan"),
                    "false_alarm": (pred & ~gt).sum().item() / max(1, (~gt).sum().item())})
    return out


def train_occluder(data: str | Path, out: str | Path, *, steps: int = 3000, batch: int = 32, lr: float = 2e-3,
                   seed: int = 0, size: int = 64, cache: str | Path | None = None, val_fraction: float = 0.04,
                   tune_fraction: float = 0.03, save_every: int = 100, n_tune: int = 256,
                   config: OccluderNetConfig | None = None, max_minutes: float | None = None) -> dict:
    """Trains (or resumes) an occluder network; see the module docstring.

    Args:
        data: Folder of UTKFace crops.
        out: Output folder (``state.pt``, ``occluder/``, ``report.json``, ``train.log`` by the CLI).
        steps: Optimiser steps.
        batch: Samples per step.
        lr: Peak learning rate (cosine decay to 5 %).
        seed: Seed of the weights, the samples and the tune set.
        size: Crop size R.
        cache: Optional ``.npz`` cache of the preprocessed crops (:func:`dhr.train.data.prepare_dataset`).
        val_fraction: The model's held-out fraction (never used here).
        tune_fraction: Training crops kept apart for choosing the threshold.
        save_every: Steps between resumable checkpoints.
        n_tune: Tune samples (fixed seed) for the final figures.
        config: Architecture.
        max_minutes: Stop (after saving) when this wall-clock budget is spent, even before ``steps``.

    Returns:
        The report dict (also written to ``<out>/report.json``).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train, _held_out, _ = prepare_dataset(data, size, cache=cache, val_fraction=val_fraction)
    fit, tune = tune_split(train, val_fraction, tune_fraction)
    log.info("occluder: %d fit crops, %d tune crops (held-out crops not used)", len(fit), len(tune))
    torch.manual_seed(seed)
    net = OccluderNet(config)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    state_path = out / "state.pt"
    step, curve = 0, []
    if state_path.exists():
        st = torch.load(state_path, weights_only=True)
        net.load_state_dict(st["net"])
        opt.load_state_dict(st["opt"])
        step, curve = int(st["step"]), [dict(zip(("step", "loss"), c)) for c in st["curve"].tolist()]
        log.info("occluder: resumed at step %d", step)
    rng = np.random.default_rng([seed, step])
    t0 = t_window = time.time()
    running = []
    while step < steps:
        for g in opt.param_groups:
            g["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        x, y = make_batch(fit, rng, batch)
        loss = _loss(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        running.append(loss.item())
        if step % 25 == 0:
            curve.append({"step": step, "loss": float(np.mean(running))})
            log.info("occluder: step %d/%d loss %.4f (%.2f s/step)", step, steps, np.mean(running),
                     (time.time() - t_window) / len(running))
        if step % save_every == 0 or step == steps:
            torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "step": step,
                        "curve": torch.tensor([[c["step"], c["loss"]] for c in curve], dtype=torch.float64)
                        .reshape(-1, 2)}, state_path)
            rng = np.random.default_rng([seed, step])  # resuming at this step draws the same samples
            running, t_window = [], time.time()
        if max_minutes is not None and (time.time() - t0) > 60 * max_minutes and step % save_every == 0:
            log.info("occluder: time budget of %.0f min spent at step %d", max_minutes, step)
            break
    net.eval()
    x, y = make_batch(tune, np.random.default_rng([seed, 10**6]), n_tune, augment=False, p_clean=0.2)
    rows = evaluate_occluder(net, x, y)
    from dhr.models.native import save_pretrained

    register_occluder_component()
    report = {"steps_done": step, "steps": steps, "batch": batch, "lr": lr, "seed": seed,
              "fit_crops": len(fit), "tune_crops": len(tune), "val_fraction": val_fraction,
              "tune_fraction": tune_fraction, "generator": "dhr.train.occluders (not the benchmark's)",
              "tune_pixel_figures": rows, "curve": curve,
              "parameters": sum(p.numel() for p in net.parameters())}
    save_pretrained(net, out / "occluder", metadata={k: report[k] for k in (
        "steps_done", "batch", "lr", "seed", "fit_crops", "tune_crops", "val_fraction", "tune_fraction", "generator")})
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


#: Factors on the model's calibrated error thresholds tried jointly with the occluder threshold.
ERROR_SCALES = (1.0, 1.25, 1.5, 2.0)


def tune_threshold(model_path: str | Path, occluder: str | Path, data: str | Path, *, n: int = 40, seed: int = 7,
                   cache: str | Path | None = None, val_fraction: float = 0.04, tune_fraction: float = 0.03,
                   thresholds: tuple[float, ...] = (0.4, 0.5, 0.55, 0.6, 0.7, 0.8),
                   error_scales: tuple[float, ...] = ERROR_SCALES, max_false_alarm: float = 0.02) -> dict:
    """Chooses ``occluder_threshold`` and the error thresholds' scale jointly on tune crops (training split).

    Each of the ``n`` tune crops gets one or two occluders from :mod:`dhr.train.occluders` (never the
    benchmark's); the model's coarse inversion and segmentation (the landmark parser) run once on the
    occluded and once on the clean crop. For every pair (s, t) the error thresholds are the model's
    calibrated ones times s (``theta_skin``, ``theta_inner``, ``theta_other``; the calibration chose them
    for the error test *alone*) and the occluder test uses threshold t. Rule: the highest mean IoU of
    the out-of-domain mask with the occluder among the pairs whose mean false alarms (outside the
    occluder) and clean out-of-domain fraction are both at most ``max_false_alarm`` (ties: the smaller
    s, then the larger t).

    Returns:
        ``{"grid": [{"error_scale", "threshold", "iou", "false_alarm", "clean_ood_fraction"}],
        "without": {...} (the model's segmentation without the occluder test), "best": {... and
        "theta_skin", "theta_inner", "theta_other"}, "rule", "n", ...}``.
    """
    import dataclasses

    from dhr.bench.inputs import BenchImage, detect_landmarks
    from dhr.bench.scoring import false_alarm, iou
    from dhr.embed.optimize import optimize_latent
    from dhr.faces.parsing import LandmarkParser
    from dhr.io.image import uint8_to_tensor
    from dhr.models.zoo import load_model
    from dhr.segmentation.domain import occluder_test, segment
    from dhr.segmentation.occluder import load_occluder_net, occluder_probability

    model = load_model(model_path)
    net = load_occluder_net(occluder)
    base = model.recommended_config()
    seg = dataclasses.replace(base.segment, occluder=None)
    scaled = {s: dataclasses.replace(seg, theta_skin=seg.theta_skin * s, theta_inner=seg.theta_inner * s,
                                     theta_other=seg.theta_other * s) for s in error_scales}
    pairs = [(s, t) for s in error_scales for t in thresholds]
    train, _, _ = prepare_dataset(data, model.resolution, cache=cache, val_fraction=val_fraction)
    _, tune = tune_split(train, val_fraction, tune_fraction)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(tune), size=min(n, len(tune)), replace=False)
    rows = []
    for k, i in enumerate(pick):
        face = tune.images[i]
        sample = synthetic_occluder(face, rng, sources=[tune.images[j] for j in rng.integers(0, len(tune), 2)],
                                    p_clean=0.0)
        gt = torch.from_numpy(sample.mask).float()[None]
        item = BenchImage(name=tune.names[i], pixels=face, original_size=(face.shape[1], face.shape[0]), notes=[])
        detect_landmarks(item)  # no face found: landmarks stay None, segmented without a parser as the pipeline does
        row = {"image": tune.names[i], "shapes": list(sample.shapes)}
        for kind, pixels in (("occluded", sample.image), ("clean", face)):
            target = uint8_to_tensor(pixels)[None]
            parsing = None if item.landmarks is None else LandmarkParser().parse(target[0], item.landmarks)
            coarse, maps = optimize_latent(model.generator, target, model.perceptual, base.coarse)
            maps0 = list(maps[0])
            dom = segment(target[0], coarse[0].image, maps0, parsing=parsing, config=seg)
            prob = occluder_probability(net, target[0])
            masks = {s: segment(target[0], coarse[0].image, maps0, parsing=parsing, config=c,
                                labels=dom.superpixels).mask for s, c in scaled.items()}
            figures = []
            for s, t in pairs:
                ood = 1 - masks[s] * occluder_test(prob, t, dom.superpixels)
                figures.append((iou(ood, gt), false_alarm(ood, gt), float(ood.mean())))
            ood0 = 1 - dom.mask
            row[kind] = figures
            row[kind + "_without"] = (iou(ood0, gt), false_alarm(ood0, gt), float(ood0.mean()))
        rows.append(row)
        log.info("tune: %d/%d %s %s", k + 1, len(pick), tune.names[i], sample.shapes)

    def mean(key: str, j: int, t: int | None = None) -> float:
        vals = [r[key][j] if t is None else r[key][t][j] for r in rows]
        return float(np.nanmean(vals))

    grid = [{"error_scale": s, "threshold": t, "iou": mean("occluded", 0, q), "false_alarm": mean("occluded", 1, q),
             "clean_ood_fraction": mean("clean", 2, q)} for q, (s, t) in enumerate(pairs)]
    without = {"iou": mean("occluded_without", 0), "false_alarm": mean("occluded_without", 1),
               "clean_ood_fraction": mean("clean_without", 2)}
    ok = [g for g in grid if g["false_alarm"] <= max_false_alarm and g["clean_ood_fraction"] <= max_false_alarm]
    if ok:
        best = dict(max(ok, key=lambda g: (round(g["iou"], 6), -g["error_scale"], g["threshold"])))
        rule = (f"highest mean IoU among (error scale, occluder threshold) pairs with mean false alarms and clean "
                f"out-of-domain fraction <= {max_false_alarm:.0%}")
    else:
        best = dict(min(grid, key=lambda g: g["false_alarm"]))
        rule = f"no pair keeps false alarms <= {max_false_alarm:.0%}: the fewest"
    for name in ("theta_skin", "theta_inner", "theta_other"):
        best[name] = round(getattr(seg, name) * best["error_scale"], 4)
    return {"model": str(model_path), "occluder": str(occluder), "n": len(rows), "seed": seed,
            "coarse_steps": base.coarse.steps, "generator": "dhr.train.occluders (not the benchmark's)",
            "split": f"training crops with hash in [{val_fraction}, {val_fraction + tune_fraction})",
            "calibrated_thresholds": {k: getattr(seg, k) for k in ("theta_skin", "theta_inner", "theta_other")},
            "grid": grid, "without": without, "best": best, "rule": rule, "images": rows}


def install_occluder(model_folder: str | Path, occluder: str | Path, threshold: float, *, info: dict | None = None,
                     thresholds: dict[str, float] | None = None) -> Path:
    """Copies an occluder network into a model folder and makes it part of the model's segmentation.

    Writes ``config.segment.occluder = "occluder"`` (relative to the model folder) and
    ``occluder_threshold`` into ``model.json``, and ``info`` (how it was trained and tuned) as
    ``training.occluder``. Do this only after the benchmark showed the cue helps on held-out crops.

    Args:
        model_folder: The model folder (with ``model.json``).
        occluder: The trained network's folder (``<out>/occluder``).
        threshold: The tuned ``occluder_threshold``.
        info: Provenance stored in ``training.occluder``.
        thresholds: Error thresholds (``theta_skin``, ``theta_inner``, ``theta_other``) tuned jointly with it.

    Returns:
        The path of ``model.json``.
    """
    import shutil

    from dhr.segmentation.occluder import load_occluder_net
    from dhr.train.calibrate import write_thresholds

    load_occluder_net(occluder)  # refuses a folder that is not a loadable OccluderNet
    model_folder = Path(model_folder)
    if not (model_folder / "model.json").is_file():
        raise ConfigError(f"{model_folder} has no model.json; pass the model folder "
                          "(e.g. src/dhr/assets/models/faces-64)")
    dest = model_folder / "occluder"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(occluder, dest)
    path = write_thresholds(model_folder, {**(thresholds or {}), "occluder": "occluder",
                                           "occluder_threshold": float(threshold)})
    if info is not None:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        manifest["training"] = {**dict(manifest.get("training") or {}), "occluder": info}
        path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder of UTKFace crops (held-out ones are skipped)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--cache", default=None, help="npz cache of the preprocessed crops")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tune", type=int, default=0, metavar="N",
                   help="afterwards choose occluder_threshold on N tune crops with the model's segmentation")
    p.add_argument("--model", default="faces-64", help="model whose segmentation --tune runs")
    p.add_argument("--install", type=Path, default=None, metavar="MODEL_FOLDER",
                   help="after --tune, copy the network into this model folder and write the tuned threshold into "
                        "its model.json (only once the benchmark showed it helps on held-out crops)")
    a = p.parse_args(argv)
    if a.install is not None and a.tune <= 0:
        p.error("--install needs --tune N (the threshold it writes is the tuned one)")
    a.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(a.out / "train.log")])
    torch.set_num_threads(a.threads)
    rep = train_occluder(a.data, a.out, steps=a.steps, batch=a.batch, lr=a.lr, seed=a.seed, cache=a.cache,
                         max_minutes=a.max_minutes)
    print(json.dumps({k: rep[k] for k in ("steps_done", "parameters", "tune_pixel_figures")}, indent=2))
    if a.tune > 0:
        tuned = tune_threshold(a.model, a.out / "occluder", a.data, n=a.tune, cache=a.cache)
        (a.out / "tune.json").write_text(json.dumps(tuned, indent=2) + "\n", encoding="utf-8")
        print(json.dumps({k: tuned[k] for k in ("n", "without", "best", "rule")}, indent=2))
        if a.install is not None:
            info = {"steps": rep["steps_done"], "batch": a.batch, "lr": a.lr, "seed": a.seed,
                    "fit_crops": rep["fit_crops"], "tune_crops": rep["tune_crops"], "generator": rep["generator"],
                    "tune": {"n": tuned["n"], "rule": tuned["rule"],
                             **{k: round(v, 4) for k, v in tuned["best"].items()}},
                    "without": {k: round(v, 4) for k, v in tuned["without"].items()}}
            thetas = {k: tuned["best"][k] for k in ("theta_skin", "theta_inner", "theta_other")}
            path = install_occluder(a.install, a.out / "occluder", tuned["best"]["threshold"], info=info,
                                    thresholds=thetas)
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
