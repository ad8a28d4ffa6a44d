"""Scoring generations with the task's training reward, and reading back the answer it parsed.

The reward is called exactly as GRPO calls it (TRL's signature, the dataset's ``gold`` and ``options``
columns as keyword arguments), so an evaluation score and a training reward can never disagree. Whether an
answer could be read at all is also the reward's call: a cell counts as a parse failure when scoring it
bumped the reward's own counter (`rewards.parse_failures`), the number GRPO logs as ``unparsed_frac``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import rewards

from ..tasks import Task


def parse_answer(reward_name: str, text: str, options: list[str] | None) -> Any:
    """The answer the reward reads out of ``text``, for ``generations.jsonl`` (a letter, a number, calls)."""
    try:
        if reward_name == "mc_accuracy":
            return rewards.extract_choice(text, options)
        if reward_name == "math_accuracy":
            return rewards.extract_answer(text)
        if reward_name.startswith("tool_call"):
            return rewards.parse_tool_calls(text)
    except Exception:  # noqa: BLE001 - a display helper must never end an evaluation
        return None
    return text.strip()


def score_with_failures(reward_name: str, prompts: list[str], completions: list[str],
                        **columns: list) -> tuple[list[float | None], list[bool]]:
    """Scores from the reward, and for each completion whether the reward could not read an answer in it.

    One reward call per completion, so the counter's change is that completion's own; rewards score items
    independently, so the scores equal one batched call's.
    """
    reward = rewards.get_reward(reward_name)
    scores, failed = [], []
    for index, (prompt, completion) in enumerate(zip(prompts, completions)):
        before = rewards.parse_failures().get(reward_name, 0)
        scores += reward([prompt], [completion], **{name: [values[index]] for name, values in columns.items()})
        failed.append(rewards.parse_failures().get(reward_name, 0) > before)
    return scores, failed


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
    scores, failed = score_with_failures(task.reward, [c.prompt for c in cells], completions, **columns)
    records = []
    for cell, key, completion, score, unparsed in zip(cells, keys, completions, scores, failed):
        generation = generations[key]
        record = {
            "template": cell.template,
            "row_id": cell.row,
            "prompt": prompts[key] if prompts is not None else cell.prompt,
            "output": completion,
            "parsed": parse_answer(task.reward, completion, cell.options),
            "parse_failed": unparsed,
            "gold": cell.gold,
            "score": None if score is None else float(score),
            "tokens": generation.tokens,
        }
        if generation.logliks is not None:
            record["option_logliks"] = list(generation.logliks)
        records.append(record)
    return records
