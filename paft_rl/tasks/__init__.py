"""Task registry: a plain dict from name to `Task`."""

from __future__ import annotations

from collections.abc import Iterable

from prompt_pool import PromptPool, UserError, load_pool

from .base import (
    LETTERS,
    TEXT_ANSWER_MARGIN,
    Example,
    Task,
    choice_example,
    lettered_fields,
    longest_option_tokens,
    text_answer_tokens,
)
from .data import load_row, load_rows, task_rows
from .hub import HUB_TASKS
from .synthetic import SYNTHETIC_TASKS

TASKS: dict[str, Task] = {task.name: task for task in HUB_TASKS + SYNTHETIC_TASKS}


def get_task(name: str) -> Task:
    """Look a task up by name, with the list of known names in the error."""
    try:
        return TASKS[name]
    except KeyError:
        raise UserError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}") from None


def parse_field_aliases(pairs: Iterable[str] | dict | None) -> dict[str, str]:
    """Parse ``NAME=FIELD`` pairs (``--field_aliases`` or a recipe list/mapping) into ``{NAME: FIELD}``."""
    if not pairs:
        return {}
    if isinstance(pairs, dict):
        return {str(k): str(v) for k, v in pairs.items()}
    aliases = {}
    for pair in pairs:
        name, sep, target = str(pair).partition("=")
        if not sep or not name.strip().isidentifier() or not target.strip().isidentifier():
            raise UserError(f"field_aliases expects NAME=FIELD with identifier names, got {pair!r}")
        aliases[name.strip()] = target.strip()
    return aliases


def load_task_pool(task: Task, pool: str | None = None, aliases: Iterable[str] | dict | None = None,
                   drop_duplicates: bool = False, validate: bool = True) -> PromptPool:
    """Load ``pool`` (a file or built-in name; default: the task's built-in pool) and validate it for ``task``.

    Nothing is trained or evaluated on a pool that fails validation: every problem is raised at once.
    """
    loaded = load_pool(pool or task.builtin_pool).with_aliases(parse_field_aliases(aliases))
    if drop_duplicates:
        loaded, _ = loaded.drop_duplicates()
    return loaded.validate(task) if validate else loaded


__all__ = [
    "load_task_pool",
    "LETTERS", "TASKS", "TEXT_ANSWER_MARGIN", "Example", "Task", "choice_example", "get_task", "lettered_fields",
    "load_row", "load_rows", "longest_option_tokens", "parse_field_aliases", "task_rows", "text_answer_tokens",
]
