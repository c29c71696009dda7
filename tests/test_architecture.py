"""The import layering of docs/architecture.md: a module imports its own layer and the layers below,
never above, except the model-folder exceptions the document names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "dhr"

LAYERS: dict[int, tuple[str, ...]] = {  # docs/architecture.md "Layers", bottom first
    1: ("errors", "checks", "types", "threads", "seeding", "devices", "outputs", "fileio", "reductions", "progress"),
    2: ("io", "models", "weights"),
    3: ("faces", "embed", "segmentation", "refinement", "editing", "metrics", "bundle.codec", "bundle.store"),
    4: ("config", "engine", "reference"),
    5: ("results", "bundle.photo", "pipeline", "jobs", "records", "distributed"),
    6: ("cli", "web", "bench", "train", "speed"),
}

EXCEPTIONS = {  # (importer, imported): why (the document names each)
    ("dhr.models.convert", "dhr.editing"): "a converted model's directions",
    ("dhr.models.zoo", "dhr.editing"): "a model folder's directions (lazy)",
    ("dhr.models.zoo", "dhr.faces.align"): "a model folder's alignment template (lazy)",
    ("dhr.models.zoo", "dhr.config"): "a model folder's recommended settings (lazy)",
}


def layer_of(module: str) -> int | None:
    parts = module.split(".")[1:]
    for n in (2, 1):
        key = ".".join(parts[:n])
        for number, names in LAYERS.items():
            if key in names:
                return number
    return None


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "dhr":
            out.append(node.module)
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.split(".")[0] == "dhr"]
    return out


def _modules() -> list[tuple[str, Path]]:
    mods = []
    for path in sorted(SRC.rglob("*.py")):
        name = ".".join(("dhr", *path.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")
        mods.append((name, path))
    return mods


def violations() -> list[str]:
    found = []
    for name, path in _modules():
        own = layer_of(name)
        if own is None:
            continue
        for imported in _imports(path):
            theirs = layer_of(imported)
            excepted = any(i == name and imported.startswith(p) for i, p in EXCEPTIONS)
            if theirs is not None and theirs > own and not excepted:
                found.append(f"{name} (layer {own}) imports {imported} (layer {theirs})")
    return found


def test_every_module_has_a_layer():
    unplaced = [n for n, _ in _modules() if layer_of(n) is None and n not in ("dhr", "dhr.bundle", "dhr.assets")
                and not n.startswith("dhr.assets.")]
    assert unplaced == []


def test_no_module_imports_a_layer_above_its_own():
    assert violations() == []


@pytest.mark.parametrize(("importer", "imported"), sorted(EXCEPTIONS))
def test_the_named_exceptions_are_still_needed(importer, imported):
    # an exception nobody needs any more should leave the list (and the document)
    path = SRC.joinpath(*importer.split(".")[1:]).with_suffix(".py")
    assert any(m.startswith(imported) for m in _imports(path))


def test_the_check_sees_a_violation(tmp_path):
    # the rule is live: a stage importing the pipeline is reported
    fake = tmp_path / "dhr"
    (fake / "embed").mkdir(parents=True)
    (fake / "embed" / "bad.py").write_text("from dhr.pipeline import Pipeline\n", encoding="utf-8")
    globals()["SRC"], old = fake, SRC
    try:
        assert violations() == ["dhr.embed.bad (layer 3) imports dhr.pipeline (layer 5)"]
    finally:
        globals()["SRC"] = old
