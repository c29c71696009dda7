"""``dhr run | align | invert | edit | serve``: the photo and bundle commands (and the ``models`` group).

Options shared by several commands are declared once in :mod:`dhr.cli.options`. The batch machinery (inputs,
``run.json``, resume, exit codes) is :mod:`dhr.cli.batch` and ``dhr models`` is
:mod:`dhr.cli.models`; the input helpers the tests call (``expand_inputs``, ``run_fingerprint``, ...)
are re-exported here, the exit codes live in :mod:`dhr.cli.batch`. Library imports sit inside the
commands, as in the other ``dhr.cli`` modules: a command loads what it needs when it runs, and the
tests patch :func:`dhr.jobs.process_photo` that way.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import typer

from dhr.cli.batch import (
    expand_inputs,
    expand_inputs_report,
    progress_mode,
    run_batch,
    run_fingerprint,
    usage_error,
)
from dhr.cli.models import models_app
from dhr.cli.options import (
    DEFAULT_OUT,
    MODEL_HELP,
    OPT_ALL_FACES,
    OPT_BATCH,
    OPT_CONFIG,
    OPT_DEVICE,
    OPT_FACE_INDEX,
    OPT_JSON,
    OPT_METHOD,
    OPT_MODEL,
    OPT_NO_RESUME,
    OPT_OOD_MASK,
    OPT_OUT,
    OPT_PARSER,
    OPT_PASTE,
    OPT_PERCEPTUAL,
    OPT_QUIET,
    OPT_SEED,
    OPT_SET,
    OPT_SWEEP,
    OPT_TRUST_PARSER,
    OPT_WHOLE_IMAGE,
    parse_edit_options,
    parse_sweep_option,
)
from dhr.errors import DHRError

__all__ = [
    "expand_inputs",
    "expand_inputs_report",
    "models_app",
    "parse_edit_options",
    "parse_sweep_option",
    "register",
    "run_fingerprint",
]


log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Helpers (pure; tested directly)


def _build_pipeline(model: str, device: str, config: Path | None, seed: int, method: str | None,
                    perceptual: str, sets: list[str] | None = None, parser: str = "auto",
                    trust_parser: bool = False, paste_mode: str = "auto"):
    """Loads the pipeline with its config complete (``--set`` overrides included); any problem is a
    usage error (exit 2)."""
    from dhr.pipeline import Pipeline

    try:
        pipe = Pipeline.from_pretrained(model, device=device, config=config, seed=seed, perceptual=perceptual,
                                        method=method, parser=parser, trust_parser=trust_parser,
                                        paste_mode=paste_mode, overrides=tuple(sets or ()))
    except DHRError as e:
        raise usage_error(str(e)) from None
    from dhr.threads import fit_threads_to_model

    fit_threads_to_model(getattr(pipe.generator.config, "synthesis_macs", float("inf")))
    return pipe


def _check_inversion_weights(pipe, ood_mask: Path | None = None) -> None:
    """Builds the networks an inversion will need now, so that missing weights are one usage error
    (exit 2) before the batch instead of the same failure (and download retries) for every photo."""
    from dhr.engine import resolve_embed

    try:
        pipe.perceptual
        if (pipe.config.method == "dhr" and ood_mask is None) or resolve_embed(pipe.config, pipe.model.encoder) == "optim":
            pipe.coarse_perceptual
    except DHRError as e:
        raise usage_error(str(e)) from None


def _check_face_index(face_index: int | None, all_faces: bool) -> None:
    if face_index is not None and all_faces:
        raise usage_error("--face-index and --all-faces exclude each other")
    if face_index is not None and face_index < 0:
        raise usage_error(f"--face-index {face_index} must be >= 0 (0 = the largest face)")


def _check_edits(pipe, edit_specs: list[str]) -> list[dict[str, float]]:
    try:
        edits = parse_edit_options(edit_specs)
        for combo in edits:
            pipe.validate_edits(combo)
    except DHRError as e:
        raise usage_error(str(e)) from None
    return edits


def _check_sweeps(pipe, sweep_specs: list[str]) -> list[tuple[str, tuple[float, ...]]]:
    try:
        sweeps = [parse_sweep_option(spec) for spec in sweep_specs]
        for name, _ in sweeps:
            pipe.validate_edits({name: 0.0})
    except DHRError as e:
        raise usage_error(str(e)) from None
    return sweeps


def _photo_work(pipe, tree, *, face_index: int | None, all_faces: bool, whole_image: bool, masks: bool,
                inversion: bool, bundle: bool, edits: list[dict[str, float]], align_only: bool = False,
                sweeps: list[tuple[str, tuple[float, ...]]] | None = None, sheet: bool = False,
                ood_mask: Path | None = None, batch: int = 1):
    from dhr.jobs import PhotoBatches, PhotoJob, process_photo, save_inversions

    job = PhotoJob.from_lists(edits, sweeps or [], face_index=face_index, all_faces=all_faces,
                              whole_image=whole_image, masks=masks, inversion=inversion, bundle=bundle,
                              align_only=align_only, sheet=sheet,
                              ood_mask=None if ood_mask is None else str(ood_mask))
    if batch == 1:
        def work(item: str, rec, reporter) -> None:
            process_photo(pipe, item, tree, job, rec, reporter, name=rec.name)
    else:
        batches = PhotoBatches(pipe, job, batch)

        def work(item: str, rec, reporter) -> None:
            notes, warnings, result = batches.take(item, reporter)
            rec.notes.extend(notes)
            for message in warnings:  # logged again here, so the batch records them on this input
                log.warning("%s", message)
            if isinstance(result, BaseException):
                raise result
            save_inversions(pipe, result, tree, job, rec, name=rec.name)

        work.plan = batches.plan
    work.job = job
    return work


def _job_options(work) -> dict[str, Any]:
    import dataclasses

    d = dataclasses.asdict(work.job)
    if d.get("ood_mask"):
        from dhr.records import file_sha256

        d["ood_mask"] = [d["ood_mask"], file_sha256(d["ood_mask"])]
    return d


# --------------------------------------------------------------------------------------------
# Commands


def _common(model, method, device, seed, config, perceptual, quiet, as_json, sets=None, parser="auto",
            trust_parser=False, paste_mode="auto"):
    mode = progress_mode(quiet, as_json)
    pipe = _build_pipeline(model, device, config, seed, method, perceptual, sets, parser, trust_parser, paste_mode)
    return mode, pipe


def prepare_photo_command(photos: list[str], edit: list[str], sweep: list[str], *, model: str, method: str | None,
                          device: str, seed: int, config: Path | None, perceptual: str, quiet: bool, as_json: bool,
                          face_index: int | None, all_faces: bool, sets: list[str] | None = None,
                          ood_mask: Path | None = None, out: Path | None = None, parser: str = "auto",
                          trust_parser: bool = False, paste_mode: str = "auto"):
    """Checks the options of a photo command and builds its pipeline; any problem exits with 2.

    The output folder (``out``) is checked first, before any model is loaded.

    Returns:
        ``(progress mode, pipeline, edit dicts, sweeps, expanded input paths, skipped folder entries)``.
    """
    _check_face_index(face_index, all_faces)
    _check_out(out)
    mode, pipe = _common(model, method, device, seed, config, perceptual, quiet, as_json, sets, parser, trust_parser,
                         paste_mode)
    edits = _check_edits(pipe, edit)
    sweeps = _check_sweeps(pipe, sweep)
    items, skipped = expand_inputs_report(photos)
    if not items:
        raise usage_error("no input photos" + (f" ({len(skipped)} entries skipped: " +
                                           "; ".join(f"{e['path']}: {e['reason']}" for e in skipped[:5]) + ")"
                                           if skipped else ""))
    _check_ood_mask(ood_mask, items, pipe)
    _check_inversion_weights(pipe, ood_mask)
    return mode, pipe, edits, sweeps, items, skipped


def _check_out(out: Path | None) -> None:
    """Usage error (exit 2) when ``out`` cannot be an output folder (see :func:`dhr.outputs.check_output_folder`)."""
    if out is None:
        return
    from dhr.outputs import check_output_folder

    try:
        check_output_folder(out)
    except DHRError as e:
        raise usage_error(str(e)) from None


def _check_ood_mask(ood_mask: Path | None, items: list[str], pipe) -> None:
    if ood_mask is None:
        return
    if len(items) != 1:
        raise usage_error(f"--ood-mask is drawn on one photo, but {len(items)} inputs were given; run them one by one")
    if pipe.config.method != "dhr":
        raise usage_error(f"--ood-mask replaces DHR's segmentation; it does not apply to --method {pipe.config.method}")
    from dhr.io.image import load_mask_array

    try:
        load_mask_array(ood_mask)  # missing, unsupported, bomb, corrupt: a usage error before any work
    except DHRError as e:
        raise usage_error(f"--ood-mask: {e}") from None


def register(app: typer.Typer) -> None:
    """Adds ``run``, ``align``, ``invert``, ``edit``, ``serve`` and the ``models`` group to the root app."""

    @app.command("run", no_args_is_help=True)
    def run_cmd(
        photos: list[str] = typer.Argument(..., help="Photos, folders or globs ('shots/*.jpg')."),
        edit: list[str] = typer.Option([], "--edit", "-e", help="NAME=STRENGTH, repeatable; commas combine "
                                       "(--edit age=+2,gender=-1). Each --edit gives one output."),
        sweep: list[str] = OPT_SWEEP,
        out: Path = typer.Option(DEFAULT_OUT, "--out", "-o", help="Output folder (run.json and the output tree)."),
        model: str = OPT_MODEL,
        method: str | None = OPT_METHOD,
        device: str = OPT_DEVICE,
        seed: int = OPT_SEED,
        config: Path | None = OPT_CONFIG,
        set_: list[str] = OPT_SET,
        ood_mask: Path | None = OPT_OOD_MASK,
        face_index: int | None = OPT_FACE_INDEX,
        all_faces: bool = OPT_ALL_FACES,
        whole_image: bool = OPT_WHOLE_IMAGE,
        perceptual: str = OPT_PERCEPTUAL,
        parser: str = OPT_PARSER,
        trust_parser: bool = OPT_TRUST_PARSER,
        paste: str = OPT_PASTE,
        quiet: bool = OPT_QUIET,
        as_json: bool = OPT_JSON,
        no_resume: bool = OPT_NO_RESUME,
        batch: int = OPT_BATCH,
    ) -> None:
        """Detect, align, invert (DHR), segment, refine, edit and paste back; save everything.

        Writes OUT/run.json and aligned/, masks/, inversion/, edits/<edit>/, pasted/, bundles/,
        sheets/ (input, mask, inversion and edits side by side) and sweeps/ (with --sweep).

        Examples:

          dhr run photo.jpg --edit age=+2 --edit gender=-1 -o out/

          dhr run photo.jpg --sweep age --sweep gender=-2:2:5 -o out/

          dhr run photo.jpg --edit gender=+1 --paste crop -o out/

          dhr run shots/ 'more/*.png' --all-faces --method pti --json > events.jsonl

          dhr run crop.png --whole-image --config fast.toml --device cpu --seed 1

          dhr run shots/ --set precision=bf16   (bfloat16 arithmetic: ~2x faster on AVX512-BF16/AMX CPUs and recent GPUs)

          dhr run shots/ --batch 8 --set vectorize=true   (8 photos optimised together: GPUs, small models)

        Exit codes: 0 all ok, 1 some inputs failed, 2 bad option or unusable/busy output folder,
        3 nothing succeeded, 4 dhr crashed (a bug: please report it).

        A rerun into the same -o resumes: inputs finished earlier (same bytes, model, config and
        options, files intact) are kept, the rest is redone; every file is written atomically.
        """
        mode, pipe, edits, sweeps, items, skipped = prepare_photo_command(
            photos, edit, sweep, model=model, method=method, device=device, seed=seed, config=config,
            perceptual=perceptual, quiet=quiet, as_json=as_json, face_index=face_index, all_faces=all_faces,
            sets=set_, ood_mask=ood_mask, out=out, parser=parser, trust_parser=trust_parser, paste_mode=paste)
        from dhr.records import OutputTree

        tree = OutputTree(out)
        options = {"photos": photos, "edit": edit, "sweep": sweep, "out": out, "model": model,
                   "method": pipe.config.method, "set": set_, "ood_mask": ood_mask,
                   "device": device, "seed": seed, "config": config, "face_index": face_index,
                   "all_faces": all_faces, "whole_image": whole_image, "perceptual": perceptual,
                   "parser": pipe.parser, "paste": paste, "batch": batch}
        work = _photo_work(pipe, tree, face_index=face_index, all_faces=all_faces, whole_image=whole_image,
                           masks=True, inversion=True, bundle=True, edits=edits, sweeps=sweeps, sheet=True,
                           ood_mask=ood_mask, batch=1 if ood_mask is not None else batch)
        raise typer.Exit(run_batch("run", items, out, options, mode, pipe, work, skipped=skipped,
                                fingerprint=run_fingerprint("run", pipe, _job_options(work)), resume=not no_resume))

    @app.command("align", no_args_is_help=True)
    def align_cmd(
        photos: list[str] = typer.Argument(..., help="Photos, folders or globs."),
        out: Path = OPT_OUT,
        model: str = typer.Option("faces-64", "--model", "-m", help=MODEL_HELP + " (its template and size)"),
        face_index: int | None = OPT_FACE_INDEX,
        all_faces: bool = typer.Option(False, "--all-faces", help="Align every detected face."),
        whole_image: bool = typer.Option(False, "--whole-image", help="Fit the whole image when no face is found."),
        quiet: bool = OPT_QUIET,
        as_json: bool = OPT_JSON,
        no_resume: bool = OPT_NO_RESUME,
    ) -> None:
        """Detect and align faces at the model resolution; writes OUT/aligned/ and run.json.

        Examples:

          dhr align photo.jpg -o out/

          dhr align shots/ --all-faces --json
        """
        if face_index is not None and all_faces:
            raise usage_error("--face-index and --all-faces exclude each other")
        _check_out(out)
        mode, pipe = _common(model, None, "cpu", 0, None, "model", quiet, as_json)
        items, skipped = expand_inputs_report(photos)
        from dhr.records import OutputTree

        tree = OutputTree(out)
        options = {"photos": photos, "out": out, "model": model, "face_index": face_index, "all_faces": all_faces,
                   "whole_image": whole_image}
        work = _photo_work(pipe, tree, face_index=face_index, all_faces=all_faces, whole_image=whole_image,
                           masks=False, inversion=False, bundle=False, edits=[], align_only=True)
        raise typer.Exit(run_batch("align", items, out, options, mode, pipe, work, skipped=skipped,
                                fingerprint=run_fingerprint("align", pipe, _job_options(work)), resume=not no_resume))

    @app.command("invert", no_args_is_help=True)
    def invert_cmd(
        photos: list[str] = typer.Argument(..., help="Photos, folders or globs."),
        out: Path = OPT_OUT,
        model: str = OPT_MODEL,
        method: str | None = OPT_METHOD,
        device: str = OPT_DEVICE,
        seed: int = OPT_SEED,
        config: Path | None = OPT_CONFIG,
        face_index: int | None = OPT_FACE_INDEX,
        all_faces: bool = OPT_ALL_FACES,
        whole_image: bool = OPT_WHOLE_IMAGE,
        set_: list[str] = OPT_SET,
        ood_mask: Path | None = OPT_OOD_MASK,
        perceptual: str = OPT_PERCEPTUAL,
        parser: str = OPT_PARSER,
        trust_parser: bool = OPT_TRUST_PARSER,
        quiet: bool = OPT_QUIET,
        as_json: bool = OPT_JSON,
        no_resume: bool = OPT_NO_RESUME,
        batch: int = OPT_BATCH,
    ) -> None:
        """Invert photos and write reusable bundles (OUT/bundles/) plus aligned/, masks/, inversion/.

        Edit the bundles later without optimising: dhr edit OUT/bundles/ --edit age=+2

        Examples:

          dhr invert photo.jpg -o out/

          dhr invert shots/ --method pti --config pti.toml --seed 3
        """
        _check_face_index(face_index, all_faces)
        _check_out(out)
        mode, pipe = _common(model, method, device, seed, config, perceptual, quiet, as_json, set_, parser,
                             trust_parser)
        items, skipped = expand_inputs_report(photos)
        _check_ood_mask(ood_mask, items, pipe)
        _check_inversion_weights(pipe, ood_mask)
        from dhr.records import OutputTree

        tree = OutputTree(out)
        options = {"photos": photos, "out": out, "model": model, "method": pipe.config.method, "set": set_,
                   "ood_mask": ood_mask,
                   "device": device,
                   "seed": seed, "config": config, "face_index": face_index, "all_faces": all_faces,
                   "whole_image": whole_image, "perceptual": perceptual, "parser": pipe.parser, "batch": batch}
        work = _photo_work(pipe, tree, face_index=face_index, all_faces=all_faces, whole_image=whole_image,
                           masks=True, inversion=True, bundle=True, edits=[], ood_mask=ood_mask,
                           batch=1 if ood_mask is not None else batch)
        raise typer.Exit(run_batch("invert", items, out, options, mode, pipe, work, skipped=skipped,
                                fingerprint=run_fingerprint("invert", pipe, _job_options(work)), resume=not no_resume))

    @app.command("edit", no_args_is_help=True)
    def edit_cmd(
        bundles: list[str] = typer.Argument(..., help="Bundles (<stem>, <stem>.json or <stem>.safetensors), "
                                            "folders of bundles, or globs."),
        edit: list[str] = typer.Option([], "--edit", "-e", help="NAME=STRENGTH, repeatable; commas combine."),
        sweep: list[str] = OPT_SWEEP,
        out: Path = OPT_OUT,
        model: str = typer.Option("faces-64", "--model", "-m", help=MODEL_HELP + " (the one the bundles used)"),
        device: str = OPT_DEVICE,
        paste: str = OPT_PASTE,
        quiet: bool = OPT_QUIET,
        as_json: bool = OPT_JSON,
        no_resume: bool = OPT_NO_RESUME,
    ) -> None:
        """Edit saved inversions without re-optimising; pastes into the photo when it is still there.

        Writes edits/<edit>/, pasted/, sheets/ and (with --sweep) sweeps/ plus run.json.

        Examples:

          dhr edit out/bundles/ --sweep age=-2:2:5 -o edited/

          dhr edit out/bundles/ --edit age=+2 --edit gender=-1 -o edited/

          dhr edit out/bundles/photo_face0 --edit age=-1 --edit gender=+1,smile=2
        """
        _check_out(out)
        mode, pipe = _common(model, None, device, 0, None, "model", quiet, as_json, paste_mode=paste)
        edits = _check_edits(pipe, edit)
        sweeps = _check_sweeps(pipe, sweep)
        if not edits and not sweeps:
            raise usage_error("give at least one --edit NAME=STRENGTH or --sweep NAME[=MIN:MAX:STEPS]")
        items = _expand_bundles(bundles)
        from dhr.records import OutputTree

        tree = OutputTree(out)
        options = {"bundles": bundles, "edit": edit, "sweep": sweep, "out": out, "model": model, "device": device,
                   "paste": paste}

        def work(item: str, rec, reporter) -> None:
            import dataclasses

            from dhr.jobs import save_face

            pi = pipe.load_bundle(item)
            pi = dataclasses.replace(pi, stem=rec.name)
            rec.notes.extend(pi.notes)
            for n in pi.notes:  # the edited crops are written, but not the pasted photos the user expects
                if "pasting unavailable" in n:
                    log.warning("%s: %s (give the photo again with dhr.Pipeline.load_bundle(..., photo=...) or "
                                "restore the file)", Path(item).name, n)
            face = {"stem": pi.stem, "method": pi.inversion.method, "whole_image": pi.whole_image,
                    "photo": None if pi.photo is None else str(pi.photo.path)}
            rec.faces.append(face)
            save_face(pipe, pi, tree, face, masks=False, inversion=False, bundle=False, edits=edits, paste=True,
                       aligned=False, sweeps=sweeps, sheet=True)

        from dhr.bundle import bundle_paths

        job = {"edits": edits, "sweeps": sweeps}
        raise typer.Exit(run_batch("edit", items, out, options, mode, pipe, work, fingerprint=run_fingerprint(
            "edit", pipe, job), resume=not no_resume, sha_path=lambda item: bundle_paths(item)[0]))

    @app.command("serve")
    def serve_cmd(
        model: str = OPT_MODEL,
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (default: this machine only)."),
        port: int = typer.Option(7860, "--port", min=1, max=65535, help="TCP port (1-65535)."),
        device: str = OPT_DEVICE,
        config: Path | None = OPT_CONFIG,
        seed: int = OPT_SEED,
        max_pixels: int | None = typer.Option(None, "--max-pixels", min=1, help="Refuse uploaded photos with more "
                                              "pixels (width x height); default 50,000,000."),
        max_batch: int = typer.Option(16, "--max-batch", min=1, help="Most photos the 'Several photos' tab "
                                      "takes at once."),
        parser: str = OPT_PARSER,
        trust_parser: bool = OPT_TRUST_PARSER,
        paste: str = OPT_PASTE,
    ) -> None:
        """Start the local web UI (needs gradio: pip install gradio).

        Upload a photo, see the aligned face, mask and inversion, edit with one slider per direction,
        download the pasted photo and the bundle; or upload several photos, give them all the same
        edit and download one .zip.

        Bad uploads (not an image, more than --max-pixels) are reported in the page.

        Example: dhr serve --port 7860   (then open http://127.0.0.1:7860)
        """
        try:
            from dhr.web.app import serve
        except ImportError as e:
            raise usage_error(str(e)) from None
        try:
            serve(model, host=host, port=port, device=device, config=config, seed=seed, block=True,
                  max_pixels=max_pixels, parser=parser, trust_parser=trust_parser, paste_mode=paste,
                  max_batch=max_batch)
        except ImportError as e:
            raise usage_error(str(e)) from None
        except DHRError as e:
            raise usage_error(str(e)) from None
        except (OSError, OverflowError) as e:  # gradio: no such address here, port taken or not allowed
            raise usage_error(f"cannot start the web server on {host}:{port} ({e}); give --host an address of this "
                              "machine (default 127.0.0.1) and --port a free port") from None

    app.add_typer(models_app, name="models", help="List the bundled models and show one.")


def _expand_bundles(items: list[str]) -> list[str]:
    from dhr.bundle import bundle_paths

    stems: list[str] = []
    for item in expand_inputs(items, suffixes=(".safetensors",)):
        p = Path(item)
        if p.is_dir():
            continue
        stem = str(bundle_paths(p)[0].with_suffix(""))
        if stem not in stems:
            stems.append(stem)
    return stems
