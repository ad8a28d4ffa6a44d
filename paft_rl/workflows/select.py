"""SAPO's static selection as a workflow (``paft-rl select``, and each boundary of a task sequence): score a
recipe's train templates under its model and write a copy of the recipe that trains on the winner.

The recipe is read as ``paft-rl sft|grpo`` read it (TRL's dataclasses, their defaults and did-you-mean), so the
templates are scored on exactly the rows and the prompt text the recipe trains on: its task, data, data_limit,
prompt_format, system_prompt and (SFT) max_length.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from prompt_pool import UserError, atomic_write_text, read_yaml_mapping

from ..outputs import check_output, refuse_replacing
from ..selection.scoring import TemplateScore, pick_template, score_templates
from ..settings import Settings, option
from ..tasks import load_rows, load_task_pool
from ..training import recipe_configs

SAPO_ROWS = 250  # SAPO scores each template on the first 250 training rows
# What a selection writes into its folder (`write_selection`).
SELECTION_FILES = {"csv": "scores.csv", "json": "scores.json", "recipe": "selected_recipe.yaml"}


@dataclass
class SelectOptions(Settings):
    """How templates are scored and picked (``paft-rl select``'s options, a sequence's ``select:`` section).

    Args:
        rows (`int`, *optional*): SAPO's N, the first rows scored; default 250, or the recipe's ``data_limit`` if
            smaller (templates are scored on rows the recipe trains on, never beyond them).
        pick (`str`, defaults to `"lowest"`): ``lowest`` loss (SAPO) or ``highest`` (the paper's pessimal control).
        batch_size (`int`, defaults to `16`): (template, row) pairs per forward pass.
    """

    rows: int | None = option(None, help="score on the first N rows (default: SAPO's 250, or the recipe's "
                                         "data_limit if smaller)", positive=True)
    pick: Literal["lowest", "highest"] = option("lowest", help="lowest loss (SAPO) or highest (the paper's "
                                                              "pessimal control)")
    batch_size: int = option(16, help="(template, row) pairs per forward pass", positive=True)


@dataclass(kw_only=True)
class SelectSettings(SelectOptions):
    """``paft-rl select``: the recipe, the scoring options, where the results go.

    Args:
        config (`str`): SFT or GRPO recipe (model, task, data, pool, prompt format).
        model (`str`, *optional*): model to score with; default the recipe's ``model_name_or_path``.
        out (`str`, *optional*): output folder; default ``<output_dir>/sapo_selection``, else ``./sapo_selection``.
        force (`bool`, defaults to `False`): replace what an earlier selection wrote in the output folder.
    """

    config: str = option(help="SFT or GRPO recipe (model, task, data, pool, prompt format)")
    model: str | None = option(None, help="model to score with (default: the recipe's model_name_or_path)")
    out: str | None = option(None, help="output folder (default: <output_dir>/sapo_selection, else "
                                        "./sapo_selection)")
    force: bool = option(False, help="replace the scores and recipe an earlier selection wrote in the output folder")


@dataclass
class Selection:
    """What `select_template` found: every template's score, the chosen one, and the rule."""

    scores: list[TemplateScore]
    chosen: TemplateScore
    rule: str
    seconds: float


def read_recipe(path: str, model: str | None = None) -> dict[str, Any]:
    """The recipe file as a mapping (``model`` replacing its model when given); a malformed file is one line."""
    recipe = read_yaml_mapping(path, "recipe")
    if model:
        recipe["model_name_or_path"] = model
    if not recipe.get("model_name_or_path"):
        raise UserError(f"{Path(path).name} names no model: set model_name_or_path or pass --model")
    return recipe


def check_rows(options: SelectOptions, args, name: str = "--rows") -> None:
    """Templates are scored on rows the recipe trains on: never more than its ``data_limit``."""
    if args.data_limit is not None and options.rows is not None and options.rows > args.data_limit:
        raise UserError(f"{name} {options.rows} but the recipe trains on its first {args.data_limit} rows "
                        f"(data_limit); lower {name} so that templates are scored on data the recipe trains on")


def load_model(spec: str):
    """A model folder, hub id, or LoRA adapter folder (merged over its base), as `paft-rl eval` loads them."""
    import torch

    from ..eval.models import load_hf_model, load_tokenizer, resolve_model

    source = resolve_model(spec)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return load_hf_model(source, device), load_tokenizer(source)


def select_template(args, model_path: str, options: SelectOptions, model=None, tokenizer=None,
                    model_args=None) -> Selection:
    """Score the recipe's train templates on its first rows and pick one by ``options.pick``.

    Args:
        args (`PaftSFTConfig` or `PaftGRPOConfig`): the parsed recipe (`recipe_configs`).
        model_path (`str`): the model to score with (a folder, hub id or LoRA adapter folder), loaded unless
            ``model`` and ``tokenizer`` are given.
        options (`SelectOptions`): rows, rule, batch size.
        model_args (`trl.ModelConfig`, *optional*): the recipe's; when given, the recipe's training pre-flight
            (`paft_rl.trainers.preflight.preflight`) runs before the model loads, so a recipe that could not train
            is refused before it is scored (``paft-rl select`` writes a copy of it to train).
    """
    from trl import SFTConfig

    from ..trainers.preflight import preflight, resolve_task
    from ..trainers.recipes import peft_config_of

    task = resolve_task(args)
    pool = load_task_pool(task, args.pool, args.field_aliases, args.drop_duplicate_templates)
    if len(pool.train) < 2:
        raise UserError(f"{pool.name} has {len(pool.train)} train template(s): SAPO needs at least 2 to choose from")
    check_rows(options, args)
    rows, data_limit = options.rows, args.data_limit
    wanted = rows if rows is not None else min(SAPO_ROWS, data_limit or SAPO_ROWS)
    data = load_rows(task, args.data, args.data_split, limit=wanted if task.generate else None, seed=int(args.seed))
    rows = min(wanted, len(data)) if rows is None else rows
    if rows > len(data):
        raise UserError(f"--rows {rows} but the data has only {len(data)} rows; lower --rows")
    examples = [task.example(row) for row in data.select(range(rows))]
    if model_args is not None:
        preflight(args, model_path, peft_config=peft_config_of(model_args))
    if model is None:
        model, tokenizer = load_model(model_path)
    # An SFT run cuts sequences at max_length: a template is never scored on tokens the run would not train on.
    max_length = args.max_length if isinstance(args, SFTConfig) else None
    start = time.perf_counter()
    scores = score_templates(model, tokenizer, pool, examples, n=rows, batch_size=options.batch_size,
                             max_length=max_length, system_prompt=args.system_prompt,
                             prompt_format=args.prompt_format)
    return Selection(scores, pick_template(scores, options.pick), options.pick, time.perf_counter() - start)


def trained_output_dir(recipe: dict[str, Any], out_dir: Path) -> str:
    """Where the selected recipe trains: never the folder of the run the recipe came from."""
    original = recipe.get("output_dir")
    return f"{str(original).rstrip('/')}_sapo" if original else str(out_dir / "trained")


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
    paths = {kind: out_dir / name for kind, name in SELECTION_FILES.items()}
    atomic_write_text(paths["csv"], table.getvalue())
    atomic_write_text(paths["json"], json.dumps(summary, indent=2) + "\n")
    atomic_write_text(paths["recipe"], header + yaml.safe_dump(trained, sort_keys=False, allow_unicode=True))
    return paths


def run_select(settings: SelectSettings, log=print) -> tuple[Selection, dict[str, Path]]:
    """``paft-rl select``: read and check the recipe, score, pick, write; returns the selection and its files."""
    recipe = read_recipe(settings.config, settings.model)
    args, model_args = recipe_configs(None, recipe, Path(settings.config).name)
    out_dir = check_output(settings.out or Path(recipe.get("output_dir") or ".") / "sapo_selection", "--out")
    held = [name for name in SELECTION_FILES.values() if (out_dir / name).exists()]
    refuse_replacing(out_dir, "--out", held, settings.force)
    selection = select_template(args, model_args.model_name_or_path, settings, model_args=model_args)
    paths = write_selection(selection, recipe, settings.config, out_dir)
    for rank, score in enumerate(sorted(selection.scores, key=lambda s: s.loss)[:10], start=1):
        marker = "  <- chosen" if score is selection.chosen else ""
        log(f"{rank:>3}. {score.template_id:<28} loss {score.loss:.4f}{marker}")
    log(f"chosen ({settings.pick} loss): {selection.chosen.template_id}; scored {len(selection.scores)} templates x "
        f"{selection.scores[0].rows} rows in {selection.seconds:.1f} s")
    log(f"wrote {paths['csv']}, {paths['json']}")
    log(f"train on it: paft-rl sft --config {paths['recipe']}   (or paft-rl grpo)")
    return selection, paths
