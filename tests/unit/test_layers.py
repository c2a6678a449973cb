"""The dependency direction of ARCHITECTURE.md: hl7gw -> worklist -> pacs; pacs imports
neither worklist nor hl7gw, worklist does not import hl7gw."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {"pacs": {"worklist", "hl7gw"}, "worklist": {"hl7gw"}}


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("app", sorted(FORBIDDEN))
def test_dependency_direction(app):
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_top_levels(path) & FORBIDDEN[app])
        for path in (ROOT / app).rglob("*.py")
        if imported_top_levels(path) & FORBIDDEN[app]
    }
    assert offenders == {}
