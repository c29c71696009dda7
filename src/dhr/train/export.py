"""Builds a named model folder (``model.json`` + native components) from training outputs.

``python -m dhr.train.export --run RUN --aux AUX --data DATA --labels LABELS.npz --out src/dhr/assets/models/faces-64``

Steps: take ``G_ema`` and the encoder from the GAN checkpoint; the classifier and the distilled
perceptual metric from the auxiliary run; fit directions (:func:`fit_directions`); measure what
they do (:func:`direction_effects`); optionally derive the alignment template from the training
crops' landmarks; store everything in float16 and write ``model.json``. The folder is written
next to ``out`` under a temporary name and swapped into place only when complete, so a crash
never leaves a half-written model.

Named directions (InterFaceGAN boundaries, all applied to every W+ layer):

- ``age`` (continuous, years) and ``gender`` (binary, P(female) > 0.5): labelled by the model's
  classifier on ``n`` generated samples, boundaries fitted on their W = mapping(z).
- ``smile``, ``yaw`` and ``eyes_open``: labelled by dlib's 68 landmarks on the TRAINING crops
  (:mod:`dhr.train.landmark_labels`; never the held-out ones), boundaries fitted on the encoder's
  codes of those crops, reduced to one W per crop as the mean of its W+ rows.

Unit of strength (:data:`DIRECTION_UNIT`): every InterFaceGAN direction is stored as
``n * sigma``, the unit normal n times the standard deviation sigma of the generator's latent
codes W = mapping(z) along n, so ``strength 1`` moves a code by one typical spread of the latent
distribution along that attribute and the five named edits are comparable. GANSpace directions
are in standard deviations of their principal component already; SeFa directions stay unit
vectors.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from dhr.errors import ConfigError
from dhr.models.small_encoder import SmallEncoder
from dhr.models.stylegan2 import Generator
from dhr.models.zoo import MODEL_JSON, register_small_components

__all__ = ["DIRECTION_UNIT", "LANDMARK_DIRECTIONS", "direction_effects", "encoder_codes", "export_model",
           "fit_directions", "scale_to_latent_std"]

log = logging.getLogger(__name__)

DIRECTION_UNIT = "1 standard deviation of the generator's W = mapping(z) along the direction"
"""What strength 1 means for the InterFaceGAN directions (stored in each direction's ``source``)."""

LANDMARK_DIRECTIONS: tuple[str, ...] = ("smile", "yaw", "eyes_open")
"""Directions fitted on landmark labels of the training crops (see :mod:`dhr.train.landmark_labels`)."""


@torch.no_grad()
def _latent_samples(G: Generator, n: int, seed: int, batch: int = 1000) -> torch.Tensor:
    """``(n, D)`` codes W = mapping(z), z seeded."""
    gen = torch.Generator().manual_seed(seed)
    p = next(G.parameters())
    return torch.cat([G.mapping(torch.randn(min(batch, n - i), G.style_dim, generator=gen).to(p)).float()
                      for i in range(0, n, batch)])


def scale_to_latent_std(direction, w: torch.Tensor):
    """The direction rescaled so that strength 1 is one standard deviation of ``w`` along it.

    Args:
        direction: A ``w``-space :class:`~dhr.editing.Direction` (any norm; its unit normal is used).
        w: ``(N, D)`` latent codes (the generator's W = mapping(z)).

    Returns:
        A new :class:`~dhr.editing.Direction` ``n * sigma`` whose ``source`` records sigma and the unit.
    """
    from dhr.editing import Direction

    n = direction.vector.double() / direction.vector.double().norm()
    sigma = float((w.double().cpu() @ n.cpu()).std())
    source = f"{direction.source}; strength 1 = {DIRECTION_UNIT} (sigma={sigma:.4f})"
    return Direction(direction.name, (n * sigma).float(), direction.layers, direction.space, source, direction.kind)


@torch.no_grad()
def encoder_codes(encoder: torch.nn.Module, G: Generator, images: np.ndarray, *, batch: int = 256) -> torch.Tensor:
    """One W per crop from the encoder: the mean of its W+ rows.

    Args:
        encoder: A :class:`SmallEncoder` (called as ``encoder(x, G.w_avg)``).
        G: The generator (its ``w_avg``).
        images: ``(N, R, R, 3)`` uint8 crops at the model resolution.

    Returns:
        ``(N, D)`` float32 CPU codes.
    """
    p = next(encoder.parameters())
    out = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch])).permute(0, 3, 1, 2).to(p).div(127.5).sub(1.0)
        out.append(encoder(x, G.w_avg.to(p)).float().mean(1).cpu())
    return torch.cat(out) if out else torch.zeros(0, G.style_dim)


@torch.no_grad()
def fit_directions(G: Generator, classifier: torch.nn.Module, *, n: int = 6000, seed: int = 0, batch: int = 500,
                   encoder: torch.nn.Module | None = None, landmark_images: np.ndarray | None = None,
                   landmark_labels=None, landmark_samples: int = 0):
    """Fits the model's named directions; returns a :class:`dhr.editing.DirectionSet` and a report.

    Args:
        G: The generator.
        classifier: Age / gender classifier (``scores(img) -> {"age", "gender"}``).
        n: Generated samples for age / gender (and for the unit's standard deviations).
        seed: Seed of the samples.
        batch: Rendering batch.
        encoder: The model's encoder; with ``landmark_images`` and ``landmark_labels`` it adds
            ``smile``, ``yaw`` and ``eyes_open``.
        landmark_images: ``(N, R, R, 3)`` uint8 training crops.
        landmark_labels: Their :class:`~dhr.train.landmark_labels.LandmarkLabels`; only crops where
            dlib's detector found the face are used.
        landmark_samples: When > 0, ``smile``, ``yaw`` and ``eyes_open`` are fitted instead on this
            many generated samples (seed ``seed + 1``) labelled by dlib, against their mapping W, as
            InterFaceGAN fits age and gender. Fits on encoder codes of real crops predict the labels
            well (correlation 0.8-0.9) but can point where the generator barely responds.

    Returns:
        ``(DirectionSet, report)``; InterFaceGAN directions are scaled to :data:`DIRECTION_UNIT`.
    """
    from dhr.editing import DirectionSet
    from dhr.editing.ganspace import fit_ganspace, ganspace_directions
    from dhr.editing.interfacegan import fit_boundary
    from dhr.editing.sefa import sefa_directions

    gen = torch.Generator().manual_seed(seed)
    ws, ages, females = [], [], []
    for i in range(0, n, batch):
        z = torch.randn(min(batch, n - i), G.style_dim, generator=gen)
        w = G.mapping(z)
        img = G(w, noise_mode="const").clamp(-1, 1)
        s = classifier.scores(img)
        ws.append(w), ages.append(s["age"]), females.append(s["gender"])
    w, age, female = torch.cat(ws), torch.cat(ages), torch.cat(females)
    named = [
        fit_boundary(w, age, name="age", mode="continuous"),
        fit_boundary(w, (female > 0.5).float(), name="gender", mode="binary"),
    ]
    report = {"samples": n, "age_mean": float(age.mean()), "age_std": float(age.std()),
              "female_fraction": float((female > 0.5).float().mean()), "unit": DIRECTION_UNIT}
    if landmark_samples > 0:
        from dhr.train.landmark_labels import label_images

        gen_lm = torch.Generator().manual_seed(seed + 1)
        w_lm, imgs = [], []
        for i in range(0, landmark_samples, batch):
            z = torch.randn(min(batch, landmark_samples - i), G.style_dim, generator=gen_lm)
            wi = G.mapping(z)
            w_lm.append(wi)
            imgs.append(_to_uint8(G(wi, noise_mode="const")))
        lab = label_images(np.concatenate(imgs), log_every=1000)
        keep = torch.from_numpy(np.asarray(lab.detected, dtype=bool))
        codes = torch.cat(w_lm)[keep]
        lm_report = {"samples": landmark_samples, "used": int(keep.sum()),
                     "w": "mapping W of generated samples in which dlib found the face"}
        for name in LANDMARK_DIRECTIONS:
            y = torch.as_tensor(np.asarray(lab.scores[name])[keep.numpy()], dtype=torch.float64)
            d = fit_boundary(codes, y, name=name, mode="continuous")
            d = type(d)(name, d.vector, d.layers, d.space, f"{d.source} on dlib landmark labels of generated samples",
                        d.kind)
            corr = float(np.corrcoef((codes.double() @ d.vector.double()).numpy(), y.numpy())[0, 1])
            lm_report[name] = {"label_mean": float(y.mean()), "label_std": float(y.std()), "train_correlation": corr}
            named.append(d)
        report["landmark_labels"] = lm_report
    elif encoder is not None and landmark_images is not None and landmark_labels is not None:
        keep = np.asarray(landmark_labels.detected, dtype=bool)
        if len(keep) != len(landmark_images):
            raise ConfigError(f"{len(landmark_images)} landmark images but {len(keep)} labels; label the same crops")
        codes = encoder_codes(encoder, G, np.asarray(landmark_images)[keep])
        lm_report = {"crops": int(len(keep)), "used": int(keep.sum()),
                     "w": "encoder W+ of each training crop, mean over its rows"}
        for name in LANDMARK_DIRECTIONS:
            y = torch.as_tensor(np.asarray(landmark_labels.scores[name])[keep], dtype=torch.float64)
            d = fit_boundary(codes, y, name=name, mode="continuous")
            d = type(d)(name, d.vector, d.layers, d.space, f"{d.source} on dlib landmark labels of training crops",
                        d.kind)
            proj = codes.double() @ d.vector.double()
            corr = float(np.corrcoef(proj.numpy(), y.numpy())[0, 1])
            lm_report[name] = {"label_mean": float(y.mean()), "label_std": float(y.std()),
                               "train_correlation": corr}
            named.append(d)
        report["landmark_labels"] = lm_report
    elif encoder is not None or landmark_images is not None or landmark_labels is not None:
        raise ConfigError("landmark directions need encoder, landmark_images and landmark_labels together")
    dirs = [scale_to_latent_std(d, w) for d in named]
    report["sigma"] = {d.name: float(d.vector.norm()) for d in dirs}
    basis = fit_ganspace(G, n=10000, k=min(20, G.style_dim), seed=seed)
    dirs += [d.renamed(f"pc{i}") for i, d in enumerate(ganspace_directions(basis, list(range(5)), source="ganspace (PCA of W)"))]
    dirs += [d.renamed(f"sefa{i}") for i, d in enumerate(sefa_directions(G, 3))]
    return DirectionSet(dirs), report


def _to_uint8(img: torch.Tensor) -> np.ndarray:
    return ((img.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def direction_effects(G: Generator, classifier: torch.nn.Module, directions, *, n: int = 500, seed: int = 1,
                      strength: float = 1.0, identity_n: int = 100, size: int = 256) -> dict:
    """What each direction does at ``strength``, on generated samples.

    Per direction: the mean change of the classifier's age and P(female) per unit (from -strength
    to +strength, ``n`` samples), the mean absolute image change per unit, and on the first
    ``identity_n`` samples (upsampled to ``size`` px): dlib identity similarity
    (:class:`~dhr.faces.identity.DlibIdentity`, ``1 - distance``; same person above 0.4) between the
    unedited and the edited sample at ``+strength``, and for ``smile``, ``yaw`` and ``eyes_open``
    the change of their own landmark label per unit. ``identity_n=0`` skips the dlib measures.
    """
    from dhr.editing import apply_edits
    from dhr.faces.identity import DlibIdentity
    from dhr.train.landmark_labels import _upsample, label_images

    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, G.style_dim, generator=gen)
    ws = G.sample_ws(z)
    base_img = G(ws)
    base = classifier.scores(base_img.clamp(-1, 1))
    k = min(int(identity_n), n)
    ident = DlibIdentity() if k else None

    def dlib_view(imgs: torch.Tensor):
        u8 = _to_uint8(imgs[:k])
        labels = label_images(u8, size=size, log_every=0)
        return [_upsample(im, size) for im in u8], labels

    if k:
        base_ups, base_lab = dlib_view(base_img)
        base_emb = [ident.embed(im, lm) for im, lm in zip(base_ups, base_lab.landmarks)]
    out = {}
    for name in directions.names():
        d = directions[name]
        plus_img = G(apply_edits(ws, [(d, strength)]))
        minus_img = G(apply_edits(ws, [(d, -strength)]))
        plus = classifier.scores(plus_img.clamp(-1, 1))
        minus = classifier.scores(minus_img.clamp(-1, 1))
        entry = {
            "age_years_per_unit": float((plus["age"] - minus["age"]).mean() / (2 * strength)),
            "p_female_per_unit": float((plus["gender"] - minus["gender"]).mean() / (2 * strength)),
            "image_change_l1_per_unit": float((plus_img - base_img).abs().mean() / strength),
        }
        if k:
            ups, lab = dlib_view(plus_img)
            sims = [ident.similarity(b, ident.embed(im, lm)) for b, im, lm in zip(base_emb, ups, lab.landmarks)]
            entry["identity_similarity"] = float(np.mean(sims))
            entry["identity_same_person_fraction"] = float(np.mean([s > ident.threshold for s in sims]))
            if name in base_lab.scores:
                _, lab_minus = dlib_view(minus_img)
                change = (lab.scores[name] - lab_minus.scores[name]) / (2 * strength)
                entry[f"{name}_label_per_unit"] = float(np.mean(change))
        out[name] = entry
        log.info("effects of %s: %s", name, {k: round(v, 4) for k, v in entry.items()})
    out["_baseline"] = {"age_mean": float(base["age"].mean()), "p_female_mean": float(base["gender"].mean()),
                        "strength": strength, "samples": n, "identity_samples": k}
    if k:
        out["_baseline"].update({f"{a}_label_mean": float(np.mean(v)) for a, v in base_lab.scores.items()})
        out["_baseline"]["face_detected_fraction"] = float(base_lab.detected.mean())
    return out


#: Inversion settings shipped in the bundled model's ``model.json`` (over the reference defaults).
#: Chosen on the fidelity-editability trade-off by ``python -m dhr.bench.sweep`` on training crops
#: (issue #15). The first sweep (docs/sweep-faces64) replaced 200 / 150 steps at 3e-3 (picked on
#: reconstruction MSE alone: |θ*-θ| at 3x PTI's) by the reference budget 100 / 50 at 1.5e-3; the
#: second (docs/sweep-faces64-v2, 14 crops, full budgets) picks a longer, gentler weight phase
#: (200 steps, θ in the first 150 at 5e-4: |θ*-θ| about the same) with f at 16x16, which closes
#: DHR's in-domain gap to PTI. Written out so that a re-export keeps it explicit.
RECOMMENDED_CONFIG = {"refine": {"steps": 200, "weight_steps": 150, "weight_lr": 5e-4, "feature_resolution": 16}}


def export_model(run: Path, aux: Path, out: Path, *, name: str = "faces-64", template: Path | None = None,
                 card: Path | None = None, config: dict | None = None, data: Path | None = None,
                 labels: Path | None = None, data_cache: Path | None = None, n: int = 6000,
                 effects_n: int = 500, identity_n: int = 100, landmark_samples: int = 0) -> dict:
    """Writes the model folder atomically; returns the direction report.

    Everything is written into a temporary sibling of ``out`` (``.<name>.tmp-*``), which replaces
    ``out`` only when complete; on any error it is removed and ``out`` is left as it was. A
    ``template.json`` and ``MODEL_CARD.md`` already in ``out`` are kept unless new ones are given.

    Args:
        run: GAN run folder holding ``ckpt.pt``.
        aux: Folder holding ``classifier/`` and ``perceptual/``.
        out: The model folder to (re)place.
        name: Model name in ``model.json``.
        template: Alignment template JSON to ship.
        card: Model card to ship.
        config: Inversion options stored as the model's recommended settings (default
            :data:`RECOMMENDED_CONFIG`; ``{}`` for the reference defaults).
        data: The training data folder; with it, ``smile``, ``yaw`` and ``eyes_open`` are fitted on
            landmark labels of its training crops (without it they are left out, with a warning).
        labels: ``.npz`` cache of those labels (:func:`dhr.train.landmark_labels.training_labels`).
        data_cache: ``prepare_dataset``'s cache of the crops (e.g. ``RUN/data_64.npz``).
        n: Generated samples for the age / gender fits and the unit.
        effects_n: Samples for :func:`direction_effects` (``identity_n`` of them for the dlib measures).
        identity_n: Samples for identity similarity and landmark-label changes (0: skipped).
        landmark_samples: When > 0, the landmark directions are fitted on this many generated
            samples labelled by dlib instead of the training crops (``data`` is then not needed).
    """
    from dhr.models.checkpoint import load_pretrained, save_pretrained
    from dhr.train.gan import TrainConfig

    register_small_components()
    st = torch.load(run / "ckpt.pt", map_location="cpu", weights_only=True)
    arch = json.loads(st["arch"])
    cfg = TrainConfig(**{k: v for k, v in arch.items()})
    G = Generator(cfg.generator_config())
    G.load_state_dict(st["G_ema"])
    G.eval()
    E = SmallEncoder(cfg.encoder_config())
    E.load_state_dict(st["E"])
    E.eval()
    classifier = load_pretrained(aux / "classifier").eval()
    perceptual = load_pretrained(aux / "perceptual").eval()
    landmark = {}
    if landmark_samples > 0:
        landmark = {"landmark_samples": landmark_samples}
    elif data is not None:
        from dhr.train.landmark_labels import training_labels

        images, lab = training_labels(data, G.resolution, labels, data_cache=data_cache,
                                      val_fraction=cfg.val_fraction)
        landmark = {"landmark_images": images, "landmark_labels": lab}
    else:
        log.warning("no --data: the landmark directions (%s) are not fitted", ", ".join(LANDMARK_DIRECTIONS))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        training = {"kimg": st["images_seen"] / 1000, "steps": int(st["step"]), "config": arch,
                    "encoder_only_kimg": int(st.get("encoder_images", 0)) / 1000}
        save_pretrained(G, tmp / "generator", dtype="float16", metadata={"kimg": training["kimg"]})
        save_pretrained(E, tmp / "encoder", dtype="float16")
        save_pretrained(classifier, tmp / "classifier", dtype="float16")
        save_pretrained(perceptual, tmp / "perceptual", dtype="float16")
        G16 = load_pretrained(tmp / "generator").eval()
        cls16 = load_pretrained(tmp / "classifier").eval()
        E16 = load_pretrained(tmp / "encoder").eval() if landmark else None
        directions, report = fit_directions(G16, cls16, n=n, encoder=E16, **landmark)
        directions.save(tmp / "directions")
        report["effects"] = direction_effects(G16, cls16, directions, n=effects_n, identity_n=identity_n)
        manifest = {
            "name": name,
            "description": "64x64 StyleGAN2 face model trained by dhr on UTKFace crops (non-commercial research only)",
            "resolution": G.resolution,
            "components": {"generator": "generator", "encoder": "encoder", "perceptual": "perceptual",
                           "classifier": "classifier", "directions": "directions"},
            "parser": "landmarks",
            "perceptual_name": "dhr-tiny-perceptual (distilled from LPIPS-squeeze)",
            "licence": "weights: non-commercial research only (UTKFace terms)",
            "training": training,
        }
        config = RECOMMENDED_CONFIG if config is None else config
        if config:
            manifest["config"] = config
        if template is not None:
            shutil.copy(template, tmp / "template.json")
        elif (out / "template.json").is_file():
            shutil.copy(out / "template.json", tmp / "template.json")
        if (tmp / "template.json").exists():
            manifest["template"] = "template.json"
        if card is not None:
            shutil.copy(card, tmp / "MODEL_CARD.md")
        elif (out / "MODEL_CARD.md").is_file():
            shutil.copy(out / "MODEL_CARD.md", tmp / "MODEL_CARD.md")
        if (tmp / "MODEL_CARD.md").is_file():  # the manifest names a card only when the folder has one
            manifest["card"] = "MODEL_CARD.md"
        (tmp / "directions_report.json").write_text(json.dumps(report, indent=2) + "\n")
        (tmp / MODEL_JSON).write_text(json.dumps(manifest, indent=2) + "\n")
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Replaces ``out`` by the complete folder ``tmp`` with two renames (the old one is deleted last)."""
    if not out.exists():
        tmp.rename(out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    old.rmdir()
    out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        old.rename(out)  # put the previous model back
        raise
    shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="GAN run folder holding ckpt.pt")
    p.add_argument("--aux", type=Path, required=True, help="folder holding classifier/ and perceptual/")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--name", default="faces-64")
    p.add_argument("--template", type=Path, default=None)
    p.add_argument("--card", type=Path, default=None, help="model card to ship (default: keep the folder's)")
    p.add_argument("--data", type=Path, default=None,
                   help="training data folder: fits smile, yaw and eyes_open on landmark labels of its training crops")
    p.add_argument("--labels", type=Path, default=None, help=".npz cache of the landmark labels (made when missing)")
    p.add_argument("--data-cache", type=Path, default=None, help="prepare_dataset cache, e.g. RUN/data_64.npz")
    p.add_argument("--identity-n", type=int, default=100, help="samples for the dlib identity / landmark effects")
    p.add_argument("--landmark-samples", type=int, default=0,
                   help="fit smile, yaw and eyes_open on this many generated samples labelled by dlib "
                        "(instead of the training crops of --data)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    report = export_model(a.run, a.aux, a.out, name=a.name, template=a.template, card=a.card, data=a.data,
                          labels=a.labels, data_cache=a.data_cache, identity_n=a.identity_n,
                          landmark_samples=a.landmark_samples)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
