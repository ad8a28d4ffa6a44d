"""Dependencies point one way: the data layers `prompt_pool` and `rewards` import nothing from `paft_rl`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", ["prompt_pool", "rewards"])
def test_data_layers_do_not_import_paft_rl(package):
    offenders = {str(path.relative_to(ROOT)): sorted(m for m in imported_modules(path) if m.split(".")[0] == "paft_rl")
                 for path in (ROOT / package).rglob("*.py")}
    assert {path: names for path, names in offenders.items() if names} == {}
