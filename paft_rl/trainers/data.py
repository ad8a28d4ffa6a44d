"""Data preparation for the trainers: task rows become rows with template fields, reference answers and a stable
``row_id``; eval rows are repeated once per eval template."""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import datasets

from prompt_pool import PromptPool, UserError

from ..eval.templates import eval_templates
from ..tasks import Task, load_rows, parse_field_aliases, task_rows

FIELDS_COLUMN = "paft_fields"  # JSON of the example's template fields (Arrow cannot hold rows of varying keys)
EVAL_TEMPLATE_COLUMN = "paft_eval_template"  # the template id of an eval row (fixed for the whole run)
ANSWER_FORMAT_COLUMN = "answer_format"  # GRPO: the answer format each completion's template declared (template_format)

logger = logging.getLogger("paft_rl.trainers")


def build_dataset(task: Task, rows: datasets.Dataset) -> datasets.Dataset:
    """Add what the trainers need to ``rows``: the template fields (JSON), ``gold`` (and ``options`` for
    multiple choice) for the rewards, and ``target``, the reference completion for SFT."""

    def convert(row):
        example = task.example(row)
        record = {FIELDS_COLUMN: json.dumps(example.fields, ensure_ascii=False), "gold": example.gold,
                  "target": example.target}
        if task.is_multiple_choice:
            record["options"] = list(example.options or [])
        return record

    return rows.map(convert, desc="task fields")


def as_dataset(rows, option: str) -> datasets.Dataset:
    """``rows`` as a `datasets.Dataset`: one already, or a list of row dicts."""
    if isinstance(rows, datasets.Dataset):
        return rows
    if isinstance(rows, list) and all(isinstance(row, Mapping) for row in rows):
        return datasets.Dataset.from_list(rows)
    raise UserError(f"{option} must be a datasets.Dataset or a list of row dicts (the task's columns, as the hub "
                    f"gives them), got {type(rows).__name__}")


def training_dataset(args, task: Task, rows=None) -> datasets.Dataset:
    """The training rows: ``rows`` (raw task rows), or the task's data as ``args`` names it (``data``,
    ``data_split``), first ``data_limit`` of them either way, with fields and answers (`build_dataset`)."""
    if rows is None:
        rows = load_rows(task, data=args.data, split=args.data_split, limit=args.data_limit, seed=int(args.seed))
    else:
        rows = task_rows(task, as_dataset(rows, "train_dataset"), args.data_limit)
    if len(rows) == 0:
        raise UserError(f"the dataset for task {task.name!r} has no rows")
    return build_dataset(task, rows)


def eval_dataset(args, task: Task, rows=None) -> datasets.Dataset:
    """The rows of evaluation during training: ``rows`` (raw task rows), or ``eval_data`` (default: the task's
    eval split of ``data``); first ``eval_data_limit`` of them either way."""
    if rows is None:
        rows = load_eval_rows(args, task)
    else:
        rows = task_rows(task, as_dataset(rows, "eval_dataset"), args.eval_data_limit)
    if len(rows) == 0:
        raise UserError(f"the eval dataset for task {task.name!r} has no rows")
    return build_dataset(task, rows)


def load_eval_rows(args, task: Task) -> datasets.Dataset:
    data = args.eval_data or args.data
    if args.eval_data is None and args.data is not None and Path(args.data).is_file():
        raise UserError(f"evaluation during training needs held-out rows and {args.data} is one file (no eval "
                        f"split): set eval_data FILE, or eval_strategy: no")
    return load_rows(task, data=data, split=args.eval_data_split or task.eval_split, limit=args.eval_data_limit,
                     seed=int(args.seed))


def example_fields(row: Mapping[str, Any]) -> dict[str, str]:
    return json.loads(row[FIELDS_COLUMN])


def keep_unused_columns(args) -> None:
    """Set ``remove_unused_columns=False`` (prompts are rendered from ``row_id`` and the fields column, which the
    model's forward does not take), saying so once when it changes the user's setting."""
    if args.remove_unused_columns:
        logger.warning("paft-rl: remove_unused_columns set to False: the trainer renders each prompt from the row_id "
                       "and %s columns, which Trainer would otherwise drop", FIELDS_COLUMN)
    args.remove_unused_columns = False


# ---------------------------------------------------------------------------- evaluation during training
def load_eval_pool(args, task: Task) -> PromptPool:
    """The templates of evaluation during training, chosen as `paft-rl eval` chooses them (`eval_templates`)."""
    return eval_templates(task, args.eval_templates, parse_field_aliases(args.field_aliases), args.pool,
                          drop_duplicates=args.drop_duplicate_templates, option="eval_templates")


def expand_for_eval(dataset: datasets.Dataset, pool: PromptPool) -> datasets.Dataset:
    """Each eval row once per eval template (template-major), the template id in a column, so every evaluation
    scores the same (row, template) pairs whatever order the eval sampler takes."""
    if EVAL_TEMPLATE_COLUMN in dataset.column_names:
        return dataset
    return datasets.concatenate_datasets(
        [dataset.add_column(EVAL_TEMPLATE_COLUMN, [t.id] * len(dataset)) for t in pool.templates])


def template_summary(values: Mapping[str, float], name: str, worst) -> dict[str, float]:
    """Per-template values plus their mean, worst (``worst``: `min` for rewards, `max` for losses) and std."""
    metrics = {f"paft/{name}_by_template/{template_id}": value for template_id, value in sorted(values.items())}
    if values:
        metrics[f"paft/{name}_template_mean"] = statistics.fmean(values.values())
        metrics[f"paft/{name}_template_worst"] = worst(values.values())
        metrics[f"paft/{name}_template_std"] = statistics.pstdev(values.values())
    return metrics
