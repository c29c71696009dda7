"""``dhr bench``: compare inversion methods on a folder of aligned faces (see ``docs/bench.md``).

Exit codes: 0 every image scored, 1 some images or methods failed (recorded; the run went on),
2 bad options or inputs (unknown method, empty folder, ...), 3 nothing was scored.
"""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

import typer

__all__ = ["register"]

log = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench(
        data: Path = typer.Option(..., "--data", help="Folder of aligned face images (any size; resized to the model)."),
        out: Path = typer.Option(Path("bench-out"), "-o", "--out", help="Output folder."),
        methods: str = typer.Option("encoder,optim,pti,feature,dhr", "--methods",
                                    help="Comma-separated: encoder, optim, pti, feature, dhr."),
        model: str = typer.Option("faces-64", "--model", help="Bundled model name or model folder."),
        occlusion: bool = typer.Option(False, "--occlusion", help="Paste seeded synthetic occluders (ground-truth masks)."),
        n: int = typer.Option(None, "--n", help="Use the first N images (sorted)."),
        spread: bool = typer.Option(False, "--spread", help="With --n: N images spread evenly over the sorted list."),
        steps_scale: float = typer.Option(1.0, "--steps-scale", help="Factor on every step count of the base config."),
        ablation: list[str] = typer.Option([], "--ablation", help="DHR variant (repeat or comma-separate): weight-only, "
                                           "feature-only, hybrid, parsing, no-parsing, superpixels, no-superpixels, "
                                           "feature-res=R, theta=T."),
        strict: bool = typer.Option(False, "--strict", help="Refuse images that are not already the model's size."),
        config: Path = typer.Option(None, "--config", help="Base inversion config (TOML/YAML/JSON; default: the model's recommended one); steps are scaled."),
        seed: int = typer.Option(0, "--seed", help="Seed of the optimisations and occluders."),
        edits: str = typer.Option(None, "--edits", help="Two direction names to edit along (default: chosen from the model)."),
        edit_strength: float = typer.Option(2.0, "--edit-strength", help="Strength of every edit."),
        lpips: str = typer.Option("auto", "--lpips", help="Evaluation LPIPS: auto, alex, squeeze, vgg, model."),
        identity: str = typer.Option("auto", "--identity", help="Identity metric: auto, dlib, none."),
        parser: str = typer.Option("auto", "--parser", help="DHR face parser: auto (landmarks), landmarks, bisenet, "
                                   "farl (the reference's) or none; bisenet/farl need their weights."),
        trust_parser: bool = typer.Option(False, "--trust-parser", help="Allow the farl TorchScript file without a "
                                          "registry digest (it runs code from the file)."),
        qualitative: int = typer.Option(2, "--qualitative", help="Images with a qualitative sheet."),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
        set_: list[str] = typer.Option([], "--set", help="KEY=VALUE override of the base config, repeatable "
                                       "(e.g. --set segment.theta_skin=0.3)."),
        shard: str = typer.Option(None, "--shard", help="I/K: score only every K-th image starting at I (0-based), "
                                  "to split a run over K processes or machines; combine with dhr bench-merge."),
    ) -> None:
        """Benchmark inversion methods on equal footing: reconstruction, regions, occlusion and editing metrics.

        Example: dhr bench --data faces/ --methods encoder,pti,dhr --n 20 --steps-scale 0.1 -o bench-out
        """
        from dhr.bench import BenchConfig, parse_methods, run_benchmark
        from dhr.errors import DHRError

        try:
            from dhr.outputs import check_output_folder

            check_output_folder(out)  # before the images run (the report is written at the end)
            base = None
            if config is not None:
                from dhr.config import load_config

                base = load_config(config)
            cfg = BenchConfig(
                data=data, out=out, model=model, methods=parse_methods(methods), ablations=tuple(ablation), n=n,
                occlusion=occlusion, steps_scale=steps_scale, strict=strict, seed=seed, base=base,
                edits=None if edits is None else tuple(s.strip() for s in edits.split(",") if s.strip()),
                edit_strength=edit_strength, lpips=lpips, identity=identity, parser=parser, trust_parser=trust_parser,
                qualitative=qualitative,
                device=device, shard=_parse_shard(shard), overrides=tuple(set_), spread=spread,
            )

            def progress(event: str, info: dict) -> None:
                if event == "image":
                    typer.echo(f"[{info['index'] + 1}/{info['total']}] {info['image']}", err=True)

            result = run_benchmark(cfg, progress=progress, command=shlex.join(["dhr", *sys.argv[1:]]))
        except DHRError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        scored = sum(1 for r in result["images"] if any("metrics" in m for m in r["methods"].values()))
        typer.echo(f"wrote {result['files']['markdown']} and {result['files']['json']} "
                   f"({scored} image(s) scored, {len(result['failures'])} failure(s))")
        if scored == 0:
            raise typer.Exit(3)
        if result["failures"]:
            raise typer.Exit(1)

    @app.command("bench-merge", no_args_is_help=True)
    def bench_merge(
        shards: list[Path] = typer.Argument(..., help="Output folders of dhr bench --shard 0/K ... K-1/K."),
        out: Path = typer.Option(Path("bench-out"), "-o", "--out", help="Output folder of the merged report."),
    ) -> None:
        """Combine the outputs of a sharded benchmark into one report (summaries recomputed over all images).

        Example:

          dhr bench --data faces/ --shard 0/2 -o b0 & dhr bench --data faces/ --shard 1/2 -o b1; wait

          dhr bench-merge b0 b1 -o bench-out
        """
        from dhr.bench import merge_results
        from dhr.errors import DHRError

        try:
            result = merge_results(shards, out)
        except DHRError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"wrote {result['files']['markdown']} ({len(result['images'])} images from {len(shards)} shards, "
                   f"{len(result['failures'])} failure(s))")


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"1/4"`` -> ``(1, 4)``; None stays None."""
    if text is None:
        return None
    try:
        i, k = (int(v) for v in text.split("/"))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not I/K (e.g. 0/2)", param_hint="--shard") from None
    return i, k

