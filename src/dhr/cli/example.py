"""``dhr example``: writes a public-domain test photo, so the README's command needs no download."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["register", "example_photo"]

_EXAMPLES = {
    "astronaut": "NASA portrait of astronaut Eileen Collins (public domain), shipped with scikit-image",
}


def example_photo(name: str = "astronaut"):
    """Returns the example photo ``name`` as a PIL image."""
    from PIL import Image

    if name not in _EXAMPLES:
        from dhr.errors import ConfigError

        raise ConfigError(f"unknown example {name!r}; available: {sorted(_EXAMPLES)}")
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)())


def register(app: typer.Typer) -> None:
    @app.command("example")
    def example(
        out: Path = typer.Argument(Path("astronaut.png"), help="Where to write the photo (PNG/JPEG by suffix)."),
        name: str = typer.Option("astronaut", "--name", help=f"Which example: {', '.join(_EXAMPLES)}."),
    ) -> None:
        """Write a public-domain example photo to OUT.

        Example: dhr example astronaut.png && dhr run astronaut.png --edit age=+2 -o out/
        """
        from dhr.errors import DHRError

        try:
            img = example_photo(name)
        except DHRError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        from PIL import Image

        Image.init()
        if out.is_dir() or out.suffix.lower() not in Image.EXTENSION:
            typer.echo(f"error: {out}: give a file name ending in an image suffix, e.g. {out / 'example.png' if out.is_dir() else out.with_suffix('.png')}", err=True)
            raise typer.Exit(2)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            img.save(out)
        except OSError as e:
            typer.echo(f"error: cannot write {out} ({e.strerror or e}); choose another path", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"wrote {out} ({img.width}x{img.height}): {_EXAMPLES[name]}")
