"""Training of the bundled model's small networks: the attribute classifier and the distilled metric.

``python -m dhr.train.aux classifier --data DIR --out DIR``
``python -m dhr.train.aux perceptual --data DIR --out DIR --lpips-backbone F --lpips-linear F``

Both use the same held-out split as the GAN (:func:`dhr.train.data.is_validation`) and report
their held-out figures in ``<out>/<name>_report.json``.
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

from dhr.models.small_nets import AttributeClassifier, ClassifierConfig, PerceptualConfig, TinyPerceptual
from dhr.train.data import FaceDataset, prepare_dataset

__all__ = ["train_classifier", "distill_perceptual", "distort", "evaluate_perceptual"]

log = logging.getLogger(__name__)


def _tensor(u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(u8).permute(0, 3, 1, 2).float().div(127.5).sub(1)


def train_classifier(train: FaceDataset, val: FaceDataset, *, steps: int = 3000, batch: int = 64, seed: int = 0,
                     lr: float = 2e-3) -> tuple[AttributeClassifier, dict]:
    """Trains age (log-L1) + gender (BCE) on labelled crops; returns the model and held-out figures."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    keep = (train.ages >= 0) & (train.genders >= 0)
    train = train.subset(np.nonzero(keep)[0])
    model = AttributeClassifier(ClassifierConfig(resolution=train.images.shape[1]))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    t0 = time.time()
    for step in range(steps):
        idx = rng.integers(0, len(train), batch)
        x = _tensor(train.images[idx])
        flip = torch.from_numpy(rng.random(batch) < 0.5)
        x[flip] = x[flip].flip(-1)
        x = x + 0.1 * (torch.rand(batch, 1, 1, 1) - 0.5)  # brightness jitter
        out = model(x)
        age = torch.from_numpy(train.ages[idx]).float()
        female = torch.from_numpy(train.genders[idx]).float()
        loss = F.l1_loss(out["log_age"], torch.log1p(age)) + F.binary_cross_entropy_with_logits(out["female_logit"], female)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 200 == 0:
            log.info("classifier step %d/%d loss %.4f (%.0fs)", step, steps, loss.item(), time.time() - t0)
    model.eval()
    report = evaluate_classifier(model, val)
    report.update(steps=steps, batch=batch, seed=seed, train_images=len(train), seconds=round(time.time() - t0, 1))
    return model, report


@torch.no_grad()
def evaluate_classifier(model: AttributeClassifier, val: FaceDataset) -> dict:
    keep = (val.ages >= 0) & (val.genders >= 0)
    val = val.subset(np.nonzero(keep)[0])
    ages, probs = [], []
    for i in range(0, len(val), 128):
        s = model.scores(_tensor(val.images[i:i + 128]))
        ages.append(s["age"]), probs.append(s["gender"])
    age, p = torch.cat(ages).numpy(), torch.cat(probs).numpy()
    return {
        "val_images": len(val),
        "age_mae_years": float(np.abs(age - val.ages).mean()),
        "age_mae_baseline_years": float(np.abs(np.median(val.ages) - val.ages).mean()),
        "gender_accuracy": float(((p > 0.5) == (val.genders == 1)).mean()),
        "gender_majority_baseline": float(max(val.genders.mean(), 1 - val.genders.mean())),
    }


def distort(x: torch.Tensor, gen: torch.Generator, others: torch.Tensor | None = None) -> torch.Tensor:
    """A random composition of distortions of ``x (B, 3, H, W)`` in [-1, 1], one recipe per image.

    Covers what the inversion pipeline compares: noise, blur, colour and contrast shifts, small
    translations, low-resolution round trips, blends with other faces and pasted occluding patches.
    """
    b, _, h, w = x.shape
    out = x.clone()
    u = lambda: torch.rand(b, 1, 1, 1, generator=gen)  # noqa: E731
    kinds = torch.randint(0, 7, (b,), generator=gen)
    strength = u()
    noise = torch.randn(x.shape, generator=gen)
    blur = F.avg_pool2d(F.pad(x, [1, 1, 1, 1], mode="replicate"), 3, 1)
    small = F.interpolate(F.interpolate(x, scale_factor=0.25, mode="bilinear", antialias=True), size=(h, w), mode="bilinear")
    shifted = torch.roll(x, shifts=(int(torch.randint(-3, 4, (1,), generator=gen)), int(torch.randint(-3, 4, (1,), generator=gen))), dims=(2, 3))
    color = x + 0.4 * (torch.rand(b, 3, 1, 1, generator=gen) - 0.5)
    contrast = (x - x.mean(dim=[1, 2, 3], keepdim=True)) * (0.5 + u()) + x.mean(dim=[1, 2, 3], keepdim=True)
    other = others if others is not None else x.flip(0)
    mixed = x * (1 - 0.6 * strength) + other * 0.6 * strength
    patch = x.clone()
    ph, pw = h // 3, w // 3
    for i in range(b):
        y0 = int(torch.randint(0, h - ph + 1, (1,), generator=gen))
        x0 = int(torch.randint(0, w - pw + 1, (1,), generator=gen))
        patch[i, :, y0:y0 + ph, x0:x0 + pw] = other[i, :, y0:y0 + ph, x0:x0 + pw] if i % 2 else torch.rand(3, 1, 1, generator=gen) * 2 - 1
    table = [x + 0.3 * strength * noise, x * (1 - strength) + blur * strength, small * strength + x * (1 - strength),
             shifted, color, contrast, torch.where(strength > 0.5, patch, mixed)]
    for k in range(7):
        sel = kinds == k
        out[sel] = table[k][sel]
    return out.clamp(-1, 1)


def distill_perceptual(train: FaceDataset, val: FaceDataset, teacher: torch.nn.Module, *, steps: int = 2000,
                       batch: int = 32, seed: int = 0, lr: float = 2e-3) -> tuple[TinyPerceptual, dict]:
    """Distils ``teacher`` (LPIPS-squeeze) into :class:`TinyPerceptual`: scalar distances and spatial maps."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    student = TinyPerceptual(PerceptualConfig())
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    t0 = time.time()
    for step in range(steps):
        x = _tensor(train.images[rng.integers(0, len(train), batch)])
        o = _tensor(train.images[rng.integers(0, len(train), batch)])
        y = distort(x, gen, o)
        with torch.no_grad():
            t_map = teacher.spatial(x, y)
            t_d = teacher(x, y)
        s_map = student.spatial(x, y)
        s_d = student(x, y)
        loss = F.mse_loss(s_map, t_map) + F.mse_loss(s_d, t_d) + F.l1_loss(torch.log(s_d + 1e-3), torch.log(t_d + 1e-3))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 200 == 0:
            log.info("perceptual step %d/%d loss %.5f (%.0fs)", step, steps, loss.item(), time.time() - t0)
    student.freeze()
    report = evaluate_perceptual(student, teacher, val, seed=seed + 1)
    report.update(steps=steps, batch=batch, seed=seed, seconds=round(time.time() - t0, 1))
    return student, report


def _rankdata(a: np.ndarray) -> np.ndarray:
    r = np.empty(len(a))
    r[np.argsort(a)] = np.arange(len(a))
    return r


@torch.no_grad()
def evaluate_perceptual(student: torch.nn.Module, teacher: torch.nn.Module, val: FaceDataset, *, seed: int = 1) -> dict:
    """How well ``student`` ranks distortions like ``teacher`` on held-out crops.

    Returns 2AFC agreement (for two distortions of the same image, do both pick the same closer one),
    Spearman correlation of all distances, and the mean per-image Pearson correlation of spatial maps.
    """
    gen = torch.Generator().manual_seed(seed)
    x = _tensor(val.images)
    o = x.roll(1, 0)
    y1, y2 = distort(x, gen, o), distort(x, gen, o)
    td1, td2 = teacher(x, y1), teacher(x, y2)
    sd1, sd2 = student(x, y1), student(x, y2)
    agree = ((td1 < td2) == (sd1 < sd2)).float().mean().item()
    t_all, s_all = torch.cat([td1, td2]).numpy(), torch.cat([sd1, sd2]).numpy()
    spearman = float(np.corrcoef(_rankdata(t_all), _rankdata(s_all))[0, 1])
    tm, sm = teacher.spatial(x, y1).flatten(1), student.spatial(x, y1).flatten(1)
    tm, sm = tm - tm.mean(1, keepdim=True), sm - sm.mean(1, keepdim=True)
    pearson = (tm * sm).sum(1) / (tm.norm(dim=1) * sm.norm(dim=1) + 1e-12)
    return {"val_images": len(val), "2afc_agreement_with_teacher": agree, "spearman_distance": spearman,
            "spatial_map_pearson_mean": float(pearson.mean()), "teacher": "LPIPS v0.1 squeeze"}


def _save(model: torch.nn.Module, folder: Path) -> None:
    """Writes ``config.json`` + ``model.safetensors`` (the native format)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"class": type(model).__name__, "config": model.config.to_dict()}, indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["classifier", "perceptual"])
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--lpips-backbone", default="")
    p.add_argument("--lpips-linear", default="")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if a.threads:
        torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    train, val, skipped = prepare_dataset(a.data, a.resolution, out / f"data_{a.resolution}.npz")
    if a.what == "classifier":
        model, report = train_classifier(train, val, steps=a.steps or 3000, seed=a.seed)
    else:
        from dhr.metrics.lpips import LPIPS

        teacher = LPIPS("squeeze", backbone=a.lpips_backbone, linear=a.lpips_linear)
        model, report = distill_perceptual(train, val, teacher, steps=a.steps or 2000, seed=a.seed)
    report["skipped_unreadable"] = skipped
    _save(model, out / a.what)
    (out / f"{a.what}_report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
