"""``dhr models list | show``: the bundled models, their components, directions and training facts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from dhr.cli import sub_app
from dhr.cli.batch import usage_error
from dhr.errors import DHRError

__all__ = ["models_app"]

models_app = sub_app("List the bundled models and show one (components, directions, training facts).")


def _load_model_or_exit(name: str):
    from dhr.models.zoo import load_model

    try:
        return load_model(name)
    except DHRError as e:
        raise usage_error(str(e)) from None


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

