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

from prompt_pool import UserError, atomic_write_text, read_yaml_mapping, unknown_key_error

from ..tasks import get_task, load_rows, load_task_pool
from .scoring import TemplateScore, pick_template, score_templates

SAPO_ROWS = 250  # SAPO scores each template on the first 250 training rows

# Recipe keys `select` reads; everything else in the recipe is left for the trainer.
RECIPE_DEFAULTS = {
    "model_name_or_path": None, "task": None, "data": None, "data_split": None, "pool": None, "field_aliases": None,
    "drop_duplicate_templates": False, "prompt_format": "auto", "system_prompt": None, "mc_answer_style": None,
    "seed": 42, "output_dir": None, "data_limit": None,
}


@dataclass
class Selection:
    """What `select` found: every template's score, the chosen one, and the rule."""

    scores: list[TemplateScore]
    chosen: TemplateScore
    rule: str
    seconds: float


def read_recipe(path: str) -> dict[str, Any]:
    """The recipe as a mapping; a malformed file or a key no SFT / GRPO recipe knows is a one-line error."""
    from dataclasses import fields

    from trl import ModelConfig

    from ..configs import PaftGRPOConfig, PaftSFTConfig

    recipe = read_yaml_mapping(path, "recipe")
    known = {f.name for config in (PaftSFTConfig, PaftGRPOConfig, ModelConfig) for f in fields(config)} | {"env"}
    for key in recipe:
        if key not in known:
            raise unknown_key_error(key, known, Path(path).name, "option")
    return recipe


def trained_output_dir(recipe: dict[str, Any], out_dir: Path) -> str:
    """Where the selected recipe trains: never the folder of the run the recipe came from."""
    original = recipe.get("output_dir")
    return f"{str(original).rstrip('/')}_sapo" if original else str(out_dir / "trained")


def load_model(spec: str):
    """A model folder, hub id, or LoRA adapter folder (merged over its base), as `paft-rl eval` loads them."""
    import torch

    from ..eval.models import load_hf_model, load_tokenizer, resolve_model

    source = resolve_model(spec)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return load_hf_model(source, device), load_tokenizer(source)


def select_template(recipe: dict[str, Any], rows: int | None = None, rule: str = "lowest", batch_size: int = 16,
                    model=None, tokenizer=None) -> Selection:
    """Score the recipe's train templates on the first ``rows`` rows and pick one by ``rule``.

    ``rows`` defaults to SAPO's 250, or fewer when the recipe trains on fewer (``data_limit``): templates are
    scored on rows the recipe trains on, never beyond them.
    """
    settings = {**RECIPE_DEFAULTS, **recipe}
    if batch_size < 1:
        raise UserError(f"--batch-size must be a positive number, got {batch_size}")
    if not settings["task"]:
        raise UserError("the recipe names no task: set `task:`")
    task = get_task(settings["task"])
    if settings["mc_answer_style"] and task.is_multiple_choice:
        task = task.with_answer_style(settings["mc_answer_style"])
    pool = load_task_pool(task, settings["pool"], settings["field_aliases"], settings["drop_duplicate_templates"])
    if len(pool.train) < 2:
        raise UserError(f"{pool.name} has {len(pool.train)} train template(s): SAPO needs at least 2 to choose from")
    if rows is not None and rows <= 0:
        raise UserError(f"--rows must be a positive number, got {rows}")
    data_limit = settings.get("data_limit")
    if data_limit is not None and rows is not None and rows > data_limit:
        raise UserError(f"--rows {rows} but the recipe trains on its first {data_limit} rows (data_limit); lower "
                        "--rows so that templates are scored on data the recipe trains on")
    wanted = rows if rows is not None else min(SAPO_ROWS, data_limit or SAPO_ROWS)
    data = load_rows(task, settings["data"], settings["data_split"], limit=wanted if task.generate else None,
                     seed=int(settings["seed"]))
    if rows is None:
        wanted = rows = min(wanted, len(data))
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
    trained = {**recipe, "template_draw": "top", "template_id": selection.chosen.template_id,
               "output_dir": trained_output_dir(recipe, out_dir)}
    trained.pop("fixed_template", None)
    header = (f"# Written by `paft-rl select` from {Path(recipe_path).name}: SAPO picked template "
              f"{selection.chosen.template_id!r} ({selection.rule} loss {selection.chosen.loss:.4f}).\n")
    paths = {"csv": out_dir / "scores.csv", "json": out_dir / "scores.json", "recipe": out_dir / "selected_recipe.yaml"}
    atomic_write_text(paths["csv"], table.getvalue())
    atomic_write_text(paths["json"], json.dumps(summary, indent=2) + "\n")
    atomic_write_text(paths["recipe"], header + yaml.safe_dump(trained, sort_keys=False, allow_unicode=True))
    return paths
