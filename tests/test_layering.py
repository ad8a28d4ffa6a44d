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


def relative_imports(path: Path) -> set[str]:
    """Modules a file imports relatively, resolved to dotted names (``from ..commands import sft``)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            module = ".".join(base + ([node.module] if node.module else []))
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def importers(package: str, allowed: tuple[str, ...]) -> dict[str, list[str]]:
    """Files of paft_rl outside ``allowed`` (path prefixes) that import ``package``, with what they import."""
    offenders = {}
    for path in (ROOT / "paft_rl").rglob("*.py"):
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith(allowed):
            continue
        names = imported_modules(path) | relative_imports(path)
        bad = sorted(n for n in names if n == package or n.startswith(f"{package}."))
        if bad:
            offenders[relative] = bad
    return offenders


def test_nothing_below_the_cli_imports_the_commands():
    """The library trains by function calls (paft_rl.training); only the CLI layer may import paft_rl.commands."""
    assert importers("paft_rl.commands", ("paft_rl/cli.py", "paft_rl/commands/")) == {}


def test_training_is_a_library_call(tmp_path):
    """`train_recipe` trains from a mapping (no file in between) and says where the model went."""
    import torch
    from safetensors.torch import load_file
    from tiny import make_tiny_model_dir

    from paft_rl.training import train_recipe

    model_dir = make_tiny_model_dir(tmp_path / "m")
    before = load_file(str(model_dir / "model.safetensors"))
    result = train_recipe("sft", {"model_name_or_path": str(model_dir), "task": "synth_arith", "data_limit": 8,
                                  "output_dir": str(tmp_path / "out"), "max_steps": 2, "learning_rate": 0.01,
                                  "per_device_train_batch_size": 4, "report_to": "none", "bf16": False,
                                  "save_strategy": "no", "max_length": 256})
    assert result.output_dir == str(tmp_path / "out") and result.global_step == 2 and "train_loss" in result.metrics
    after = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert any(not torch.equal(before[name], after[name]) for name in before)



def test_only_the_cli_imports_the_workflows():
    """Workflows (sequence, select...) orchestrate the layers below; trainers, eval, selection, tasks, stages and
    training never import them back."""
    assert importers("paft_rl.workflows", ("paft_rl/cli.py", "paft_rl/commands/", "paft_rl/workflows/")) == {}
