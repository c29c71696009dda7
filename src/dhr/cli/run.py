"""``dhr run | align | invert | edit | serve | models``: batch commands over photos and bundles.

Every batch command writes ``run.json`` (see :mod:`dhr.records`) and exits with
0 (all inputs ok), 1 (some failed; the batch continued), 2 (usage error / bad option, output folder
unusable or in use), 3 (nothing succeeded) or 4 (dhr itself crashed: a bug; see ``dhr.cli.main``).
"""

from __future__ import annotations

import glob
import json
import logging
import time
from pathlib import Path
from typing import Any

import typer

from dhr.errors import DHRError

__all__ = [
    "EXIT_CRASH",
    "EXIT_NOTHING",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_USAGE",
    "IMAGE_SUFFIXES",
    "PROGRAMMING_ERRORS",
    "expand_inputs",
    "expand_inputs_report",
    "models_app",
    "parse_edit_options",
    "parse_sweep_option",
    "register",
]

log = logging.getLogger(__name__)

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_NOTHING, EXIT_CRASH = 0, 1, 2, 3, 4

PROGRAMMING_ERRORS: tuple[type[BaseException], ...] = (TypeError, NameError)
"""Errors that mean a bug in dhr (a wrong call, a missing name), never a bad input: a batch stops on
them and ``dhr`` exits with :data:`EXIT_CRASH` instead of recording the same failure for every input."""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".jp2", ".j2k", ".jpx")
_DEFAULT_OUT = Path("dhr-out")

models_app = typer.Typer(
    help="List the bundled models and show one (components, directions, training facts).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# --------------------------------------------------------------------------------------------
# Helpers (pure; tested directly)


def expand_inputs(items: list[str], suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[str]:
    """Files, folders (their files with ``suffixes``, sorted, not recursive) and globs, in order,
    without duplicates. Items that match nothing are kept as given so the batch records them as
    failed inputs. See :func:`expand_inputs_report` for the folder entries left out.
    """
    return expand_inputs_report(items, suffixes)[0]


def _entry_problem(f: Path, suffixes: tuple[str, ...]) -> str | None:
    """Why a folder entry is not an input (None: it is one). Never opens the entry."""
    import errno
    import stat as st_

    try:
        st = f.stat()
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symbolic link loop"
        if f.is_symlink():
            return "dangling link (its target is missing)"
        return f"cannot be examined ({e.strerror or e})"
    mode = st.st_mode
    if st_.S_ISDIR(mode):
        return "a folder (folders are not searched recursively)"
    if st_.S_ISFIFO(mode):
        return "a FIFO (never opened)"
    if st_.S_ISCHR(mode) or st_.S_ISBLK(mode):
        return "a device (never opened)" + (" behind a link" if f.is_symlink() else "")
    if st_.S_ISSOCK(mode):
        return "a socket (never opened)"
    if not st_.S_ISREG(mode):
        return "not a regular file"
    if f.suffix.lower() not in suffixes:
        return f"not an image file name ({f.suffix or 'no suffix'}; taken: {', '.join(suffixes)})"
    return None


def expand_inputs_report(items: list[str], suffixes: tuple[str, ...] = IMAGE_SUFFIXES
                         ) -> tuple[list[str], list[dict[str, str]]]:
    """Like :func:`expand_inputs`, and also every folder or glob entry left out, with the reason.

    Folder entries that are not regular files with one of ``suffixes`` (other files, sub-folders,
    FIFOs, devices, dangling links, symlink loops) are never opened; each is reported as
    ``{"path": ..., "reason": ...}`` (``run.json``'s ``skipped``).

    Returns:
        ``(inputs, skipped)``.
    """
    from dhr.outputs import _path_key

    out: list[str] = []
    skipped: list[dict[str, str]] = []
    seen: set[str] = set()

    def add(p: str) -> None:
        key = _path_key(p)
        if key not in seen:
            seen.add(key)
            out.append(p)

    def consider(f: Path) -> None:
        problem = _entry_problem(f, suffixes)
        if problem is None:
            add(str(f))
        else:
            skipped.append({"path": str(f), "reason": problem})

    for item in items:
        p = Path(item)
        if p.is_dir():
            try:
                entries = sorted(p.iterdir())
            except OSError as e:
                skipped.append({"path": str(p), "reason": f"folder cannot be listed ({e.strerror or e})"})
                continue
            for f in entries:
                consider(f)
        elif not p.exists() and not p.is_symlink() and glob.has_magic(item):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                add(item)
            for m in matches:
                consider(Path(m))
        else:
            add(item)
    return out, skipped


def parse_edit_options(specs: list[str]) -> list[dict[str, float]]:
    """``["age=+2", "smile=-1,yaw=0.5"]`` -> one dict per option (commas combine edits).

    Raises:
        EditError: On a malformed spec.
    """
    from dhr.editing import parse_edit_spec

    from dhr.errors import EditError

    edits = []
    for spec in specs:
        combo: dict[str, float] = {}
        for part in (s for s in spec.split(",") if s.strip()):
            name, strength = parse_edit_spec(part)
            combo[name] = strength
        if not combo:
            raise EditError(f"--edit {spec!r} is empty; give NAME=STRENGTH, e.g. --edit age=+2")
        edits.append(combo)
    return edits


DEFAULT_SWEEP = (-3.0, 3.0, 7)
"""``MIN, MAX, STEPS`` of ``--sweep NAME`` without a range."""


def parse_sweep_option(spec: str) -> tuple[str, tuple[float, ...]]:
    """``"age"`` -> ``("age", (-3, -2, ..., 3))``; ``"smile=-2:2:5"`` -> ``("smile", (-2, -1, 0, 1, 2))``.

    Args:
        spec: ``NAME`` or ``NAME=MIN:MAX:STEPS`` (STEPS >= 2 evenly spaced strengths, ends included;
            STEPS = 1 gives MIN only).

    Raises:
        EditError: On a malformed spec (the message shows the expected form).
    """
    from dhr.editing.directions import parse_edit_spec
    from dhr.errors import EditError

    form = "expected NAME or NAME=MIN:MAX:STEPS, e.g. 'age' or 'age=-3:3:7'"
    if not isinstance(spec, str) or not spec.strip():
        raise EditError(f"--sweep {spec!r}: {form}")
    if "=" in spec:
        name, rng = (part.strip() for part in spec.split("=", 1))
    else:
        name, rng = spec.strip(), ""
    parse_edit_spec(f"{name}=0")  # validates the name
    if rng:
        parts = rng.split(":")
        if len(parts) != 3:
            raise EditError(f"--sweep {spec!r}: range {rng!r} must be MIN:MAX:STEPS; {form}")
        try:
            lo, hi = float(parts[0]), float(parts[1])
            steps = int(parts[2])
        except ValueError:
            raise EditError(f"--sweep {spec!r}: MIN and MAX must be numbers and STEPS an integer; {form}") from None
        from dhr.editing.directions import check_strength

        lo, hi = check_strength(lo, f"--sweep {spec!r} MIN"), check_strength(hi, f"--sweep {spec!r} MAX")
        if not 1 <= steps <= 100:
            raise EditError(f"--sweep {spec!r}: STEPS={steps} must be between 1 and 100")
    else:
        lo, hi, steps = DEFAULT_SWEEP
    if steps == 1:
        return name, (lo,)
    return name, tuple(round(lo + (hi - lo) * i / (steps - 1), 10) for i in range(steps))


def _usage(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(EXIT_USAGE)


def _progress_mode(quiet: bool, as_json: bool) -> str:
    if quiet and as_json:
        raise _usage("--quiet and --json exclude each other")
    return "json" if as_json else ("quiet" if quiet else "rich")


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
        raise _usage(str(e)) from None
    return pipe


def _check_edits(pipe, edit_specs: list[str]) -> list[dict[str, float]]:
    try:
        edits = parse_edit_options(edit_specs)
        for combo in edits:
            pipe.validate_edits(combo)
    except DHRError as e:
        raise _usage(str(e)) from None
    return edits


def _check_sweeps(pipe, sweep_specs: list[str]) -> list[tuple[str, tuple[float, ...]]]:
    try:
        sweeps = [parse_sweep_option(spec) for spec in sweep_specs]
        for name, _ in sweeps:
            pipe.validate_edits({name: 0.0})
    except DHRError as e:
        raise _usage(str(e)) from None
    return sweeps


def _record_setup(record, pipe) -> None:
    from dhr.records import model_identity

    record.model = model_identity(pipe.model)
    record.config = pipe.config.to_dict()
    record.device = str(pipe.device)
    record.seed = pipe.seed


def run_fingerprint(command: str, pipe, job: dict[str, Any]) -> dict[str, Any]:
    """What a batch command's outputs depend on besides the input bytes (compared on resume).

    Args:
        command: ``run``, ``invert``, ``align``, ``edit``.
        pipe: The pipeline (model identity, resolved config and seed).
        job: The command's output options (edits, sweeps, face choice, ...), JSON-safe.
    """
    import hashlib

    from dhr.records import model_identity

    model = model_identity(pipe.model)
    doc = {"command": command, "model": [model["name"], model["generator_sha256"]],
           "config": pipe.config.to_dict(), "seed": pipe.seed, "job": job}
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"command": command, "model_sha256": model["generator_sha256"], "digest": digest}


def _resumable(prev: dict[str, Any] | None, rec, fingerprint: dict[str, Any] | None) -> tuple[bool, str | None]:
    """Whether an earlier record of the same input can stand for this run, and why not."""
    from dhr.outputs import verify_outputs

    if prev is None or prev.get("status") != "ok":
        return False, None
    if fingerprint is None or prev.get("fingerprint") != fingerprint:
        return False, "redone: the earlier run used another model, config or options"
    if rec.sha256 is None or prev.get("sha256") != rec.sha256:
        return False, "redone: the input changed since the earlier run"
    if prev.get("name") != rec.name:
        return False, "redone: its output name changed"
    problem = verify_outputs(prev.get("faces") or [])
    if problem:
        return False, f"redone: an output of the earlier run is damaged ({problem})"
    return True, None


def _batch(command: str, items: list[str], out: Path, options: dict[str, Any], mode: str, pipe,
           work, *, skipped: list[dict[str, str]] | None = None, fingerprint: dict[str, Any] | None = None,
           resume: bool = True, sha_path=None) -> int:
    """Runs ``work(path, input_record, reporter)`` for each input with records, progress and exit codes.

    Holds the output folder's lock for the whole batch, gives every input a unique output name
    (``rec.name``), merges the records of earlier runs into ``run.json`` and, with ``resume``,
    reuses an earlier result of the same input when its sha256 and ``fingerprint`` match and its
    files read back. Any exception of one input (MemoryError included) is recorded on it and the
    next input runs, except KeyboardInterrupt / SystemExit and :data:`PROGRAMMING_ERRORS`: a bug in
    dhr is recorded on the input, then stops the batch and surfaces (``dhr`` exits 4 with the
    traceback) instead of failing every photo the same way.
    """
    from dhr.outputs import FolderLock, assign_names, check_output_folder, clean_stale_temps
    from dhr.progress import make_reporter
    from dhr.records import RunRecord, WarningCollector, file_sha256

    try:
        check_output_folder(out)
        lock = FolderLock(out, f"dhr {command}").acquire()
    except DHRError as e:
        raise _usage(str(e)) from None
    try:
        record = RunRecord(out, command, options)
        _record_setup(record, pipe)
        record.load_earlier()
        clean_stale_temps(out)
        record.skipped = list(skipped or [])
        names, rename_notes = assign_names(items, record.name_claims())
        record.warnings.extend(rename_notes)
        reporter = make_reporter(mode)
        reporter.start_batch(len(items), what="bundles" if command == "edit" else "photos")
        resumed = 0
        recs = []
        for item in items:  # every input is in run.json (pending) before the first one starts
            rec = record.add_input(item)
            rec.name, rec.fingerprint = names[item], fingerprint
            if sha_path is not None:
                rec.sha256 = file_sha256(sha_path(item))
            rec.notes.extend(n.split(": ", 1)[1] for n in rename_notes if n.startswith(f"{item}: "))
            recs.append(rec)
        record.write()
        crashed = False
        try:
            for i, (item, rec) in enumerate(zip(items, recs)):
                reporter.start_item(Path(item).name, i)
                ok, why = _resumable(record.earlier_entry(item), rec, fingerprint) if resume else (False, None)
                if ok:
                    prev = record.earlier_entry(item)
                    for key in ("faces", "warnings", "notes", "seconds"):
                        setattr(rec, key, prev.get(key) or getattr(rec, key))
                    rec.status = "ok"
                    rec.notes = [*rec.notes, "finished in an earlier run (resumed; its files were checked)"]
                    resumed += 1
                    reporter.end_item(Path(item).name, rec.status, None)
                    continue
                if why:
                    rec.notes.append(why)
                t0 = time.perf_counter()
                with WarningCollector() as warn:
                    try:
                        work(item, rec, reporter)
                        rec.status = "ok"
                    except (KeyboardInterrupt, SystemExit):
                        raise
                    except PROGRAMMING_ERRORS as e:
                        rec.fail(e)
                        rec.notes.append("a bug in dhr stopped the batch here (exit code 4); rerun the same "
                                         "command after the fix to resume")
                        crashed = True
                        raise
                    except DHRError as e:
                        rec.fail(e)
                    except BaseException as e:  # noqa: BLE001 - MemoryError, decoder bugs, ...: this photo only
                        log.debug("%s failed", item, exc_info=True)
                        rec.fail(e)
                        if not isinstance(e, (OSError, MemoryError)):
                            rec.notes.append(f"unexpected {type(e).__name__}; run with --json or logging "
                                             "DEBUG for the traceback")
                rec.warnings.extend(warn.messages)
                record.add_stage_timings(rec)
                for m in warn.messages:
                    reporter.note("warning", f"{Path(item).name}: {m}")
                rec.seconds = round(time.perf_counter() - t0, 4)
                reporter.end_item(Path(item).name, rec.status, rec.error)
                record.write()
        finally:
            path = record.write()
            counts = record.counts
            reporter.finish({**counts, "record": str(path), "exit_code": EXIT_CRASH if crashed else record.exit_code(),
                             "skipped": record.skipped, "resumed": resumed})
            reporter.close()
    finally:
        lock.release()
    return record.exit_code()


def _photo_work(pipe, tree, *, face_index: int | None, all_faces: bool, whole_image: bool, masks: bool,
                inversion: bool, bundle: bool, edits: list[dict[str, float]], align_only: bool = False,
                sweeps: list[tuple[str, tuple[float, ...]]] | None = None, sheet: bool = False,
                ood_mask: Path | None = None):
    from dhr.jobs import PhotoJob, process_photo

    job = PhotoJob.from_lists(edits, sweeps or [], face_index=face_index, all_faces=all_faces,
                              whole_image=whole_image, masks=masks, inversion=inversion, bundle=bundle,
                              align_only=align_only, sheet=sheet,
                              ood_mask=None if ood_mask is None else str(ood_mask))

    def work(item: str, rec, reporter) -> None:
        process_photo(pipe, item, tree, job, rec, reporter, name=rec.name)

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

_MODEL_HELP = "Bundled model name (dhr models list) or a model folder."
_METHOD_HELP = "dhr (hybrid refinement), pti, feature, encoder or optim; default from --config (dhr)."


def _common(model, method, device, seed, config, perceptual, quiet, as_json, sets=None, parser="auto",
            trust_parser=False, paste_mode="auto"):
    mode = _progress_mode(quiet, as_json)
    pipe = _build_pipeline(model, device, config, seed, method, perceptual, sets, parser, trust_parser, paste_mode)
    return mode, pipe


_PARSER_HELP = ("Face parser of DHR's segmentation: auto (the model's, landmarks for faces-64), landmarks (never "
                "marks anything out of domain), bisenet, farl (the reference's) or none. bisenet/farl need their "
                "weights (dhr weights list).")
_TRUST_PARSER_HELP = "Allow loading the farl TorchScript file without a registry digest (it runs code from the file)."

_PASTE_HELP = ("How edits go back into the photo: delta (add the change edit - inversion, the photo keeps its "
               "own detail), crop (replace the face by the model's crop) or auto (delta when the model's crop "
               "is smaller than the face in the photo). Recorded per face in run.json.")

_SET_HELP = ("KEY=VALUE config override, repeatable, applied last (e.g. --set segment.theta_skin=0.3 "
             "--set refine.steps=300).")


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
    if face_index is not None and all_faces:
        raise _usage("--face-index and --all-faces exclude each other")
    _check_out(out)
    mode, pipe = _common(model, method, device, seed, config, perceptual, quiet, as_json, sets, parser, trust_parser,
                         paste_mode)
    edits = _check_edits(pipe, edit)
    sweeps = _check_sweeps(pipe, sweep)
    items, skipped = expand_inputs_report(photos)
    if not items:
        raise _usage("no input photos" + (f" ({len(skipped)} entries skipped: " +
                                           "; ".join(f"{e['path']}: {e['reason']}" for e in skipped[:5]) + ")"
                                           if skipped else ""))
    _check_ood_mask(ood_mask, items, pipe)
    return mode, pipe, edits, sweeps, items, skipped


def _check_out(out: Path | None) -> None:
    """Usage error (exit 2) when ``out`` cannot be an output folder (see :func:`dhr.outputs.check_output_folder`)."""
    if out is None:
        return
    from dhr.outputs import check_output_folder

    try:
        check_output_folder(out)
    except DHRError as e:
        raise _usage(str(e)) from None


def _check_ood_mask(ood_mask: Path | None, items: list[str], pipe) -> None:
    if ood_mask is None:
        return
    if len(items) != 1:
        raise _usage(f"--ood-mask is drawn on one photo, but {len(items)} inputs were given; run them one by one")
    if pipe.config.method != "dhr":
        raise _usage(f"--ood-mask replaces DHR's segmentation; it does not apply to --method {pipe.config.method}")
    from dhr.io.image import load_mask_array

    try:
        load_mask_array(ood_mask)  # missing, unsupported, bomb, corrupt: a usage error before any work
    except DHRError as e:
        raise _usage(f"--ood-mask: {e}") from None


def register(app: typer.Typer) -> None:
    """Adds ``run``, ``align``, ``invert``, ``edit``, ``serve`` and the ``models`` group to the root app."""

    @app.command("run", no_args_is_help=True)
    def run_cmd(
        photos: list[str] = typer.Argument(..., help="Photos, folders or globs ('shots/*.jpg')."),
        edit: list[str] = typer.Option([], "--edit", "-e", help="NAME=STRENGTH, repeatable; commas combine "
                                       "(--edit age=+2,gender=-1). Each --edit gives one output."),
        sweep: list[str] = typer.Option([], "--sweep", help="NAME[=MIN:MAX:STEPS], repeatable (default range "
                                        "-3:3:7): per face a strength-sweep grid PNG, GIF and MP4 in sweeps/."),
        out: Path = typer.Option(_DEFAULT_OUT, "--out", "-o", help="Output folder (run.json and the output tree)."),
        model: str = typer.Option("faces-64", "--model", "-m", help=_MODEL_HELP),
        method: str | None = typer.Option(None, "--method", help=_METHOD_HELP),
        device: str = typer.Option("auto", "--device", help="auto (cuda > mps > cpu), cpu, cuda or mps."),
        seed: int = typer.Option(0, "--seed", help="Random seed (runs are reproducible)."),
        config: Path | None = typer.Option(None, "--config", "-c", help="InvertConfig file (TOML/YAML/JSON)."),
        set_: list[str] = typer.Option([], "--set", help=_SET_HELP),
        ood_mask: Path | None = typer.Option(None, "--ood-mask", help="Your out-of-domain mask for the (single) "
                                             "photo, white = keep as is (hands, glasses); replaces DHR's segmentation."),
        face_index: int | None = typer.Option(None, "--face-index", help="Which face (0 = largest; default 0)."),
        all_faces: bool = typer.Option(False, "--all-faces", help="Process every detected face."),
        whole_image: bool = typer.Option(False, "--whole-image", help="When no face is found, process the "
                                         "whole image resized (recorded in run.json)."),
        perceptual: str = typer.Option("model", "--perceptual", help="model (its own metric), alex, vgg or squeeze."),
        parser: str = typer.Option("auto", "--parser", help=_PARSER_HELP),
        trust_parser: bool = typer.Option(False, "--trust-parser", help=_TRUST_PARSER_HELP),
        paste: str = typer.Option("auto", "--paste", help=_PASTE_HELP),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
        as_json: bool = typer.Option(False, "--json", help="JSON lines progress events on stdout."),
        no_resume: bool = typer.Option(False, "--no-resume", help="Redo inputs finished by an earlier run into "
                                       "the same --out (default: reuse them when input, model, config and "
                                       "options match and their files read back)."),
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
                   "parser": pipe.parser, "paste": paste}
        work = _photo_work(pipe, tree, face_index=face_index, all_faces=all_faces, whole_image=whole_image,
                           masks=True, inversion=True, bundle=True, edits=edits, sweeps=sweeps, sheet=True,
                           ood_mask=ood_mask)
        raise typer.Exit(_batch("run", items, out, options, mode, pipe, work, skipped=skipped,
                                fingerprint=run_fingerprint("run", pipe, _job_options(work)), resume=not no_resume))

    @app.command("align", no_args_is_help=True)
    def align_cmd(
        photos: list[str] = typer.Argument(..., help="Photos, folders or globs."),
        out: Path = typer.Option(_DEFAULT_OUT, "--out", "-o", help="Output folder."),
        model: str = typer.Option("faces-64", "--model", "-m", help=_MODEL_HELP + " (its template and size)"),
        face_index: int | None = typer.Option(None, "--face-index", help="Which face (0 = largest; default 0)."),
        all_faces: bool = typer.Option(False, "--all-faces", help="Align every detected face."),
        whole_image: bool = typer.Option(False, "--whole-image", help="Fit the whole image when no face is found."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
        as_json: bool = typer.Option(False, "--json", help="JSON lines progress events on stdout."),
        no_resume: bool = typer.Option(False, "--no-resume", help="Redo inputs finished by an earlier run into "
                                       "the same --out (default: reuse them when input, model, config and "
                                       "options match and their files read back)."),
    ) -> None:
        """Detect and align faces at the model resolution; writes OUT/aligned/ and run.json.

        Examples:

          dhr align photo.jpg -o out/

          dhr align shots/ --all-faces --json
        """
        if face_index is not None and all_faces:
            raise _usage("--face-index and --all-faces exclude each other")
        _check_out(out)
        mode, pipe = _common(model, None, "cpu", 0, None, "model", quiet, as_json)
        items, skipped = expand_inputs_report(photos)
        from dhr.records import OutputTree

        tree = OutputTree(out)
        options = {"photos": photos, "out": out, "model": model, "face_index": face_index, "all_faces": all_faces,
                   "whole_image": whole_image}
        work = _photo_work(pipe, tree, face_index=face_index, all_faces=all_faces, whole_image=whole_image,
                           masks=False, inversion=False, bundle=False, edits=[], align_only=True)
        raise typer.Exit(_batch("align", items, out, options, mode, pipe, work, skipped=skipped,
                                fingerprint=run_fingerprint("align", pipe, _job_options(work)), resume=not no_resume))

    @app.command("invert", no_args_is_help=True)
    def invert_cmd(
        photos: list[str] = typer.Argument(..., help="Photos, folders or globs."),
        out: Path = typer.Option(_DEFAULT_OUT, "--out", "-o", help="Output folder."),
        model: str = typer.Option("faces-64", "--model", "-m", help=_MODEL_HELP),
        method: str | None = typer.Option(None, "--method", help=_METHOD_HELP),
        device: str = typer.Option("auto", "--device", help="auto (cuda > mps > cpu), cpu, cuda or mps."),
        seed: int = typer.Option(0, "--seed", help="Random seed."),
        config: Path | None = typer.Option(None, "--config", "-c", help="InvertConfig file (TOML/YAML/JSON)."),
        face_index: int | None = typer.Option(None, "--face-index", help="Which face (0 = largest; default 0)."),
        all_faces: bool = typer.Option(False, "--all-faces", help="Process every detected face."),
        whole_image: bool = typer.Option(False, "--whole-image", help="Process the whole image when no face is found."),
        set_: list[str] = typer.Option([], "--set", help=_SET_HELP),
        ood_mask: Path | None = typer.Option(None, "--ood-mask", help="Your out-of-domain mask for the (single) "
                                             "photo, white = keep as is (hands, glasses); replaces DHR's segmentation."),
        perceptual: str = typer.Option("model", "--perceptual", help="model, alex, vgg or squeeze."),
        parser: str = typer.Option("auto", "--parser", help=_PARSER_HELP),
        trust_parser: bool = typer.Option(False, "--trust-parser", help=_TRUST_PARSER_HELP),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
        as_json: bool = typer.Option(False, "--json", help="JSON lines progress events on stdout."),
        no_resume: bool = typer.Option(False, "--no-resume", help="Redo inputs finished by an earlier run into "
                                       "the same --out (default: reuse them when input, model, config and "
                                       "options match and their files read back)."),
    ) -> None:
        """Invert photos and write reusable bundles (OUT/bundles/) plus aligned/, masks/, inversion/.

        Edit the bundles later without optimising: dhr edit OUT/bundles/ --edit age=+2

        Examples:

          dhr invert photo.jpg -o out/

          dhr invert shots/ --method pti --config pti.toml --seed 3
        """
        if face_index is not None and all_faces:
            raise _usage("--face-index and --all-faces exclude each other")
        _check_out(out)
        mode, pipe = _common(model, method, device, seed, config, perceptual, quiet, as_json, set_, parser,
                             trust_parser)
        items, skipped = expand_inputs_report(photos)
        _check_ood_mask(ood_mask, items, pipe)
        from dhr.records import OutputTree

        tree = OutputTree(out)
        options = {"photos": photos, "out": out, "model": model, "method": pipe.config.method, "set": set_,
                   "ood_mask": ood_mask,
                   "device": device,
                   "seed": seed, "config": config, "face_index": face_index, "all_faces": all_faces,
                   "whole_image": whole_image, "perceptual": perceptual, "parser": pipe.parser}
        work = _photo_work(pipe, tree, face_index=face_index, all_faces=all_faces, whole_image=whole_image,
                           masks=True, inversion=True, bundle=True, edits=[], ood_mask=ood_mask)
        raise typer.Exit(_batch("invert", items, out, options, mode, pipe, work, skipped=skipped,
                                fingerprint=run_fingerprint("invert", pipe, _job_options(work)), resume=not no_resume))

    @app.command("edit", no_args_is_help=True)
    def edit_cmd(
        bundles: list[str] = typer.Argument(..., help="Bundles (<stem>, <stem>.json or <stem>.safetensors), "
                                            "folders of bundles, or globs."),
        edit: list[str] = typer.Option([], "--edit", "-e", help="NAME=STRENGTH, repeatable; commas combine."),
        sweep: list[str] = typer.Option([], "--sweep", help="NAME[=MIN:MAX:STEPS], repeatable (default range "
                                        "-3:3:7): per face a strength-sweep grid PNG, GIF and MP4 in sweeps/."),
        out: Path = typer.Option(_DEFAULT_OUT, "--out", "-o", help="Output folder."),
        model: str = typer.Option("faces-64", "--model", "-m", help=_MODEL_HELP + " (the one the bundles used)"),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps."),
        paste: str = typer.Option("auto", "--paste", help=_PASTE_HELP),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
        as_json: bool = typer.Option(False, "--json", help="JSON lines progress events on stdout."),
        no_resume: bool = typer.Option(False, "--no-resume", help="Redo inputs finished by an earlier run into "
                                       "the same --out (default: reuse them when input, model, config and "
                                       "options match and their files read back)."),
    ) -> None:
        """Edit saved inversions without re-optimising; pastes into the photo when it is still there.

        Writes edits/<edit>/, pasted/, sheets/ and (with --sweep) sweeps/ plus run.json.

        Examples:

          dhr edit out/bundles/ --sweep age=-2:2:5 -o edited/

          dhr edit out/bundles/ --edit age=+2 --edit gender=-1 -o edited/

          dhr edit out/bundles/photo_face0 --edit age=-1 --edit gender=+1,pc0=2
        """
        _check_out(out)
        mode, pipe = _common(model, None, device, 0, None, "model", quiet, as_json, paste_mode=paste)
        edits = _check_edits(pipe, edit)
        sweeps = _check_sweeps(pipe, sweep)
        if not edits and not sweeps:
            raise _usage("give at least one --edit NAME=STRENGTH or --sweep NAME[=MIN:MAX:STEPS]")
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
            face = {"stem": pi.stem, "method": pi.inversion.method, "whole_image": pi.whole_image,
                    "photo": None if pi.photo is None else str(pi.photo.path)}
            rec.faces.append(face)
            save_face(pipe, pi, tree, face, masks=False, inversion=False, bundle=False, edits=edits, paste=True,
                       aligned=False, sweeps=sweeps, sheet=True)

        from dhr.bundle import bundle_paths

        job = {"edits": edits, "sweeps": sweeps}
        raise typer.Exit(_batch("edit", items, out, options, mode, pipe, work, fingerprint=run_fingerprint(
            "edit", pipe, job), resume=not no_resume, sha_path=lambda item: bundle_paths(item)[0]))

    @app.command("serve")
    def serve_cmd(
        model: str = typer.Option("faces-64", "--model", "-m", help=_MODEL_HELP),
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (default: this machine only)."),
        port: int = typer.Option(7860, "--port", help="TCP port."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps."),
        config: Path | None = typer.Option(None, "--config", "-c", help="InvertConfig file (TOML/YAML/JSON)."),
        seed: int = typer.Option(0, "--seed", help="Random seed."),
        max_pixels: int | None = typer.Option(None, "--max-pixels", min=1, help="Refuse uploaded photos with more "
                                              "pixels (width x height); default 50,000,000."),
        parser: str = typer.Option("auto", "--parser", help=_PARSER_HELP),
        trust_parser: bool = typer.Option(False, "--trust-parser", help=_TRUST_PARSER_HELP),
        paste: str = typer.Option("auto", "--paste", help=_PASTE_HELP),
    ) -> None:
        """Start the local web UI (needs gradio: pip install gradio).

        Upload a photo, see the aligned face, mask and inversion, edit with one slider per direction,
        download the pasted photo and the bundle.

        Bad uploads (not an image, more than --max-pixels) are reported in the page.

        Example: dhr serve --port 7860   (then open http://127.0.0.1:7860)
        """
        try:
            from dhr.web.app import serve
        except ImportError as e:
            raise _usage(str(e)) from None
        try:
            serve(model, host=host, port=port, device=device, config=config, seed=seed, block=True,
                  max_pixels=max_pixels, parser=parser, trust_parser=trust_parser, paste_mode=paste)
        except ImportError as e:
            raise _usage(str(e)) from None
        except DHRError as e:
            raise _usage(str(e)) from None

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


# --------------------------------------------------------------------------------------------
# dhr models


def _load_model_or_exit(name: str):
    from dhr.models.zoo import load_model

    try:
        return load_model(name)
    except DHRError as e:
        raise _usage(str(e)) from None


def _model_summary(model) -> dict[str, Any]:
    from dhr.records import model_identity

    info = model_identity(model)
    man = model.manifest or {}
    comps = {}
    for key in ("generator", "encoder", "perceptual", "classifier"):
        m = getattr(model, key)
        if m is not None:
            cfg = getattr(m, "config", None)
            cfg_d = cfg.to_dict() if hasattr(cfg, "to_dict") else (vars(cfg) if cfg is not None else {})
            comps[key] = {"class": type(m).__name__, "parameters": sum(p.numel() for p in m.parameters()),
                          "config": json.loads(json.dumps(cfg_d, default=str))}
    directions = []
    if model.directions is not None:
        for name in model.directions.names():
            d = model.directions[name]
            directions.append({"name": name, "kind": d.kind, "space": d.space,
                               "layers": None if d.layers is None else list(d.layers), "source": d.source})
    return {**info, "description": man.get("description", ""), "licence": man.get("licence"),
            "parser": man.get("parser"), "perceptual_name": man.get("perceptual_name"),
            "card": str(Path(model.path) / man["card"]) if man.get("card") else None,
            "template": model.template is not None, "training": man.get("training"),
            "recommended_config": man.get("config") or {},
            "components": comps, "directions": directions}


@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the bundled models (name, resolution, description).

    Example: dhr models list
    """
    from dhr.models.zoo import available_models

    rows = []
    for name in available_models():
        try:
            m = _load_model_or_exit(name)
        except typer.Exit:
            rows.append({"name": name, "error": "failed to load"})
            continue
        rows.append({"name": name, "resolution": m.resolution, "description": (m.manifest or {}).get("description", ""),
                     "directions": [] if m.directions is None else m.directions.names()})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no bundled models installed")
        return
    for r in rows:
        if "error" in r:
            typer.echo(f"{r['name']}: {r['error']}")
        else:
            typer.echo(f"{r['name']}  {r['resolution']}px  directions: {', '.join(r['directions']) or '-'}  "
                       f"{r['description']}")


@models_app.command("show")
def models_show(
    name: str = typer.Argument(..., help="Model name or folder."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a model: components, edit directions, training facts, licence, generator sha256.

    Example: dhr models show faces-64
    """
    summary = _model_summary(_load_model_or_exit(name))
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    typer.echo(f"{summary['name']} ({summary['resolution']} px) at {summary['path']}")
    if summary["description"]:
        typer.echo(f"  {summary['description']}")
    typer.echo(f"  generator sha256: {summary['generator_sha256']}")
    typer.echo(f"  licence: {summary['licence'] or '-'}   parser: {summary['parser'] or '-'}   "
               f"template: {'model' if summary['template'] else 'ffhq'}")
    typer.echo("  components:")
    for key, c in summary["components"].items():
        typer.echo(f"    {key:<11} {c['class']:<20} {c['parameters']:>10,} params  {json.dumps(c['config'])}")
    typer.echo("  directions:" + ("" if summary["directions"] else " none"))
    for d in summary["directions"]:
        layers = "all" if d["layers"] is None else f"{d['layers'][0]}:{d['layers'][1]}"
        typer.echo(f"    {d['name']:<14} {d['kind']:<12} {d['space']:<3} layers {layers:<6} {d['source']}")
    if summary["recommended_config"]:
        typer.echo(f"  recommended inversion settings (over the reference defaults): "
                   f"{json.dumps(summary['recommended_config'])}")
    if summary["training"]:
        typer.echo(f"  training: {json.dumps(summary['training'], default=str)}")
    if summary["card"]:
        typer.echo(f"  model card: {summary['card']}")
