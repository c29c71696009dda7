"""Builds a named model folder (``model.json`` + native components) from training outputs.

``python -m dhr.train.export --run RUN --aux AUX --out src/dhr/assets/models/faces-64``

Steps: take ``G_ema`` and the encoder from the GAN checkpoint; the classifier and the distilled
perceptual metric from the auxiliary run; fit directions on generated samples (InterFaceGAN on
the classifier's age and gender scores, GANSpace PCA of W, SeFa from the modulation weights);
optionally derive the alignment template from the training crops' landmarks; store everything in
float16 and write ``model.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import torch

from dhr.models.small_encoder import SmallEncoder
from dhr.models.stylegan2 import Generator
from dhr.models.zoo import MODEL_JSON, register_small_components

__all__ = ["export_model", "fit_directions"]

log = logging.getLogger(__name__)


@torch.no_grad()
def fit_directions(G: Generator, classifier: torch.nn.Module, *, n: int = 6000, seed: int = 0, batch: int = 500):
    """Fits the model's named directions; returns a :class:`dhr.editing.DirectionSet` and a report.

    InterFaceGAN: ``n`` samples w = mapping(z) (seeded), labelled by the classifier on the rendered
    images (age in years as a continuous label; gender as P(female) > 0.5), boundaries fitted in W.
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
    dirs = [
        fit_boundary(w, age, name="age", mode="continuous"),
        fit_boundary(w, (female > 0.5).float(), name="gender", mode="binary"),
    ]
    basis = fit_ganspace(G, n=10000, k=min(20, G.style_dim), seed=seed)
    dirs += [d.renamed(f"pc{i}") for i, d in enumerate(ganspace_directions(basis, list(range(5)), source="ganspace (PCA of W)"))]
    dirs += [d.renamed(f"sefa{i}") for i, d in enumerate(sefa_directions(G, 3))]
    report = {"samples": n, "age_mean": float(age.mean()), "age_std": float(age.std()),
              "female_fraction": float((female > 0.5).float().mean())}
    return DirectionSet(dirs), report


@torch.no_grad()
def direction_effects(G: Generator, classifier: torch.nn.Module, directions, *, n: int = 500, seed: int = 1,
                      strength: float = 1.0) -> dict:
    """Mean change of the classifier's scores per unit strength of each direction on generated samples."""
    from dhr.editing import apply_edits

    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, G.style_dim, generator=gen)
    ws = G.sample_ws(z)
    base = classifier.scores(G(ws).clamp(-1, 1))
    out = {}
    for name in directions.names():
        d = directions[name]
        plus = classifier.scores(G(apply_edits(ws, [(d, strength)])).clamp(-1, 1))
        minus = classifier.scores(G(apply_edits(ws, [(d, -strength)])).clamp(-1, 1))
        out[name] = {
            "age_years_per_unit": float((plus["age"] - minus["age"]).mean() / (2 * strength)),
            "p_female_per_unit": float((plus["gender"] - minus["gender"]).mean() / (2 * strength)),
            "image_change_l1_per_unit": float((G(apply_edits(ws, [(d, strength)])) - G(ws)).abs().mean() / strength),
        }
    out["_baseline"] = {"age_mean": float(base["age"].mean()), "p_female_mean": float(base["gender"].mean())}
    return out


#: Inversion settings shipped in the bundled model's ``model.json`` (over the reference defaults).
#: The reference refines 100 steps with θ tuned in the first 50 at lr 1.5e-3, tuned for the FFHQ
#: model, whose W+ starting point is already close to the photo. From this small model's weaker
#: starting point that leaves a visibly blurred face; on the example photo 200 / 150 steps at
#: 3e-3 bring the MSE from 0.0129 to 0.0043 at 28.8 kimg and from 0.0096 to 0.0039 at 70.4 kimg,
#: in about twice the time (300 / 250 at 1.5e-3: 0.0035 at 28.8 kimg in 1.5x the time again).
RECOMMENDED_CONFIG = {"refine": {"steps": 200, "weight_steps": 150, "weight_lr": 3e-3}}


def export_model(run: Path, aux: Path, out: Path, *, name: str = "faces-64", template: Path | None = None,
                 card: Path | None = None, config: dict | None = None) -> dict:
    """Writes the model folder; returns the direction report.

    ``config``: inversion options stored as the model's recommended settings (default
    :data:`RECOMMENDED_CONFIG`; ``{}`` for the reference defaults).
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
    out.mkdir(parents=True, exist_ok=True)
    training = {"kimg": st["images_seen"] / 1000, "steps": int(st["step"]), "config": arch}
    save_pretrained(G, out / "generator", dtype="float16", metadata={"kimg": training["kimg"]})
    save_pretrained(E, out / "encoder", dtype="float16")
    save_pretrained(classifier, out / "classifier", dtype="float16")
    save_pretrained(perceptual, out / "perceptual", dtype="float16")
    G16 = load_pretrained(out / "generator").eval()
    cls16 = load_pretrained(out / "classifier").eval()
    directions, report = fit_directions(G16, cls16)
    if (out / "directions").exists():
        shutil.rmtree(out / "directions")
    directions.save(out / "directions")
    report["effects"] = direction_effects(G16, cls16, directions)
    manifest = {
        "name": name,
        "description": "64x64 StyleGAN2 face model trained by dhr on UTKFace crops (non-commercial research only)",
        "resolution": G.resolution,
        "components": {"generator": "generator", "encoder": "encoder", "perceptual": "perceptual",
                       "classifier": "classifier", "directions": "directions"},
        "parser": "landmarks",
        "perceptual_name": "dhr-tiny-perceptual (distilled from LPIPS-squeeze)",
        "licence": "weights: non-commercial research only (UTKFace terms)",
        "card": "MODEL_CARD.md",
        "training": training,
    }
    config = RECOMMENDED_CONFIG if config is None else config
    if config:
        manifest["config"] = config
    if template is not None:
        shutil.copy(template, out / "template.json")
        manifest["template"] = "template.json"
    elif (out / "template.json").exists():
        manifest["template"] = "template.json"
    if card is not None:
        shutil.copy(card, out / "MODEL_CARD.md")
    (out / MODEL_JSON).write_text(json.dumps(manifest, indent=2) + "\n")
    (out / "directions_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="GAN run folder holding ckpt.pt")
    p.add_argument("--aux", type=Path, required=True, help="folder holding classifier/ and perceptual/")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--name", default="faces-64")
    p.add_argument("--template", type=Path, default=None)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print(json.dumps(export_model(a.run, a.aux, a.out, name=a.name, template=a.template), indent=2))


if __name__ == "__main__":
    main()
