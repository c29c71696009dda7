"""``dhr convert SRC OUT``: import a foreign StyleGAN2 checkpoint into the native format.

Registered in :mod:`dhr.cli` as the ``convert`` sub-application (a single command; its callback
does the work, so no sub-command name is needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from dhr.errors import DHRError

__all__ = ["app", "register"]

app = typer.Typer(
    help="Convert a rosinality / e4e / pSp .pt or NVIDIA .pkl checkpoint to the native format.",
    context_settings={"allow_interspersed_args": True},
    add_completion=False,
)


@app.callback(invoke_without_command=True)
def convert_command(
    src: Path = typer.Argument(..., help="Foreign checkpoint: rosinality/e4e/pSp .pt or NVIDIA StyleGAN2(-ADA) .pkl."),
    out: Path = typer.Argument(..., help="Output folder (gets generator/ and, for e4e/pSp, encoder/)."),
    dtype: str = typer.Option("float32", help="Storage dtype of the generator tensors: float32 or float16."),
) -> None:
    """Convert SRC into native folders under OUT (nothing in SRC is executed).

    Example:
        dhr convert stylegan2-ffhq-config-f.pt models/ffhq --dtype float16
    """
    from dhr.models.checkpoint import model_sha256
    from dhr.models.convert import convert

    if dtype not in ("float32", "float16"):
        raise typer.BadParameter(f"dtype={dtype!r} is not valid; choose float32 or float16", param_hint="--dtype")
    fp: Literal["float32", "float16"] = "float16" if dtype == "float16" else "float32"
    try:
        folder = convert(src, out, dtype=fp)
    except DHRError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"wrote {folder / 'generator'} (sha256 {model_sha256(folder / 'generator')[:16]})")
    if (folder / "encoder").is_dir():
        typer.echo(f"wrote {folder / 'encoder'}")


def register(root: typer.Typer) -> None:
    """Adds ``dhr convert SRC OUT`` as a top-level command of ``root``."""
    root.command("convert")(convert_command)
