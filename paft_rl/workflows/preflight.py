"""What a workflow checks before its first stage: every training stage as ``paft-rl sft|grpo`` checks it
(`paft_rl.trainers.preflight.preflight`), and every evaluation's task, templates and rows, so that a mistake in the
last stage, or eval data that cannot load, costs nothing instead of the stages before it.

A stage that trains a model an earlier stage has not made yet is checked with the model that earlier stage starts
from: training changes weights, not the architecture or the tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prompt_pool import UserError

from ..eval.runner import EvalSettings


def check_training(command: str, recipe: dict[str, Any], where: str, model: str | None = None) -> None:
    """Parse ``recipe`` and run ``paft-rl sft|grpo``'s pre-flight on it (the workflow decides output_dir and resume
    itself when the stage runs); a failure is named ``where: ...``.

    Args:
        command (`str`): ``sft`` or ``grpo``.
        recipe (`dict`): the stage's recipe, as it will train.
        where (`str`): the stage in messages (``grpo recipe g.yaml``, ``s.yaml.tasks[1]``).
        model (`str`, *optional*): the model that stands in for the recipe's, when that one is made by an earlier
            stage.
    """
    from ..trainers.preflight import preflight
    from ..trainers.recipes import peft_config_of
    from ..training import recipe_configs

    try:
        with quiet_progress():
            args, model_args = recipe_configs(command, recipe)
            preflight(args, model or model_args.model_name_or_path, peft_config=peft_config_of(model_args))
    except UserError as error:
        raise UserError(f"{where}: {error}") from None


def check_evaluation(settings: EvalSettings, where: str) -> None:
    """An evaluation a workflow runs after training: its task, its templates and its rows load now (the models
    it judges may not exist yet); a failure is named ``where: ...``."""
    from ..eval.runner import build_cells, eval_templates
    from ..tasks import get_task, parse_field_aliases

    try:
        with quiet_progress():
            task = get_task(settings.task).with_answer_style(settings.mc_answer_style)
            parse_field_aliases(settings.field_aliases)
            build_cells(task, eval_templates(task, settings.templates, settings.field_aliases, settings.pool), settings)
    except UserError as error:
        raise UserError(f"{where}: {error}") from None


@contextmanager
def quiet_progress() -> Iterator[None]:
    """No `datasets` progress bars while checking: a check that passes prints nothing, one that fails one line."""
    import datasets

    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if shown:
            datasets.enable_progress_bars()
