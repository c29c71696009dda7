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
    direction: list[Path] = typer.Option([], "--direction", "-d",
                                         help="Edit direction file to add (InterFaceGAN .pt/.npy, plain vector); "
                                              "repeat. Named after the file stem."),
    name: str = typer.Option(None, help="Model name in model.json (default: OUT's folder name)."),
) -> None:
    """Convert SRC into a model folder OUT (model.json + native components; nothing in SRC is executed).

    OUT then works wherever a model name does: dhr run photo.jpg --model OUT, dhr.load(OUT).

    Example:
        dhr convert e4e_ffhq_encode.pt models/ffhq -d age.pt -d smile.pt --dtype float16
    """
    from dhr.models.checkpoint import saved_model_sha256
    from dhr.models.convert import convert

    if dtype not in ("float32", "float16"):
        raise typer.BadParameter(f"dtype={dtype!r} is not valid; choose float32 or float16", param_hint="--dtype")
    fp: Literal["float32", "float16"] = "float16" if dtype == "float16" else "float32"
    try:
        folder = convert(src, out, dtype=fp, directions=direction, name=name)
    except DHRError as e:  # a bad checkpoint, direction file or output folder: nothing was converted
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(f"wrote {folder / 'generator'} (sha256 {saved_model_sha256(folder / 'generator')[:16]})")
    if (folder / "encoder").is_dir():
        typer.echo(f"wrote {folder / 'encoder'}")
    if (folder / "directions").is_dir():
        typer.echo(f"wrote {folder / 'directions'} ({', '.join(p.stem for p in direction)})")
    typer.echo(f"wrote {folder / 'model.json'}; use it with: dhr run PHOTO --model {folder}")


def register(root: typer.Typer) -> None:
    """Adds ``dhr convert SRC OUT`` as a top-level command of ``root``."""
    root.command("convert")(convert_command)
