"""Progress reporting for batches of photos: rich bars, quiet, or JSON lines for scripts.

A :class:`Reporter` receives the events of a run:

- ``start_batch(total)``: the number of inputs;
- ``start_item(name, index)`` / ``end_item(name, status, error=None)``: one input;
- ``__call__(stage, step, total, info)``: an optimisation step of the engine (stages ``embed``,
  ``coarse``, ``refine``, ``pti``, ``feature``; the signature of the engine's ``progress``
  callback, so a reporter can be passed to :func:`dhr.engine.invert` directly);
- ``note(kind, message)``: a warning or remark; ``finish(summary)``: the end of the run.

Three implementations: :class:`QuietReporter` (failures only, on stderr), :class:`RichReporter` (a bar for the batch
and one per optimisation stage, each with its own ETA; on stderr) and :class:`JsonLinesReporter`
(one JSON object per event, one per line, on stdout). :func:`make_reporter` picks one by name.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any, Literal, Self

from dhr.checks import check_choice

__all__ = [
    "PROGRESS_MODES",
    "JsonLinesReporter",
    "ProgressMode",
    "QuietReporter",
    "Reporter",
    "RichReporter",
    "make_reporter",
]

ProgressMode = Literal["rich", "quiet", "json"]
PROGRESS_MODES: tuple[str, ...] = ("rich", "quiet", "json")


class Reporter:
    """Base reporter: ignores every event (subclasses override what they show)."""

    def start_batch(self, total: int, *, what: str = "photos") -> None:
        """A batch of ``total`` inputs starts."""

    def start_item(self, name: str, index: int) -> None:
        """Input ``index`` (0-based) named ``name`` starts."""

    def stage(self, stage: str, step: int, total: int, info: dict[str, Any] | None = None) -> None:
        """Step ``step`` of ``total`` of an optimisation ``stage`` finished (``info``: mean losses)."""

    def __call__(self, stage: str, step: int, total: int, info: dict[str, Any] | None = None) -> None:
        self.stage(stage, step, total, info)

    def end_item(self, name: str, status: str, error: str | None = None) -> None:
        """Input ``name`` ended with ``status`` (``ok`` or ``failed``) and an optional error message."""

    def note(self, kind: str, message: str) -> None:
        """A warning (``kind="warning"``) or remark (``"info"``)."""

    def finish(self, summary: dict[str, Any]) -> None:
        """The run ended; ``summary`` holds counts and the run record path."""

    def close(self) -> None:
        """Releases the display (idempotent)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class QuietReporter(Reporter):
    """Shows no progress, only a line on stderr per failed input (``--quiet``: a script still learns
    which inputs failed and why without opening ``run.json``).

    Args:
        stream: Where failures go (default: ``sys.stderr`` at the time of the failure).
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream

    def end_item(self, name: str, status: str, error: str | None = None) -> None:
        if status == "failed":
            print(f"{name}: failed: {error or 'unknown error'}", file=self._stream or sys.stderr, flush=True)


class JsonLinesReporter(Reporter):
    """One JSON object per event on ``stream`` (stdout by default), flushed immediately.

    Every object has ``event`` (``batch``, ``item``, ``step``, ``item_done``, ``note``, ``done``) and
    ``time`` (seconds since the reporter was made). Optimisation steps are thinned to at most
    ``steps_per_stage`` events per stage and item (the first and last step are always reported).

    Args:
        stream: Text stream to write to.
        steps_per_stage: Maximum step events per stage and item.
    """

    def __init__(self, stream: IO[str] | None = None, *, steps_per_stage: int = 20) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.steps_per_stage = max(1, int(steps_per_stage))
        self._t0 = time.perf_counter()

    def emit(self, event: str, **fields: Any) -> None:
        """Writes one event line."""
        record = {"event": event, "time": round(time.perf_counter() - self._t0, 4), **fields}
        self.stream.write(json.dumps(record, default=str) + "\n")
        self.stream.flush()

    def start_batch(self, total: int, *, what: str = "photos") -> None:
        self.emit("batch", total=int(total), what=what)

    def start_item(self, name: str, index: int) -> None:
        self.emit("item", name=name, index=int(index))

    def stage(self, stage: str, step: int, total: int, info: dict[str, Any] | None = None) -> None:
        every = max(1, total // self.steps_per_stage)
        if step == 1 or step == total or step % every == 0:
            losses = {k: float(v) for k, v in (info or {}).items() if isinstance(v, (int, float))}
            self.emit("step", stage=stage, step=int(step), total=int(total), losses=losses)

    def end_item(self, name: str, status: str, error: str | None = None) -> None:
        self.emit("item_done", name=name, status=status, error=error)

    def note(self, kind: str, message: str) -> None:
        self.emit("note", kind=kind, message=message)

    def finish(self, summary: dict[str, Any]) -> None:
        self.emit("done", **summary)


class RichReporter(Reporter):
    """Rich progress bars on stderr: the batch, plus one bar per optimisation stage with its ETA.

    Stage bars are reset for every input, so each shows the remaining time of the current stage;
    the batch bar's ETA extrapolates from the inputs finished so far.

    Args:
        console: Optional ``rich.console.Console`` (default: stderr).
        transient: Remove the bars when the run ends.
    """

    def __init__(self, console: Any = None, *, transient: bool = False) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = console if console is not None else Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            transient=transient,
        )
        self._batch: Any = None
        self._stages: dict[str, Any] = {}
        self._started = False
        self._closed = False

    def _start(self) -> None:
        if not self._started:
            self._progress.start()
            self._started = True

    def start_batch(self, total: int, *, what: str = "photos") -> None:
        self._start()
        self._batch = self._progress.add_task(what, total=total, info="")

    def start_item(self, name: str, index: int) -> None:
        self._start()
        if self._batch is not None:
            self._progress.update(self._batch, info=name)
        for task in self._stages.values():
            self._progress.update(task, visible=False)

    def stage(self, stage: str, step: int, total: int, info: dict[str, Any] | None = None) -> None:
        self._start()
        losses = " ".join(f"{k}={v:.3g}" for k, v in (info or {}).items() if isinstance(v, (int, float)))
        task = self._stages.get(stage)
        if task is None:
            task = self._progress.add_task(stage, total=total, info=losses)
            self._stages[stage] = task
        if step <= 1:
            self._progress.reset(task, total=total, visible=True)
        self._progress.update(task, completed=step, total=total, info=losses, visible=True)

    def end_item(self, name: str, status: str, error: str | None = None) -> None:
        if self._batch is not None:
            self._progress.advance(self._batch)
        if status != "ok":
            self._progress.console.print(f"[red]failed[/red] {name}: {error}")

    def note(self, kind: str, message: str) -> None:
        style = "yellow" if kind == "warning" else "dim"
        self._progress.console.print(f"[{style}]{kind}[/{style}]: {message}")

    def finish(self, summary: dict[str, Any]) -> None:
        self.close()
        ok, failed = summary.get("ok", 0), summary.get("failed", 0)
        where = summary.get("record")
        skipped = summary.get("skipped") or []
        resumed = summary.get("resumed", 0)
        pending = summary.get("pending", 0)
        self.console.print(f"{ok} ok, {failed} failed" + (f" ({resumed} finished earlier)" if resumed else "")
                           + (f", {pending} not run (rerun the same command to resume)" if pending else "")
                           + (f", {len(skipped)} folder entries skipped" if skipped else "")
                           + (f"; run record: {where}" if where else ""))
        for entry in skipped[:20]:
            self.console.print(f"  skipped {entry['path']}: {entry['reason']}")
        if len(skipped) > 20:
            self.console.print(f"  ... and {len(skipped) - 20} more (see skipped in run.json)")

    def close(self) -> None:
        if self._started and not self._closed:
            self._progress.stop()
            self._closed = True


def make_reporter(mode: str = "rich", *, stream: IO[str] | None = None) -> Reporter:
    """A reporter by name: ``rich`` (bars on stderr), ``quiet`` (failures only, on stderr) or ``json`` (JSON lines
    on stdout).

    Raises:
        ConfigError: Unknown mode.
    """
    check_choice(mode, PROGRESS_MODES, "progress mode")
    if mode == "quiet":
        return QuietReporter()
    if mode == "json":
        return JsonLinesReporter(stream)
    return RichReporter()
