"""Which templates an evaluation judges: a split of a pool, or a pool file whole.

One rule for `paft-rl eval` (``--templates``, ``--pool``), the workflows that evaluate what they trained, and
evaluation during training (a recipe's ``eval_templates``): ``heldout`` means the templates the training pool
holds out, so the ones its training never drew.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from prompt_pool import PromptPool, UserError, builtin_names

from ..tasks import Task, load_task_pool

SPLIT_SPECS = ("heldout", "train", "all")  # what `templates` may name instead of a pool file


def eval_templates(task: Task, spec: str, aliases: Iterable[str] | dict | None, pool: str | None = None,
                   drop_duplicates: bool = False, option: str = "templates") -> PromptPool:
    """The templates to evaluate: a split of ``pool`` (default: the task's built-in pool), or a whole pool file.

    A pool without held-out templates trains fine, but has nothing unseen to evaluate: asking for its held-out
    templates stops here, before any model loads.

    Args:
        task (`Task`): the task the templates are validated for.
        spec (`str`): ``heldout``, ``train`` or ``all`` (a split of ``pool``), or a pool file evaluated whole.
        aliases: ``NAME=FIELD`` pairs for pools written with other field names.
        pool (`str`, *optional*): the pool file or built-in name whose split ``spec`` names: the training's.
        drop_duplicates (`bool`, defaults to `False`): drop duplicate templates of ``pool``, as its training did.
        option (`str`, defaults to `"templates"`): the option ``spec`` came from, named in errors.
    """
    if spec in SPLIT_SPECS:
        loaded = load_task_pool(task, pool, aliases, drop_duplicates=drop_duplicates)
        chosen = loaded.subset(spec)
        if not chosen.templates:
            where = f"the built-in pool of task {task.name!r}" if pool is None else f"pool {loaded.name}"
            if spec != "heldout":
                raise UserError(f"{where} has no {spec} templates")
            raise UserError(f"{where} has no held-out templates, so no template unseen in training can be "
                            f"evaluated: mark some with split heldout (paft-rl pool split), or set {option} to "
                            "train, all or a pool file")
        return chosen
    if not Path(spec).exists() and spec not in builtin_names():
        close = difflib.get_close_matches(spec, SPLIT_SPECS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UserError(f"{option} {spec!r} is neither a split of the task's pool nor a pool file: {hint}use "
                        "heldout, train, all, or the path of a pool file")
    whole = load_task_pool(task, spec, aliases, validate=False)
    if not whole.templates:
        raise UserError(f"{option} file {spec!r} holds no template")
    # A file is evaluated whole, so it is validated as if every template were usable (no train split needed).
    replace(whole, templates=[replace(t, split="train") for t in whole.templates]).validate(task)
    return whole
