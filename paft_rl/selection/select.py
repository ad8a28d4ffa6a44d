"""``paft-rl select``: score a recipe's pool under its model and hand the winner to training (SAPO, static)."""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from prompt_pool import UserError, atomic_write_text

from ..tasks import get_task, load_rows, load_task_pool
from .scoring import TemplateScore, pick_template, score_templates

# Recipe keys `select` reads; everything else in the recipe is left for the trainer.
RECIPE_DEFAULTS = {
    "model_name_or_path": None, "task": None, "data": None, "data_split": None, "pool": None, "field_aliases": None,
    "drop_duplicate_templates": False, "prompt_format": "auto", "system_prompt": None, "mc_answer_style": None,
    "seed": 42, "output_dir": None,
}


@dataclass
class Selection:
    """What `select` found: every template's score, the chosen one, and the rule."""

    scores: list[TemplateScore]
    chosen: TemplateScore
    rule: str
    seconds: float


def read_recipe(path: str) -> dict[str, Any]:
    """The recipe as a mapping (unknown keys kept), with a clear error for a missing or malformed file."""
    recipe_path = Path(path)
    if not recipe_path.is_file():
        raise UserError(f"recipe not found: {path}")
    try:
        recipe = yaml.safe_load(recipe_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise UserError(f"{recipe_path.name}: not valid YAML ({getattr(error, 'problem', error)})") from None
    if not isinstance(recipe, dict):
        raise UserError(f"{recipe_path.name}: a recipe is a mapping of option: value")
    return recipe


def load_model(spec: str):
    """A model folder, hub id, or LoRA adapter folder (merged over its base), as `paft-rl eval` loads them."""
    import torch

    from ..eval.models import load_hf_model, load_tokenizer, resolve_model

    source = resolve_model(spec)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return load_hf_model(source, device), load_tokenizer(source)


def select_template(recipe: dict[str, Any], rows: int, rule: str = "lowest", batch_size: int = 16,
                    model=None, tokenizer=None) -> Selection:
    """Score the recipe's train templates on the first ``rows`` rows and pick one by ``rule``."""
    settings = {**RECIPE_DEFAULTS, **recipe}
    if not settings["task"]:
        raise UserError("the recipe names no task: set `task:`")
    task = get_task(settings["task"])
    if settings["mc_answer_style"] and task.is_multiple_choice:
        task = task.with_answer_style(settings["mc_answer_style"])
    pool = load_task_pool(task, settings["pool"], settings["field_aliases"], settings["drop_duplicate_templates"])
    if len(pool.train) < 2:
        raise UserError(f"{pool.name} has {len(pool.train)} train template(s): SAPO needs at least 2 to choose from")
    if rows <= 0:
        raise UserError(f"--rows must be a positive number, got {rows}")
    data = load_rows(task, settings["data"], settings["data_split"], limit=rows if task.generate else None,
                     seed=int(settings["seed"]))
    if rows > len(data):
        raise UserError(f"--rows {rows} but the data has only {len(data)} rows; lower --rows")
    examples = [task.example(row) for row in data.select(range(rows))]
    if model is None:
        if not settings["model_name_or_path"]:
            raise UserError("the recipe names no model: set model_name_or_path or pass --model")
        model, tokenizer = load_model(settings["model_name_or_path"])
    start = time.perf_counter()
    scores = score_templates(model, tokenizer, pool, examples, n=rows, batch_size=batch_size,
                             system_prompt=settings["system_prompt"], prompt_format=settings["prompt_format"])
    return Selection(scores, pick_template(scores, rule), rule, time.perf_counter() - start)


def write_selection(selection: Selection, recipe: dict[str, Any], recipe_path: str, out_dir: Path) -> dict[str, Path]:
    """Write scores.csv, scores.json and a recipe that trains on the chosen template."""
    ranked = sorted(selection.scores, key=lambda s: s.loss)
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["rank", "template_id", "loss", "tokens", "rows"])
    for rank, score in enumerate(ranked, start=1):
        writer.writerow([rank, score.template_id, f"{score.loss:.6f}", score.tokens, score.rows])
    summary = {
        "recipe": str(recipe_path), "model": recipe.get("model_name_or_path"), "task": recipe.get("task"),
        "rule": selection.rule, "chosen": selection.chosen.template_id, "chosen_loss": selection.chosen.loss,
        "seconds": round(selection.seconds, 2), "scores": [s.to_dict() for s in ranked],
    }
    trained = {**recipe, "template_draw": "top", "template_id": selection.chosen.template_id}
    header = (f"# Written by `paft-rl select` from {Path(recipe_path).name}: SAPO picked template "
              f"{selection.chosen.template_id!r} ({selection.rule} loss {selection.chosen.loss:.4f}).\n")
    paths = {"csv": out_dir / "scores.csv", "json": out_dir / "scores.json", "recipe": out_dir / "selected_recipe.yaml"}
    atomic_write_text(paths["csv"], table.getvalue())
    atomic_write_text(paths["json"], json.dumps(summary, indent=2) + "\n")
    atomic_write_text(paths["recipe"], header + yaml.safe_dump(trained, sort_keys=False, allow_unicode=True))
    return paths
