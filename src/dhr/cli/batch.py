"""The batch machinery of ``dhr run | align | invert | edit``: inputs, run records, resume, exit codes.

:func:`run_batch` runs one ``work(item, record, reporter)`` per input under the output folder's lock,
writes ``run.json`` (see :mod:`dhr.records`) after every input, resumes inputs finished by an earlier
run, and turns the outcome into the exit code: 0 (all inputs ok), 1 (some failed; the batch
continued), 2 (usage error / bad option, output folder unusable or in use), 3 (nothing succeeded)
or 4 (dhr itself crashed: a bug; see ``dhr.cli.main``).

Imports of the library sit inside the functions, as in the other ``dhr.cli`` modules (the CLI
loads what a command needs when it runs).
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import typer

from dhr.errors import PROGRAMMING_ERRORS, DHRError

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
    "progress_mode",
    "run_batch",
    "run_fingerprint",
    "usage_error",
]

log = logging.getLogger(__name__)

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_NOTHING, EXIT_CRASH = 0, 1, 2, 3, 4


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".jp2", ".j2k", ".jpx")


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
    from dhr.outputs import path_key

    out: list[str] = []
    skipped: list[dict[str, str]] = []
    seen: set[str] = set()

    def add(p: str) -> None:
        key = path_key(p)
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
            if not entries:
                skipped.append({"path": str(p), "reason": "empty folder (no photos in it)"})
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


def usage_error(message: str) -> typer.Exit:
    """Prints ``error: message`` to stderr and returns the exit (code 2) for the caller to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(EXIT_USAGE)


def progress_mode(quiet: bool, as_json: bool) -> str:
    """The reporter mode of ``--quiet`` / ``--json``: ``quiet``, ``json`` or ``rich`` (both at once: a usage error)."""
    if quiet and as_json:
        raise usage_error("--quiet and --json exclude each other")
    return "json" if as_json else ("quiet" if quiet else "rich")


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


def run_batch(command: str, items: list[str], out: Path, options: dict[str, Any], mode: str, pipe,
           work, *, skipped: list[dict[str, str]] | None = None, fingerprint: dict[str, Any] | None = None,
           resume: bool = True, sha_path=None) -> int:
    """Runs ``work(path, input_record, reporter)`` for each input with records, progress and exit codes.

    A ``work`` with a ``plan`` attribute is first given the list of inputs it will be called for,
    in order (those resumed from an earlier run are left out), so that it can process them in
    groups (``dhr run --batch``); it still reports, fails and is recorded per input.

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
        raise usage_error(str(e)) from None
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
        decisions = [_resumable(record.earlier_entry(item), rec, fingerprint) if resume else (False, None)
                     for item, rec in zip(items, recs)]
        plan = getattr(work, "plan", None)
        if plan is not None:  # a worker that groups inputs (dhr run --batch) learns which will run
            plan([item for item, (ok, _) in zip(items, decisions) if not ok])
        crashed = False
        try:
            for i, (item, rec) in enumerate(zip(items, recs)):
                reporter.start_item(Path(item).name, i)
                ok, why = decisions[i]
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
                # captured: the reporter prints each warning once (the root handler would print it again)
                with WarningCollector(capture=True) as warn:
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
                name = Path(item).name
                for m in warn.messages:
                    reporter.note("warning", m if m.startswith(f"{name}: ") else f"{name}: {m}")
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

