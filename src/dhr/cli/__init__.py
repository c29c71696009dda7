"""Command-line interface: ``dhr <command>``. Commands only parse, call the public API and save.

Each command group lives in its own module of this package and is registered in :func:`build_app`.
"""

from __future__ import annotations

import importlib
import logging

import typer

__all__ = ["build_app", "main", "sub_app"]

# (module, attribute, name, help) of the sub-applications; imported lazily so `dhr --help` is fast.
_SUBAPPS: list[tuple[str, str, str, str]] = [
    ("dhr.cli.weights", "app", "weights", "List, download, add and verify pretrained weights files."),
]


# Modules exposing ``register(app)`` that add top-level commands (``dhr run``, ``dhr example``, ...).
_REGISTRARS: list[str] = [
    "dhr.cli.example",
    "dhr.cli.convert",
    "dhr.cli.run",
    "dhr.cli.bench",
    "dhr.cli.dist",
    "dhr.cli.reference",
    "dhr.cli.info",
    "dhr.cli.speed",
]

_THREADS_HELP = ("Torch CPU threads of this process (default: DHR_THREADS, else OMP_NUM_THREADS, else the usable "
                 "CPUs up to 8). dhr also sets OMP_WAIT_POLICY=PASSIVE unless you set it.")


_DETERMINISTIC_HELP = ("Deterministic GPU kernels (no TF32, no atomic-add convolutions): repeatable results on CUDA, "
                       "at some speed. CPU runs are deterministic anyway. Env: DHR_DETERMINISTIC=1.")


def _root(threads: int | None = typer.Option(None, "--threads", min=1, max=4096, help=_THREADS_HELP),
          deterministic: bool = typer.Option(False, "--deterministic", envvar="DHR_DETERMINISTIC",
                                             help=_DETERMINISTIC_HELP)) -> None:
    """Applies the thread settings (see :mod:`dhr.threads`) and the kernel choice before any command runs."""
    from dhr.devices import use_deterministic_kernels
    from dhr.errors import DHRError
    from dhr.threads import configure_threads

    if deterministic:
        use_deterministic_kernels()
    try:
        settings = configure_threads(threads)
    except DHRError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    logging.getLogger("dhr").debug("threads: %s", settings.describe())


def sub_app(help: str) -> typer.Typer:
    """A command group (``dhr weights``, ``dhr models``) with the root app's settings."""
    return typer.Typer(help=help, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="dhr",
        help="Put real photos into a StyleGAN2 and edit them (Domain-Specific Hybrid Refinement).",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    app.callback()(_root)
    for module in _REGISTRARS:
        importlib.import_module(module).register(app)
    for module, attr, name, help_ in _SUBAPPS:
        sub = getattr(importlib.import_module(module), attr)
        app.add_typer(sub, name=name, help=help_)
    return app


EXIT_CRASH = 4
"""Exit code of an uncaught error inside dhr (a bug), distinct from 1 = "some inputs failed"."""
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
"""Exit code after SIGTERM (128 + 15), once the run's record is written."""


def install_sigterm_exit() -> None:
    """Makes SIGTERM unwind like Ctrl-C does: ``finally`` blocks write ``run.json`` (finished inputs
    kept, the rest ``pending``), then the process exits with :data:`EXIT_TERMINATED`.

    Only when SIGTERM has its default action (an embedding program's own handler is left alone).
    """
    import signal
    import sys

    def terminated(signum, frame):  # noqa: ARG001
        print("dhr: terminated; finished results are kept (rerun the same command to resume)", file=sys.stderr)
        raise SystemExit(EXIT_TERMINATED)

    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, terminated)


def main() -> None:
    """Entry point of the ``dhr`` command.

    Exit codes: 0 all inputs ok, 1 some inputs failed (the batch went on), 2 usage error (bad
    option, unusable or busy output folder), 3 nothing succeeded, 4 dhr crashed (an uncaught
    error: a bug; the traceback is printed), 130 interrupted (Ctrl-C).
    """
    import sys
    import traceback

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    install_sigterm_exit()
    try:
        build_app()(standalone_mode=True)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print("dhr: interrupted; finished results are kept (rerun the same command to resume)", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except BaseException as e:  # noqa: BLE001 - the last line of defence: a distinct exit code
        traceback.print_exc()
        print(f"dhr: internal error ({type(e).__name__}: {e}); this is a bug in dhr, please report it with the "
              f"traceback above. Exit code {EXIT_CRASH}.", file=sys.stderr)
        sys.exit(EXIT_CRASH)
