"""Scoring generations with the task's training reward, and reading back the answer it parsed.

The reward is called exactly as GRPO calls it (TRL's signature, one batch, the dataset's ``gold`` and ``options``
columns as keyword arguments), so an evaluation score and a training reward can never disagree. Whether an
answer could be read at all is also the reward's call: its extractor (`rewards.get_extractor`) gives the answer
it reads in each completion, `None` for those it scores as unparsed (no answer it could read).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import rewards

from ..tasks import Task


def score_with_answers(reward_name: str, prompts: list[str], completions: list[str],
                       **columns: list) -> tuple[list[float | None], list[Any]]:
    """Scores from one batched reward call, and the answer the reward reads in each completion (`None`: unparsed).

    Args:
        reward_name (`str`): a registered reward or a dotted path (`rewards.get_reward`).
        prompts (`list[str]`), completions (`list[str]`): one per item.
        **columns (`list`): dataset columns the reward reads (``gold``, ``options``), one value per item.
    """
    reward = rewards.get_reward(reward_name)
    scores = reward(prompts, completions, **columns)
    extract = rewards.get_extractor(reward)
    answers = [extract(completion, **{name: values[index] for name, values in columns.items()})
               for index, completion in enumerate(completions)]
    return scores, answers


def score_cells(task: Task, cells: list, generations: Mapping[tuple[str, str], Any],
                prompts: Mapping[tuple[str, str], str] | None = None) -> list[dict]:
    """Score every cell's generation with the task reward; one record per cell for ``generations.jsonl``.

    Args:
        task (`Task`): gives the reward name.
        cells (`list[Cell]`): prompts, golds and options.
        generations (`dict`): ``(template, row)`` -> `Generation`.
        prompts (`dict`, *optional*): ``(template, row)`` -> the exact text the model was given (after the chat
            template); recorded as ``prompt``. Defaults to the bare rendered template.
    """
    keys = [(c.template, c.row) for c in cells]
    completions = [generations[key].text for key in keys]
    columns = {"gold": [c.gold for c in cells]}
    if task.is_multiple_choice:
        columns["options"] = [c.options for c in cells]
    scores, answers = score_with_answers(task.reward, [c.prompt for c in cells], completions, **columns)
    records = []
    for cell, key, completion, score, answer in zip(cells, keys, completions, scores, answers):
        generation = generations[key]
        record = {
            "template": cell.template,
            "row_id": cell.row,
            "prompt": prompts[key] if prompts is not None else cell.prompt,
            "output": completion,
            "parsed": answer,
            "parse_failed": answer is None,
            "gold": cell.gold,
            "score": None if score is None else float(score),
            "tokens": generation.tokens,
        }
        if generation.logliks is not None:
            record["option_logliks"] = list(generation.logliks)
        records.append(record)
    return records
