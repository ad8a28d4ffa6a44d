"""Dependencies point one way, as the layer table of docs/ARCHITECTURE.md says (read from the doc itself); the
data layers `prompt_pool` and `rewards` import nothing from `paft_rl`."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("paft_rl", "prompt_pool", "rewards")


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


# ---------------------------------------------------------------------------- the layer table of the doc
@dataclass
class Layer:
    """A row of the table: its name, the files and folders it holds, and the layers it may import."""

    name: str
    modules: list[str]
    may_import: set[str]

    def holds(self, relative: str) -> bool:
        return any(relative == m or (m.endswith("/") and relative.startswith(m)) for m in self.modules)


def layer_table(text: str) -> list[Layer]:
    """The rows of the table under "Packages and which may import which", top layer first.

    A row names its modules in backticks (``paft_rl/eval/``, ``paft_rl/cli.py``) and the layers it may import by
    their names, with comments in parentheses; "every layer below" is every later row, "nothing from `paft_rl`"
    none.
    """
    section = text.split("## Packages and which may import which", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|") and not line.startswith(("| layer", "|--"))]
    layers, below = [], []
    for line in rows:
        name, modules, may_import = (cell.strip() for cell in line.strip("|").split("|"))
        paths = [m for m in re.findall(r"`([^`]+)`", modules) if re.fullmatch(rf"(?:{'|'.join(PACKAGES)})/[\w/.]*", m)]
        allowed = re.sub(r"\([^)]*\)", "", may_import).strip()
        names = set() if allowed.startswith("nothing") else {n.strip() for n in allowed.split(",")}
        layers.append(Layer(name, paths, names))
        below.append(names == {"every layer below"})
    for index, layer in enumerate(layers):
        if below[index]:
            layer.may_import = {later.name for later in layers[index + 1:]}
    return layers


def module_file(root: Path, dotted: str) -> Path | None:
    """The file of a module of ours (``paft_rl.eval.runner``, a package's ``__init__.py``), or `None`."""
    base = root.joinpath(*dotted.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_files(root: Path, path: Path) -> set[Path]:
    """Our files ``path`` imports, anywhere in it (lazy imports inside functions too); ``from a import b`` is
    module ``a.b`` when that is a module, else ``a``."""
    parts = path.relative_to(root).with_suffix("").parts
    package = parts[:-1]  # what a relative import starts from, for a module and a package's __init__ alike
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(module_file(root, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] if node.level else ())
            module = ".".join(filter(None, [base, node.module]))
            for alias in node.names:
                found.add(module_file(root, f"{module}.{alias.name}") or module_file(root, module))
    return {file for file in found if file is not None and file != path}


def layer_violations(root: Path, layers: list[Layer]) -> list[str]:
    """What breaks the table: a layer it names that no row is, a module no row holds (or two rows do), and an
    import from one layer into another its row does not name."""
    names = {layer.name for layer in layers}
    problems = [f"row {layer.name!r} may import unknown layer {name!r}"
                for layer in layers for name in sorted(layer.may_import - names)]
    owner = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root).as_posix()
            rows = [layer for layer in layers if layer.holds(relative)]
            if len(rows) != 1:
                problems.append(f"{relative} is in {len(rows)} rows of the layer table, not one")
            else:
                owner[path] = rows[0]
    for path, layer in owner.items():
        for target in sorted(imported_files(root, path)):
            other = owner.get(target)
            if other is not None and other is not layer and other.name not in layer.may_import:
                problems.append(f"{path.relative_to(root).as_posix()} ({layer.name}) imports "
                                f"{target.relative_to(root).as_posix()} ({other.name})")
    return problems


def test_imports_follow_the_layer_table_of_the_architecture_doc():
    layers = layer_table((ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8"))
    assert {"command line", "workflows", "training", "evaluation", "pools", "rewards"} <= {row.name for row in layers}
    assert layer_violations(ROOT, layers) == []


def test_the_layer_check_sees_a_module_outside_the_table_and_a_forbidden_import(tmp_path):
    """The check itself, on a small tree: what the doc's table forbids is reported, what it allows is not."""
    doc = """## Packages and which may import which

| layer | modules | may import |
|---|---|---|
| top | `paft_rl/cli.py` (the command line) | every layer below |
| middle | `paft_rl/eval/` | pools (rendering), rewards |
| pools | `prompt_pool/` | nothing from `paft_rl` |
| rewards | `rewards/` | nothing from `paft_rl` |

## Next section
"""
    files = {"paft_rl/__init__.py": "", "paft_rl/cli.py": "from .eval import runner\n",
             "paft_rl/eval/__init__.py": "", "paft_rl/eval/runner.py": "import prompt_pool\n\n\ndef f():\n"
             "    from ..cli import main\n", "prompt_pool/__init__.py": "from paft_rl.eval.runner import f\n",
             "rewards/__init__.py": "from . import qa\n", "rewards/qa.py": ""}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    layers = layer_table(doc)
    assert [(row.name, row.modules, sorted(row.may_import)) for row in layers] == [
        ("top", ["paft_rl/cli.py"], ["middle", "pools", "rewards"]),
        ("middle", ["paft_rl/eval/"], ["pools", "rewards"]),
        ("pools", ["prompt_pool/"], []), ("rewards", ["rewards/"], [])]
    assert layer_violations(tmp_path, layers) == [
        "paft_rl/__init__.py is in 0 rows of the layer table, not one",
        "paft_rl/eval/runner.py (middle) imports paft_rl/cli.py (top)",
        "prompt_pool/__init__.py (pools) imports paft_rl/eval/runner.py (middle)"]
