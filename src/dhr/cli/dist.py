"""``dhr dist``: ``dhr run`` over a dask cluster (local worker processes or a remote scheduler)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from dhr.errors import DHRError

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Adds ``dhr dist`` to the root app."""

    @app.command("dist", no_args_is_help=True)
    def dist_cmd(
        photos: list[str] = typer.Argument(..., help="Photos, folders or globs ('shots/*.jpg')."),
        edit: list[str] = typer.Option([], "--edit", "-e", help="NAME=STRENGTH, repeatable; commas combine."),
        sweep: list[str] = typer.Option([], "--sweep", help="NAME[=MIN:MAX:STEPS], repeatable."),
        out: Path = typer.Option(Path("dhr-out"), "--out", "-o", help="Output folder (shared with the workers)."),
        model: str = typer.Option("faces-64", "--model", "-m", help="Bundled model name or a model folder."),
        method: str | None = typer.Option(None, "--method", help="dhr, pti, feature, encoder or optim."),
        device: str = typer.Option("cpu", "--device", help="Device on each worker: cpu, cuda, mps or auto."),
        seed: int = typer.Option(0, "--seed", help="Random seed (applied before every photo)."),
        config: Path | None = typer.Option(None, "--config", "-c", help="InvertConfig file (TOML/YAML/JSON)."),
        set_: list[str] = typer.Option([], "--set", help="KEY=VALUE config override, repeatable, applied last."),
        face_index: int | None = typer.Option(None, "--face-index", help="Which face (0 = largest; default 0)."),
        all_faces: bool = typer.Option(False, "--all-faces", help="Process every detected face."),
        whole_image: bool = typer.Option(False, "--whole-image", help="Process the whole image when no face "
                                         "is found."),
        perceptual: str = typer.Option("model", "--perceptual", help="model, alex, vgg or squeeze."),
        parser: str = typer.Option("auto", "--parser", help="Face parser: auto, landmarks, bisenet, farl or none "
                                   "(as dhr run)."),
        trust_parser: bool = typer.Option(False, "--trust-parser", help="Allow the farl TorchScript file without "
                                          "a registry digest."),
        workers: int | None = typer.Option(None, "--workers", "-w", min=1, help="Local worker processes, one "
                                           "photo at a time each (default: CPU count / --threads)."),
        threads: int | None = typer.Option(None, "--threads", min=1, max=4096, help="Torch threads per worker "
                                           "(default: DHR_THREADS, else OMP_NUM_THREADS, else 1)."),
        scheduler: str | None = typer.Option(None, "--scheduler", help="Address of a running dask scheduler "
                                             "(tcp://host:8786) instead of a local cluster."),
        memory_limit: str | None = typer.Option(None, "--memory-limit", help="Per local worker, e.g. 4GB."),
        retries: int = typer.Option(1, "--retries", min=0, help="Retries of a photo whose worker died."),
        batch: int = typer.Option(1, "--batch", min=1, help="Photos per task, inverted together on a worker "
                                  "(each keeps its own record; pays with --set vectorize=true on GPU workers)."),
        no_resume: bool = typer.Option(False, "--no-resume", help="Redo photos finished in an earlier run."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
        as_json: bool = typer.Option(False, "--json", help="JSON lines progress events on stdout."),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="Show dask's own logs (scheduler, workers)."),
    ) -> None:
        """Run the whole pipeline on many photos in parallel; same outputs as dhr run.

        Each worker loads the model once. Finished photos are kept on disk with a record in
        OUT/records/, so a rerun resumes where a crash stopped (--no-resume redoes everything).
        Remote workers must see the photos, the model and OUT at the same paths.

        Examples:

          dhr dist photos/ --edit age=+2 --workers 4 -o out/

          dhr dist 'shots/*.jpg' --scheduler tcp://10.0.0.5:8786 --device cuda -o /shared/out

        Exit codes: 0 all ok, 1 some photos failed, 2 bad option or unusable/busy output folder,
        3 nothing succeeded, 4 dhr crashed (a bug: please report it).
        """
        from dhr.cli.run import prepare_photo_command, usage_error
        from dhr.distributed import PipelineSpec, run_distributed
        from dhr.jobs import PhotoJob
        from dhr.progress import make_reporter

        if threads is None:
            from dhr.threads import resolve_threads

            try:
                threads = resolve_threads(None)[0] if any(
                    os.environ.get(k, "").strip() for k in ("DHR_THREADS", "OMP_NUM_THREADS")) else 1
            except DHRError as e:
                raise usage_error(str(e)) from None
        # Build the pipeline here once: a bad model, config or edit is a usage error before any worker starts.
        mode, pipe, edits, sweeps, items, skipped = prepare_photo_command(
            photos, edit, sweep, model=model, method=method, device=device, seed=seed, config=config,
            perceptual=perceptual, quiet=quiet, as_json=as_json, face_index=face_index, all_faces=all_faces,
            sets=set_, out=out, parser=parser, trust_parser=trust_parser)
        spec = PipelineSpec(model=model, config=None if config is None else str(config.resolve()), seed=seed,
                            method=method, perceptual=perceptual, device=device, torch_threads=threads,
                            overrides=tuple(set_), parser=parser, trust_parser=trust_parser)
        job = PhotoJob.from_lists(edits, sweeps, face_index=face_index, all_faces=all_faces,
                                  whole_image=whole_image)
        options = {"photos": photos, "edit": edit, "sweep": sweep, "out": out, "model": model,
                   "method": pipe.config.method, "device": device, "seed": seed, "config": config,
                   "face_index": face_index, "all_faces": all_faces, "whole_image": whole_image,
                   "perceptual": perceptual, "set": set_, "parser": pipe.parser, "batch": batch}
        try:
            record = run_distributed(items, out, spec, job, scheduler=scheduler, n_workers=workers,
                                     memory_limit=memory_limit, resume=not no_resume,
                                     retries=retries, reporter=make_reporter(mode), options=options, pipeline=pipe,
                                     skipped=skipped, verbose=verbose, batch=batch)
        except DHRError as e:
            raise usage_error(str(e)) from None
        raise typer.Exit(record.exit_code())
