"""Scoring generations with the task's training reward, and reading back the answer it parsed.

The reward is called exactly as GRPO calls it (TRL's signature, the dataset's ``gold`` and ``options``
columns as keyword arguments), so an evaluation score and a training reward can never disagree.
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


def score_cells(task: Task, cells: list, generations: Mapping[tuple[str, str], Any]) -> list[dict]:
    """Score every cell's generation in one reward call; one record per cell for ``generations.jsonl``.

    Args:
        task (`Task`): gives the reward name.
        cells (`list[Cell]`): prompts, golds and options.
        generations (`dict`): ``(template, row)`` -> `Generation`.
    """
    reward = rewards.get_reward(task.reward)
    completions = [generations[(c.template, c.row)].text for c in cells]
    kwargs = {"gold": [c.gold for c in cells]}
    if task.is_multiple_choice:
        kwargs["options"] = [c.options for c in cells]
    scores = reward([c.prompt for c in cells], completions, **kwargs)
    records = []
    for cell, completion, score in zip(cells, completions, scores):
        records.append({
            "template": cell.template,
            "row_id": cell.row,
            "prompt": cell.prompt,
            "output": completion,
            "parsed": parse_answer(task.reward, completion, cell.options),
            "gold": cell.gold,
            "score": None if score is None else float(score),
            "tokens": generations[(cell.template, cell.row)].tokens,
        })
    return records
