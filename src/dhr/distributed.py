"""Distributed engine: process many photos on a dask cluster (local processes or remote workers).

Each photo is one task. A worker builds the pipeline once (cached per worker process, keyed by
:class:`PipelineSpec`) and runs :func:`dhr.jobs.process_photo` on it, which is exactly what
``dhr run`` does in process, so both write identical files into the same output tree. Workers
write their outputs directly into ``out`` (remote workers need a shared file system) and finish
each photo with a small record ``out/records/<key>.json``, written atomically. The client gathers
the records into ``run.json`` as results arrive.

Robustness:

* a photo that fails (bad file, no face, out of memory) is recorded with its error and the rest go
  on; a worker that dies is recorded against the photo it was running;
* a bug in dhr (:data:`dhr.errors.PROGRAMMING_ERRORS`: ``TypeError``, ``NameError``) is recorded on
  its photo, then stops the batch and surfaces (``dhr dist`` exits 4 with the traceback) instead of
  failing every photo the same way; photos finished before it keep their files and records;
* finished photos survive anything that happens later: their files and records are on disk;
* ``resume=True`` (default) skips photos whose record says ``ok`` for the same input bytes
  (sha256), the same pipeline, job and output name, and whose files all exist and read back, so a
  rerun after a crash does only what is missing (a deleted or zeroed output is redone);
* one process at a time writes ``out`` (:class:`dhr.outputs.FolderLock`), every file is written
  atomically, photos with the same stem get distinct output names (:func:`dhr.outputs.assign_names`,
  the same names ``dhr run`` gives) and ``run.json`` keeps the photos of earlier runs.

Determinism: the pipeline reseeds before every photo, so results do not depend on which worker
ran a photo or in which order (tested against the in-process ``dhr run``).

Example:
    >>> from dhr.distributed import PipelineSpec, run_distributed
    >>> from dhr.jobs import PhotoJob
    >>> record = run_distributed(["a.jpg", "b.jpg"], "out", PipelineSpec(model="faces-64"),
    ...                          PhotoJob.from_lists([{"age": 2.0}]), n_workers=2)
    >>> record.counts
    {'total': 2, 'ok': 2, 'failed': 0}
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dhr.errors import PROGRAMMING_ERRORS, ConfigError, DHRError
from dhr.jobs import PhotoJob

__all__ = ["PipelineSpec", "item_key", "run_distributed", "process_item", "process_items", "quiet_dask_logs",
           "RECORDS_DIR"]

log = logging.getLogger(__name__)

RECORDS_DIR = "records"
EXIT_CRASH = 4
"""The exit code the progress summary reports when a bug stopped the batch (as ``dhr`` exits)."""
BUG_NOTE = ("a bug in dhr stopped the batch here (exit code 4); rerun the same command after the fix to "
            "resume")
_PIPELINES: dict[str, Any] = {}  # per worker process: PipelineSpec fingerprint -> Pipeline


@dataclass(frozen=True)
class PipelineSpec:
    """How a worker builds its pipeline (plain data: it is sent to every worker).

    Attributes:
        model: Bundled model name or a model folder (visible to the workers at the same path).
        config: InvertConfig as a dict, a path to a TOML/YAML/JSON file, or None for the defaults.
        seed: Seed applied before every photo.
        method: Overrides ``config.method`` (``dhr``, ``pti``, ``feature``, ``encoder``, ``optim``).
        perceptual: ``model``, ``alex``, ``vgg`` or ``squeeze``.
        device: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto`` (on each worker).
        torch_threads: Intra-op threads per worker (None: leave torch's default).
        overrides: ``KEY=VALUE`` config overrides applied last (:func:`dhr.config.apply_overrides`).
        parser: Face parser (``auto``, ``landmarks``, ``bisenet``, ``farl``, ``none``).
        trust_parser: Allow the ``farl`` TorchScript file without a registry digest.
    """

    model: str = "faces-64"
    config: dict[str, Any] | str | None = None
    seed: int = 0
    method: str | None = None
    perceptual: str = "model"
    device: str = "cpu"
    torch_threads: int | None = 1
    overrides: tuple[str, ...] = ()
    parser: str = "auto"
    trust_parser: bool = False

    def fingerprint(self) -> str:
        """A short hash of everything that changes the results (not ``torch_threads``)."""
        d = dataclasses.asdict(self)
        d.pop("torch_threads")
        d.pop("trust_parser")
        if d["parser"] == "auto":  # runs recorded before the option existed keep their fingerprint
            d.pop("parser")
        if isinstance(d["config"], str) and Path(d["config"]).is_file():
            d["config"] = Path(d["config"]).read_text(encoding="utf-8")
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def build(self) -> Any:
        """Builds the :class:`dhr.pipeline.Pipeline` (raises DHRError on a bad model or config)."""
        import torch

        from dhr.pipeline import Pipeline

        if self.torch_threads is not None:
            torch.set_num_threads(int(self.torch_threads))
        return Pipeline.from_pretrained(self.model, config=self.config, device=self.device, seed=self.seed,
                                        perceptual=self.perceptual, method=self.method, parser=self.parser,
                                        trust_parser=self.trust_parser, overrides=tuple(self.overrides))


def _job_fingerprint(job: PhotoJob) -> str:
    return hashlib.sha256(json.dumps(dataclasses.asdict(job), sort_keys=True).encode()).hexdigest()[:16]


def item_key(item: str | os.PathLike) -> str:
    """File-name-safe key of an input: its stem plus a hash of its absolute path (stems may repeat)."""
    p = Path(item)
    digest = hashlib.sha1(str(p.resolve()).encode()).hexdigest()[:8]
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in p.stem)[:80]
    return f"{stem}-{digest}"


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    from dhr.outputs import write_text_atomic

    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def process_item(spec: PipelineSpec, job: PhotoJob, item: str, out: str, name: str | None = None) -> dict[str, Any]:
    """Processes one photo on a worker and returns its input record as plain data.

    Never raises for a problem with the photo: the error is in the returned record
    (``status="failed"``, ``error``, ``error_type``). A pipeline that cannot be built is a failure
    of every photo and is reported the same way. ``name`` is the photo's output name (unique in
    ``out``, given by the client; default its file stem).

    Raises:
        TypeError, NameError: A bug in dhr (:data:`dhr.errors.PROGRAMMING_ERRORS`); the photo's
            record is written (failed, with a note) before it propagates.
    """
    from dhr.jobs import process_photo
    from dhr.records import OutputTree

    def run(pipe: Any, rec: Any) -> None:
        process_photo(pipe, str(item), OutputTree(Path(out)), job, rec, name=name)

    return _recorded(spec, job, item, out, name, run)


def process_items(spec: PipelineSpec, job: PhotoJob, items: Sequence[str], out: str,
                  names: Sequence[str | None] | None = None) -> list[dict[str, Any]]:
    """Processes several photos on a worker, inverted together (``dhr dist --batch``).

    The photos go through one :meth:`dhr.pipeline.Pipeline.invert_many` call
    (:class:`dhr.jobs.PhotoBatches`); each still gets its own record, written as
    :func:`process_item` writes it, with its own status, notes and warnings (those of the shared
    optimisation go to every photo). Outputs equal :func:`process_item`'s with ``vectorize`` off.

    Returns:
        One record (plain data) per photo, in order.

    Raises:
        TypeError, NameError: As :func:`process_item` (the photos after it get no record).
    """
    from dhr.jobs import PhotoBatches, save_inversions
    from dhr.records import OutputTree

    items = [str(i) for i in items]
    names = list(names) if names is not None else [None] * len(items)
    batches: list[PhotoBatches] = []

    def run_one(item: str, name: str | None):
        def run(pipe: Any, rec: Any) -> None:
            if not batches:
                batches.append(PhotoBatches(pipe, job, len(items)))
                batches[0].plan(items)
            notes, warnings, result = batches[0].take(item)
            rec.notes.extend(notes)
            for message in warnings:  # logged again here, so this photo's record holds them
                log.warning("%s", message)
            if isinstance(result, BaseException):
                raise result
            save_inversions(pipe, result, OutputTree(Path(out)), job, rec, name=name)
        return run

    return [_recorded(spec, job, item, out, name, run_one(item, name)) for item, name in zip(items, names)]


def _recorded(spec: PipelineSpec, job: PhotoJob, item: str, out: str, name: str | None, run) -> dict[str, Any]:
    """Runs ``run(pipe, record)`` for one photo with the worker's pipeline; records and writes the result."""
    from dhr.records import InputRecord, WarningCollector, file_sha256

    t0 = time.perf_counter()
    p = Path(item)
    rec = InputRecord(path=str(item), sha256=file_sha256(p) if p.is_file() else None)
    bug: BaseException | None = None
    with WarningCollector() as warn:
        try:
            key = spec.fingerprint()
            if spec.torch_threads is not None:
                import torch

                # Per call: the thread count is a per-thread setting, and a worker may run tasks on
                # another thread than the one that built the pipeline (results depend on it slightly).
                torch.set_num_threads(int(spec.torch_threads))
            pipe = _PIPELINES.get(key)
            if pipe is None:
                pipe = _PIPELINES[key] = spec.build()
            run(pipe, rec)
            rec.status = "ok"
        except (KeyboardInterrupt, SystemExit):
            raise
        except PROGRAMMING_ERRORS as e:
            rec.fail(e)
            rec.notes.append(BUG_NOTE)
            bug = e
        except DHRError as e:
            rec.fail(e)
        except BaseException as e:  # noqa: BLE001 - out of memory, decoder bugs: this photo only
            log.debug("%s failed", item, exc_info=True)
            rec.fail(e)
    rec.warnings.extend(warn.messages)
    rec.seconds = round(time.perf_counter() - t0, 4)
    rec.name = name
    data = dict(vars(rec))
    data["worker"] = _worker_name()
    data["threads"] = _thread_facts()
    data["fingerprint"] = {"pipeline": spec.fingerprint(), "job": _job_fingerprint(job)}
    _write_json_atomic(Path(out) / RECORDS_DIR / f"{item_key(item)}.json", data)
    if bug is not None:
        raise bug
    return data


def _thread_facts() -> dict[str, Any]:
    """The worker's torch threads and OpenMP wait policy (recorded with each photo)."""
    import torch

    return {"torch": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except (ImportError, ValueError):
        return f"pid-{os.getpid()}"


def _finished(out: Path, item: str, sha: str | None, fingerprint: dict[str, str],
              name: str | None = None) -> dict[str, Any] | None:
    """The saved record of ``item`` if it finished ok with the same input bytes, pipeline, job and
    output name, and every file it lists still exists, is non-empty and reads back."""
    from dhr.outputs import verify_outputs

    path = out / RECORDS_DIR / f"{item_key(item)}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or sha is None:
        return None
    if data.get("status") == "ok" and data.get("sha256") == sha and data.get("fingerprint") == fingerprint \
            and data.get("name") == name:
        problem = verify_outputs(data.get("faces") or [])
        if problem is None:
            return data
        log.info("%s: redone, %s", item, problem)
    return None


_DASK_LOGGERS = ("distributed", "dask", "tornado", "bokeh")


def quiet_dask_logs(verbose: bool = False) -> None:
    """Keeps dask's own logging out of the user's terminal unless ``verbose``.

    Without this, a successful run prints dozens of ``INFO distributed.*`` lines (scheduler and nanny
    start and stop, and "Worker process ... was killed by signal" when workers are shut down) through
    the CLI's log handler. Errors are still shown; failed photos are in ``run.json`` either way.
    """
    level = logging.INFO if verbose else logging.ERROR
    for name in _DASK_LOGGERS:
        logging.getLogger(name).setLevel(level)


def _client(scheduler: str | None, n_workers: int | None, torch_threads: int, processes: bool,
            memory_limit: str | None, verbose: bool = False) -> tuple[Any, Any]:
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError("the distributed engine needs dask: pip install 'dask[distributed]' "
                          "(or pip install 'dhr[dist]')") from None
    quiet_dask_logs(verbose)
    if scheduler:
        try:
            return Client(scheduler, timeout="30s"), None
        except (OSError, TimeoutError) as e:
            raise ConfigError(f"cannot reach the dask scheduler at {scheduler!r} ({e}); start one with "
                              "`dask scheduler` and workers with `dask worker ADDRESS`, or leave --scheduler "
                              "out to run a local cluster") from None
    if n_workers is not None and n_workers < 1:
        raise ConfigError(f"n_workers={n_workers} must be >= 1")
    if n_workers is None:
        n_workers = max(1, (os.cpu_count() or 1) // max(1, torch_threads))
    # One task at a time per worker: the pipeline reseeds torch's global generator before each photo,
    # so photos sharing a process concurrently would not be reproducible. Parallelism is processes
    # (and torch threads inside each).
    extra: dict[str, Any] = {}
    if processes:
        from dhr.threads import worker_env

        # The passive OpenMP wait policy must be in a worker's environment before it loads torch.
        extra["env"] = worker_env()
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=processes,
                           dashboard_address=None, memory_limit=memory_limit or "auto",
                           silence_logs=logging.INFO if verbose else logging.ERROR, **extra)
    return Client(cluster), cluster


def _check_memory_limit(limit: str | None) -> None:
    """Refuses a worker memory limit dask cannot read, before any cluster starts."""
    if limit is None or str(limit).strip().lower() == "auto":
        return
    try:
        from dask.utils import parse_bytes

        ok = parse_bytes(str(limit)) > 0
    except ImportError:
        return  # _client says dask is missing
    except (ValueError, TypeError):
        ok = False
    if not ok:
        raise ConfigError(f"memory limit {limit!r} is not a size; give e.g. 4GB, 512MiB or auto")


def run_distributed(items: Sequence[str | os.PathLike], out: str | os.PathLike, spec: PipelineSpec,
                    job: PhotoJob, *, scheduler: str | None = None, n_workers: int | None = None,
                    processes: bool = True, memory_limit: str | None = None,
                    resume: bool = True, retries: int = 0, reporter: Any = None,
                    options: dict[str, Any] | None = None, pipeline: Any = None,
                    skipped: Sequence[dict[str, str]] = (), verbose: bool = False, batch: int = 1) -> Any:
    """Runs ``job`` on every photo over a dask cluster and writes ``out/run.json``.

    Args:
        items: Photo paths (expand folders and globs first, e.g. with ``dhr.cli.run.expand_inputs``).
        out: Output folder, shared with the workers.
        spec: How each worker builds its pipeline.
        job: What to do with each photo (edits, outputs).
        scheduler: Address of a running dask scheduler (``tcp://host:8786``); None starts a local cluster.
        n_workers: Local worker processes, each running one photo at a time (default: CPU count /
            ``spec.torch_threads``). Remote workers should be started with ``--nthreads 1`` for the
            same reason: the pipeline reseeds torch's global generator before each photo.
        processes: Local workers as processes (True) or threads of this process (False; for tests).
        memory_limit: Per local worker (``"4GB"``); a worker above it is restarted and its photo recorded failed.
        resume: Skip photos already finished ok with the same input, pipeline and job.
        retries: Times a photo is retried when its worker dies (a photo that *fails* is not retried).
        reporter: A :class:`dhr.progress.Reporter` (default: none).
        options: Command options stored in ``run.json``.
        pipeline: A pipeline built from ``spec`` on the client (e.g. to validate edits first); when given,
            its model identity and resolved config are stored in ``run.json``.
        skipped: Folder entries left out while expanding the inputs (``{"path", "reason"}``), recorded.
        verbose: Show dask's own INFO logs (scheduler, workers); by default only its errors.
        batch: Photos per task (>= 1): a worker inverts them together (:func:`process_items`;
            pays with ``InvertConfig.vectorize`` on a GPU worker). Each photo keeps its own record;
            a worker that dies fails (or, with ``retries``, retries) its whole group.

    Returns:
        The :class:`dhr.records.RunRecord` (also written to ``out/run.json``); its ``exit_code()`` is 0 when
        every photo is ok, 1 when some failed, 3 when none succeeded.

    Raises:
        ConfigError: dask is missing, the scheduler cannot be reached, bad worker counts, or the
            output folder is unusable or in use by another process (see :class:`dhr.outputs.FolderLock`).
        TypeError, NameError: A bug in dhr raised while processing a photo
            (:data:`dhr.errors.PROGRAMMING_ERRORS`): the photo is recorded failed, the photos not yet
            finished are cancelled, ``run.json`` is written, and the error propagates.
    """
    from dhr.outputs import FolderLock, check_output_folder

    if not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"batch={batch!r} must be an integer >= 1")
    if batch > 1 and (job.ood_mask is not None or job.align_only):
        raise ConfigError("an ood_mask or align-only job runs one photo per task; use batch=1")
    _check_memory_limit(memory_limit)
    out = check_output_folder(out)
    with FolderLock(out, "dhr dist"):
        return _run_locked(items, out, spec, job, scheduler=scheduler, n_workers=n_workers, processes=processes,
                           memory_limit=memory_limit, resume=resume, retries=retries, reporter=reporter,
                           options=options, pipeline=pipeline, skipped=skipped, verbose=verbose, batch=batch)


def _run_locked(items, out: Path, spec: PipelineSpec, job: PhotoJob, *, scheduler, n_workers, processes,
                memory_limit, resume, retries, reporter, options, pipeline, skipped, verbose, batch=1) -> Any:
    from dhr.outputs import assign_names, clean_stale_temps
    from dhr.progress import QuietReporter
    from dhr.records import RunRecord

    reporter = reporter if reporter is not None else QuietReporter()
    opts = dict(options or {})
    opts.setdefault("engine", {"scheduler": scheduler, "n_workers": n_workers, "torch_threads": spec.torch_threads,
                               "resume": resume, "retries": retries, "batch": batch})
    record = RunRecord(out, "dist", opts)
    record.seed, record.device = spec.seed, spec.device
    if pipeline is not None:
        from dhr.records import model_identity

        record.model, record.config = model_identity(pipeline.model), pipeline.config.to_dict()
    record.load_earlier()
    clean_stale_temps(out)
    record.skipped = list(skipped)
    fingerprint = {"pipeline": spec.fingerprint(), "job": _job_fingerprint(job)}
    recs = [record.add_input(str(i)) for i in items]
    names, rename_notes = assign_names([r.path for r in recs], record.name_claims())
    record.warnings.extend(rename_notes)
    for rec in recs:
        rec.name, rec.fingerprint = names[rec.path], fingerprint
    todo: list[int] = []
    for idx, rec in enumerate(recs):
        done = _finished(out, rec.path, rec.sha256, fingerprint, rec.name) if resume else None
        if done is None:
            todo.append(idx)
        else:
            _fill(rec, done)
            rec.notes.append("finished in an earlier run (resumed)")
    reporter.start_batch(len(recs))
    for idx, rec in enumerate(recs):
        if idx not in todo:
            reporter.end_item(Path(rec.path).name, rec.status, rec.error)
    record.write()
    if not todo:
        reporter.finish({**record.counts, "record": str(record.tree.record), "exit_code": record.exit_code()})
        reporter.close()
        return record

    client, cluster = _client(scheduler, n_workers, spec.torch_threads or 1, processes, memory_limit, verbose)
    crashed = False
    try:
        from distributed import as_completed

        record.options["engine"]["workers"] = len(client.scheduler_info().get("workers", {}))
        futures = {}
        for start in range(0, len(todo), batch):
            group = todo[start:start + batch]
            key = f"dhr-{item_key(recs[group[0]].path)}-{time.time_ns()}"
            if batch == 1:
                fut = client.submit(process_item, spec, job, recs[group[0]].path, str(out), recs[group[0]].name,
                                    pure=False, retries=retries, key=key)
            else:
                fut = client.submit(process_items, spec, job, [recs[i].path for i in group], str(out),
                                    [recs[i].name for i in group], pure=False, retries=retries, key=key)
            futures[fut] = group
        for fut in as_completed(futures):
            group = [recs[i] for i in futures[fut]]
            try:
                result = fut.result()
                for rec, data in zip(group, [result] if batch == 1 else result):
                    _fill(rec, data)
            except PROGRAMMING_ERRORS as e:  # a bug in dhr: stop here, keep what finished
                for rec in group:
                    if rec.status == "pending":
                        rec.fail(e)
                        rec.notes.append(BUG_NOTE)
                crashed = True
                client.cancel([f for f in futures if not f.done()])
                raise
            except Exception as e:  # noqa: BLE001 - a dead worker (KilledWorker), a cancelled task: record it
                for rec in group:
                    rec.fail(e)
                    rec.notes.append("the worker running this photo failed (see error); other photos went on")
            for rec in group:
                record.add_stage_timings(rec)
                for m in rec.warnings:
                    reporter.note("warning", f"{Path(rec.path).name}: {m}")
                reporter.end_item(Path(rec.path).name, rec.status, rec.error)
            record.write()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
        path = record.write()
        reporter.finish({**record.counts, "record": str(path), "exit_code": EXIT_CRASH if crashed else record.exit_code(),
                         "skipped": record.skipped})
        reporter.close()
    return record


def _fill(rec: Any, data: dict[str, Any]) -> None:
    for k in ("status", "error", "error_type", "faces", "warnings", "notes", "seconds"):
        if k in data:
            setattr(rec, k, data[k])
    if data.get("worker"):
        rec.notes = [*rec.notes, f"worker: {data['worker']}"]
