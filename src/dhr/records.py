"""Run records: every ``dhr`` batch command writes ``run.json`` beside its outputs.

Output tree of a run folder (:class:`OutputTree`)::

    OUT/
      run.json            the record (RunRecord.to_dict)
      aligned/            <stem>.png        aligned crops at the model resolution
      masks/              <stem>_mask.png, <stem>_error.png, ... (domain PNGs)
      inversion/          <stem>.png        reconstructions
      edits/<edit>/       <stem>.png        edited crops, one folder per edit
      pasted/             <stem>_<edit>.png edits (and the reconstruction) pasted into the photo
      bundles/            <stem>.safetensors + <stem>.json (reusable results, see dhr.bundle)

The record holds: the command and its options, every input with its sha256, per-input status
(``ok``/``failed``) and error message, outputs per face, per-stage timings and final losses,
warnings, the model (name, folder, sha256 of the generator's safetensors), the full configuration,
the device, the seed and the versions of dhr, torch, numpy and python.
"""

from __future__ import annotations

import datetime as _dt
import logging
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from dhr.fileio import read_json, sha256_file, to_jsonable, write_json_atomic
from dhr.outputs import path_key

__all__ = [
    "RUN_JSON",
    "InputRecord",
    "OutputTree",
    "RunRecord",
    "WarningCollector",
    "environment",
    "file_sha256",
    "final_losses",
    "model_identity",
]

RUN_JSON = "run.json"
_RECORD_VERSION = 1


def file_sha256(path: str | Path) -> str | None:
    """Hex sha256 of a file, or None when it cannot be read."""
    try:
        return sha256_file(path)
    except OSError:
        return None


def environment() -> dict[str, Any]:
    """Versions of dhr, torch, numpy and python, the platform, and torch's thread count with its source."""
    # Lazy: run records are read and merged by the CLI before any model is loaded; torch is
    # imported here only when a record is written.
    import numpy
    import torch

    import dhr

    from dhr.threads import applied_settings

    applied = applied_settings()
    return {
        "dhr": dhr.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "argv": list(sys.argv),
        # results can differ in the last bits with the thread count (reduction order)
        "torch_threads": torch.get_num_threads(),
        "threads_source": applied.source if applied and applied.threads == torch.get_num_threads() else "torch default",
    }


def model_identity(model: Any) -> dict[str, Any]:
    """Name, folder and the sha256 of the generator's ``model.safetensors`` of a loaded model.

    Args:
        model: A :class:`dhr.models.zoo.FaceModel`.
    """
    from dhr.models.checkpoint import WEIGHTS_NAME  # lazy: as environment(), no torch to read records

    folder = Path(model.path)
    comps = (model.manifest or {}).get("components", {})
    gen_dir = folder / comps["generator"] if "generator" in comps else folder
    weights = gen_dir / WEIGHTS_NAME
    return {
        "name": model.name,
        "path": str(folder),
        "generator_sha256": file_sha256(weights) if weights.is_file() else None,
        "resolution": int(model.generator.resolution),
        "components": sorted(k for k in ("encoder", "perceptual", "classifier", "directions")
                             if getattr(model, k, None) is not None),
    }


def final_losses(losses: dict[str, list[float]]) -> dict[str, float]:
    """The last value of every loss curve (curves that are empty are left out)."""
    return {k: float(v[-1]) for k, v in losses.items() if v}


@dataclass(frozen=True)
class OutputTree:
    """The folders of a run (created on first use)."""

    root: Path

    def _dir(self, *parts: str) -> Path:
        p = self.root.joinpath(*parts)
        p.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def aligned(self) -> Path:
        return self._dir("aligned")

    @property
    def masks(self) -> Path:
        return self._dir("masks")

    @property
    def inversion(self) -> Path:
        return self._dir("inversion")

    @property
    def pasted(self) -> Path:
        return self._dir("pasted")

    @property
    def bundles(self) -> Path:
        return self._dir("bundles")

    def edits(self, name: str) -> Path:
        """``edits/<name>/``."""
        return self._dir("edits", name)

    @property
    def record(self) -> Path:
        return self.root / RUN_JSON


@dataclass
class InputRecord:
    """What happened to one input (a photo or a bundle).

    Attributes:
        path: As given (after folder/glob expansion).
        sha256: Of the file's bytes, or None if unreadable.
        status: ``pending``, ``ok`` or ``failed``.
        error: The error message when failed.
        error_type: The exception class name when failed.
        faces: One dict per processed face: stem, face index, whole-image flag, outputs,
            timings, final losses.
        warnings: Warnings logged while processing this input.
        notes: Remarks (loader conversions, fallbacks).
        seconds: Wall time spent on this input.
        name: Its output name (unique in the output folder, see :func:`dhr.outputs.assign_names`).
        fingerprint: What its outputs depend on besides the input bytes (model, config, job); resume
            reuses a finished input only when sha256 and fingerprint match and its files read back.
    """

    path: str
    sha256: str | None = None
    status: str = "pending"
    error: str | None = None
    error_type: str | None = None
    faces: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    name: str | None = None
    fingerprint: dict[str, Any] | None = None

    def fail(self, exc: BaseException) -> None:
        """Marks the input failed with ``exc``'s message."""
        self.status = "failed"
        self.error = str(exc) or type(exc).__name__
        self.error_type = type(exc).__name__


class RunRecord:
    """Collects the facts of one run and writes them to ``run.json``.

    Args:
        root: The output folder.
        command: ``run``, ``align``, ``invert`` or ``edit``.
        options: The command's options (JSON-safe values).
    """

    def __init__(self, root: str | Path, command: str, options: dict[str, Any] | None = None) -> None:
        self.tree = OutputTree(Path(root))
        self.command = command
        self.options = dict(options or {})
        self.started = _dt.datetime.now(_dt.timezone.utc)
        self._t0 = time.perf_counter()
        self.model: dict[str, Any] | None = None
        self.config: dict[str, Any] | None = None
        self.device: str | None = None
        self.seed: int | None = None
        self.inputs: list[InputRecord] = []
        self.warnings: list[str] = []
        self.timings: dict[str, float] = {}
        self.skipped: list[dict[str, str]] = []
        self.earlier: list[dict[str, Any]] = []  # inputs of earlier runs into this folder (merged on write)

    def load_earlier(self) -> list[dict[str, Any]]:
        """Reads the inputs recorded by earlier runs into this folder (call it holding the folder lock).

        They are kept in ``run.json`` (``earlier_inputs``) unless this run records the same input
        again, so a rerun never drops what an earlier run finished. An unreadable ``run.json`` is
        moved aside to ``run.json.unreadable-<time>`` (and a warning recorded), never overwritten.

        Returns:
            The earlier input entries (plain dicts).
        """
        path = self.tree.record
        if not path.is_file():
            return self.earlier
        try:
            doc = read_json(path)
            version = doc.get("record_version", _RECORD_VERSION)
            if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= _RECORD_VERSION:
                raise ValueError(f"record_version {version!r:.40} is not one this dhr writes (1..{_RECORD_VERSION}); "
                                 "a newer dhr's record is not resumed")
            entries = [*doc.get("inputs", []), *doc.get("earlier_inputs", [])]
            if not all(isinstance(e, dict) and isinstance(e.get("path"), str) for e in entries):
                raise ValueError("inputs must be objects with a path")
        except (OSError, ValueError, AttributeError) as e:
            aside = path.with_name(f"{RUN_JSON}.unreadable-{int(time.time())}")
            path.replace(aside)
            self.warnings.append(f"the earlier {RUN_JSON} was unreadable ({e}); moved to {aside.name}")
            return self.earlier
        seen: dict[str, int] = {}
        for e in entries:
            key = path_key(e["path"])
            if key not in seen:
                seen[key] = len(self.earlier)
                self.earlier.append(e)
            elif self.earlier[seen[key]].get("status") == "pending" and e.get("status") != "pending":
                self.earlier[seen[key]] = e  # a killed run's pending entry never hides a finished one
        return self.earlier

    def earlier_entry(self, path: str | Path) -> dict[str, Any] | None:
        """The record of ``path`` from an earlier run into this folder, or None."""
        key = path_key(path)
        return next((e for e in self.earlier if path_key(e["path"]) == key), None)

    def name_claims(self) -> dict[str, str]:
        """Output name -> absolute input path, of the earlier runs (see :func:`dhr.outputs.assign_names`)."""
        return {e["name"]: path_key(e["path"]) for e in self.earlier if isinstance(e.get("name"), str)}

    def skip(self, path: str, reason: str) -> None:
        """Records an entry of the inputs that was not processed, with the reason."""
        self.skipped.append({"path": str(path), "reason": reason})

    def add_input(self, path: str | Path) -> InputRecord:
        """Registers an input (its sha256 is read now) and returns its record."""
        p = Path(path)
        rec = InputRecord(path=str(path), sha256=file_sha256(p) if p.is_file() else None)
        self.inputs.append(rec)
        return rec

    def add_stage_timings(self, rec: InputRecord) -> None:
        """Adds the per-stage timings (``*_s``, not ``total_s``) of ``rec``'s faces to the run totals.

        A batch's own wall time (``*_batch_s``, the same value on every face of the batch) is left
        out: each face's share of it is already in the per-face timing (``refine_s``)."""
        for face in rec.faces:
            for key, value in face.get("timings", {}).items():
                if key.endswith("_s") and key != "total_s" and not key.endswith("_batch_s"):
                    self.timings[key] = self.timings.get(key, 0.0) + float(value)

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Adds the wall time of the block to ``timings[stage + "_s"]``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            key = f"{stage}_s"
            self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - t0

    @property
    def counts(self) -> dict[str, int]:
        ok = sum(r.status == "ok" for r in self.inputs)
        failed = sum(r.status == "failed" for r in self.inputs)
        counts = {"total": len(self.inputs), "ok": ok, "failed": failed}
        pending = len(self.inputs) - ok - failed
        if pending:  # not run (yet, or the run was interrupted)
            counts["pending"] = pending
        return counts

    def exit_code(self) -> int:
        """0 all ok, 1 some failed (partial), 3 nothing succeeded (also when there were no inputs).

        Skipped folder entries (``skipped``) do not count: they are not inputs.
        """
        c = self.counts
        if c["ok"] == 0:
            return 3
        return 0 if c["failed"] == 0 else 1

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON data."""
        return to_jsonable({
            "record_version": _RECORD_VERSION,
            "command": self.command,
            "options": self.options,
            "started": self.started.isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - self._t0, 3),
            "status": "incomplete" if self.counts.get("pending") else {0: "ok", 1: "partial", 3: "failed"}[
                self.exit_code()],
            "counts": self.counts,
            "model": self.model,
            "config": self.config,
            "device": self.device,
            "seed": self.seed,
            "environment": environment(),
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "warnings": self.warnings,
            "skipped": self.skipped,
            "inputs": [vars(r) for r in self.inputs],
            "earlier_inputs": self._earlier_kept(),
        })

    def _earlier_kept(self) -> list[dict[str, Any]]:
        # Earlier entries stay until this run has an answer of its own for the same input.
        answered = {path_key(r.path) for r in self.inputs if r.status != "pending"}
        return [e for e in self.earlier if path_key(e["path"]) not in answered]

    def write(self) -> Path:
        """Writes ``run.json`` atomically (a unique temporary file renamed over it); returns its path.

        Inputs of earlier runs into the folder that this run does not redo stay in ``earlier_inputs``.
        """
        return write_json_atomic(self.tree.record, self.to_dict())


_INSTALLED: list[WarningCollector] = []
"""The :class:`WarningCollector` s now installed, innermost last."""


class WarningCollector(logging.Handler):
    """Collects ``WARNING`` and above log messages of the ``dhr`` loggers while installed.

    Example:
        >>> with WarningCollector() as w:
        ...     pipe.invert(photo)
        >>> w.messages
    """

    def __init__(self, logger_name: str = "dhr", *, capture: bool = False) -> None:
        """``capture=True`` also keeps the messages from the parent handlers (e.g. the root handler
        that prints to stderr) while installed, for a caller that reports them itself (the CLI).
        Collectors nest: while a capturing one is installed, the collectors installed before it on
        the same logger receive nothing (the inner owner decides where its messages go)."""
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []
        self._logger = logging.getLogger(logger_name)
        self._capture = capture
        self._propagate = self._logger.propagate

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> Self:
        self._suspended: list[WarningCollector] = []
        if self._capture:
            # the innermost capturing collector owns the messages: the outer ones on the same logger
            # pause (a batch collects per input, and an input may collect per photo inside)
            self._suspended = [c for c in _INSTALLED if c._logger is self._logger and c in self._logger.handlers]
            for c in self._suspended:
                self._logger.removeHandler(c)
        _INSTALLED.append(self)
        self._logger.addHandler(self)
        if self._capture:
            self._propagate, self._logger.propagate = self._logger.propagate, False
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
        if self in _INSTALLED:
            _INSTALLED.remove(self)
        if self._capture:
            self._logger.propagate = self._propagate
            for c in self._suspended:
                if c in _INSTALLED:
                    self._logger.addHandler(c)
