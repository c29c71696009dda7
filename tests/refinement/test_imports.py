"""The refinement stage knows nothing of files: storing results (quantisation, provenance, the bundle
format) is dhr.bundle's, which imports the refinement's renderer, never the reverse."""

from __future__ import annotations

import ast
from pathlib import Path

import dhr.refinement

_FILES = ("dhr.bundle", "dhr.fileio", "dhr.outputs", "dhr.records", "dhr.jobs", "safetensors", "json", "pathlib")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_refinement_imports_nothing_of_files_or_bundles():
    files = sorted(Path(dhr.refinement.__file__).parent.glob("*.py"))
    assert len(files) >= 5
    bad = {f.name: sorted(m for m in _imports(f) if m.split(".")[0] in ("safetensors", "json", "pathlib")
                          or any(m == p or m.startswith(p + ".") for p in _FILES))
           for f in files}
    assert not {k: v for k, v in bad.items() if v}
