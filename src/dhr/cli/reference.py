"""``dhr reference``: DHR in the reference preset on aligned images from a given start code (parity runs).

Exit codes: 0 every image refined, 1 some images had an empty region (recorded, not refined),
2 bad options or inputs, 3 no image was refined.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    @app.command("reference", no_args_is_help=True)
    def reference_cmd(
        images: list[Path] = typer.Argument(..., help="Aligned images at the generator's resolution."),
        generator: Path = typer.Option(..., "--generator", "-g", help="Generator: a dhr model/generator folder or a "
                                       "rosinality/e4e .pt or NVIDIA .pkl (imported without running code)."),
        start: str = typer.Option("mean", "--start", help="Start code: mean (the generator's w_avg / latent_avg) or "
                                  "a file with a W+ tensor (.pt, .safetensors, .npy)."),
        mask: list[Path] = typer.Option([], "--mask", help="Domain mask per image (white = in-domain), in image "
                                        "order; skips the coarse inversion and segmentation."),
        lpips: str = typer.Option("alex", "--lpips", help="Refinement LPIPS: alex (the reference), vgg, squeeze."),
        coarse_lpips: str = typer.Option("vgg", "--coarse-lpips", help="Coarse/error-map LPIPS: vgg (the "
                                         "reference), alex, squeeze."),
        parser: str = typer.Option("none", "--parser", help="Face parser: farl (the reference's), bisenet, none."),
        trust_parser: bool = typer.Option(False, "--trust-parser", help="Allow the farl TorchScript file without "
                                          "a registry digest."),
        set_: list[str] = typer.Option([], "--set", help="KEY=VALUE override of the preset, e.g. refine.steps=10."),
        seed: int = typer.Option(0, "--seed", help="Seed of the coarse inversion's random streams."),
        out: Path = typer.Option(Path("reference-out"), "--out", "-o", help="Output folder."),
    ) -> None:
        """Run DHR in the reference preset and record what the authors' code computes.

        Per image, OUT/<name>.safetensors holds the start code, the final / superpixel / parsing
        masks, the SLIC labels and scores, the coarse per-layer error maps, the coarse and refined
        images and f*; OUT/<name>.json the per-iteration loss terms (l2_in, lpips_in, loss_in,
        l2_out, lpips_out, loss_out, theta_updated), the in-domain fraction and any error. An empty
        region (where the reference returns NaN) is reported as that image's error.

        Example:

          dhr reference face.png --generator g_ema.pt --start mean --parser farl -o parity/
        """
        import numpy as np
        import torch
        from PIL import Image

        from dhr.cli.run import usage_error
        from dhr.config import apply_overrides
        from dhr.errors import DHRError
        from dhr.faces.parsing import load_parser
        from dhr.io.image import load_image, uint8_to_tensor
        from dhr.metrics.lpips import LPIPS
        from dhr.models.checkpoint import load_generator
        from dhr.reference import reference_config, run_reference, save_reference_run

        from dhr.outputs import check_output_folder

        try:
            check_output_folder(out)
            G = load_generator(generator).eval()
            R = G.resolution
            target = []
            for p in images:
                photo = load_image(p)
                if photo.pixels.shape[:2] != (R, R):
                    raise usage_error(f"{p} is {photo.pixels.shape[1]}x{photo.pixels.shape[0]}; the generator needs "
                                 f"aligned {R}x{R} images")
                target.append(uint8_to_tensor(photo.pixels))
            masks = None
            if mask:
                if len(mask) != len(images):
                    raise usage_error(f"--mask given {len(mask)} times for {len(images)} images; give one per image")
                masks = torch.stack([torch.from_numpy(
                    (np.asarray(Image.fromarray(load_image(m).pixels).convert("L").resize((R, R), Image.NEAREST)) > 127)
                    .astype(np.float32))[None] for m in mask])
            cfg = apply_overrides(reference_config(), list(set_))
            cfg = dataclasses.replace(cfg, coarse=dataclasses.replace(cfg.coarse, seed=seed))
            face_parser = load_parser(parser, trust=trust_parser) if parser != "none" else None
            x = torch.stack(target)
            parsing = None if face_parser is None else [face_parser.parse(x[i]) for i in range(len(target))]
            runs = run_reference(G, x, start=start, perceptual=LPIPS.from_registry(lpips),
                                 coarse_perceptual=LPIPS.from_registry(coarse_lpips), masks=masks, parsing=parsing,
                                 config=cfg)
        except DHRError as e:
            raise usage_error(str(e)) from None
        summary = []
        for p, run in zip(images, runs):
            st, js = save_reference_run(run, out / p.stem)
            summary.append({"image": str(p), "in_domain_fraction": run.in_domain_fraction, "error": run.error,
                            "outputs": [str(st), str(js)]})
            typer.echo(f"{p.name}: in-domain {run.in_domain_fraction:.2%}" + (f"; ERROR: {run.error}" if run.error
                                                                              else ""))
        (out / "reference.json").write_text(json.dumps({"config": cfg.to_dict(), "start": start, "lpips": lpips,
                                                        "coarse_lpips": coarse_lpips, "parser": parser,
                                                        "images": summary}, indent=2))
        failed = sum(r.error is not None for r in runs)
        raise typer.Exit(0 if failed == 0 else (3 if failed == len(runs) else 1))
