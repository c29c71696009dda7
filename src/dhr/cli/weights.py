"""``dhr weights``: list, fetch, add and verify the registered weights files (see :mod:`dhr.weights`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from dhr import weights as W
from dhr.cli import sub_app
from dhr.errors import DHRError

__all__ = ["app"]

app = sub_app("List, download, add and verify pretrained weights files.")


def _human(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"  # pragma: no cover


def _fail(exc: DHRError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(code=1)


@app.command("list")
def list_cmd(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
) -> None:
    """Show every registered file: name, kind, size, licence and where it was found (or "missing").

    The location is the first existing candidate (DHR_WEIGHTS_PATH, cache, package); it is not
    hash-checked here: use `dhr weights verify`.
    """
    registry = W.default_registry()
    rows = []
    for entry in registry:
        found = registry.locate(entry.name, check=False)
        rows.append((entry, found))
    if as_json:
        payload = [
            {
                "name": e.name,
                "kind": e.kind,
                "filename": e.filename,
                "size": e.size,
                "sha256": e.sha256,
                "sha256_prefix": e.sha256_prefix,
                "verified": e.verified,
                "licence": e.licence,
                "urls": list(e.urls),
                "path": None if f is None else str(f.path),
                "source": None if f is None else f.source,
            }
            for e, f in rows
        ]
        typer.echo(json.dumps(payload, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="dhr weights", show_lines=False)
    for col in ("name", "kind", "size", "licence", "where"):
        table.add_column(col, overflow="fold")
    for entry, found in rows:
        where = "missing" if found is None else f"{found.path} ({found.source})"
        table.add_row(entry.name, entry.kind, _human(entry.size), entry.licence, where)
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    console.print(table)


@app.command("fetch")
def fetch_cmd(
    name: str = typer.Argument(..., help="Registered name, e.g. lpips-alex (see `dhr weights list`)."),
    force: bool = typer.Option(False, "--force", help="Download into the cache even if found elsewhere."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar (only on a terminal)."),
) -> None:
    """Make NAME available locally, downloading it into $DHR_HOME/weights if needed; prints its path.

    Example: dhr weights fetch lpips-alex
    """
    try:
        path = W.default_registry().fetch(name, force=force, progress=None if progress else False)
    except DHRError as exc:
        raise _fail(exc) from None
    typer.echo(str(path))


@app.command("add")
def add_cmd(
    name: str = typer.Argument(..., help="Registered name."),
    file: Path = typer.Argument(..., help="The file to check and copy into $DHR_HOME/weights."),
) -> None:
    """Check FILE against the registered size/sha256 of NAME and copy it into the cache.

    Example: dhr weights add stylegan2-ffhq-config-f ~/Downloads/stylegan2-ffhq-config-f.pt
    """
    try:
        path = W.default_registry().add(name, file)
    except DHRError as exc:
        raise _fail(exc) from None
    typer.echo(str(path))


@app.command("verify")
def verify_cmd(
    name: Optional[str] = typer.Argument(None, help="Registered name; all entries when omitted."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON results."),
) -> None:
    """Hash the local files and compare them with the registry (never downloads).

    Exit code 0 when every checked file is fine, 1 otherwise. With NAME a missing file is a
    failure; without NAME missing files are listed but only bad files fail.
    """
    try:
        results = W.default_registry().verify(name)
    except DHRError as exc:
        raise _fail(exc) from None
    failed = [r for r in results if r.status == "mismatch" or (name is not None and r.status == "missing")]
    if as_json:
        typer.echo(json.dumps({"ok": not failed, "results": [r.to_dict() for r in results]}, indent=2))
    else:
        for r in results:
            where = f" {r.path}" if r.path is not None else ""
            typer.echo(f"{r.status:<10} {r.name}{where}: {r.message}")
    if failed:
        raise typer.Exit(code=1)
