"""Layering: a module of pano360 never imports a higher layer (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pano360

# Rank of each top-level module or package of pano360; imports may only go to an equal or lower rank.
RANKS = {
    "__init__": 0, "errors": 0, "_lazy": 0, "options": 0, "presets": 0, "validation": 0, "defaults": 0,
    "model_presets": 0, "numerics": 0,
    "io": 1, "geometry": 1, "nets": 1,
    "backbones": 2, "viewer": 2, "spatial": 2,
    "adapters": 3,
    "methods": 4,
    "output": 5, "generator": 5, "metrics": 5, "plan": 5,
    "training": 6, "sphere": 6, "batch": 6, "captioning": 6,
    "analysis": 7, "web": 7,
    "cli": 8, "__main__": 9,
}
PACKAGE = Path(pano360.__file__).parent


def _top(parts: list[str]) -> str:
    return parts[0].removesuffix(".py") if parts else "__init__"


def imported_tops(path: Path) -> set[str]:
    """Top-level pano360 modules that ``path`` imports (relative and absolute imports)."""
    relative = path.relative_to(PACKAGE)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(relative.parts[:-1])
            base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
            target = base + (node.module.split(".") if node.module else [])
            if not node.module and not target:  # "from .. import x": x may be a module or a name
                name = node.names[0].name
                target = [name] if (PACKAGE / f"{name}.py").exists() or (PACKAGE / name).is_dir() else []
            found.add(_top(target))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pano360":
            found.add(_top(node.module.split(".")[1:]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "pano360":
                    found.add(_top(alias.name.split(".")[1:]))
    return found


def test_no_module_imports_a_higher_layer():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = _top(list(path.relative_to(PACKAGE).parts))
        assert own in RANKS, f"{own} has no layer in tests/test_architecture.py RANKS; add it"
        for target in imported_tops(path) - {own}:
            assert target in RANKS, f"{path} imports {target}, which has no layer"
            if RANKS[target] > RANKS[own]:
                problems.append(f"{path.relative_to(PACKAGE)} ({own}) imports {target}")
    assert not problems, "upward imports:\n" + "\n".join(problems)


def test_geometry_depends_on_nothing_else_in_pano360():
    for path in (PACKAGE / "geometry").rglob("*.py"):
        assert imported_tops(path) <= {"geometry", "errors"}, path
