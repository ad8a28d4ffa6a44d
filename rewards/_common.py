"""Plumbing shared by every reward: reading completions of any shape and never letting one bad row crash a run.

TRL calls a reward as `fn(prompts=..., completions=..., completion_ids=..., trainer_state=..., log_extra=...,
log_metric=..., **dataset_columns)`. Completions are plain strings or conversations (a list of message dicts);
evaluation code passes single strings. Everything here turns those shapes into text and fans per-item scorers
out over a batch.
"""

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from .metrics import count_failure

logger = logging.getLogger(__name__)

# Inputs longer than this are cut before any regex runs: a reward must stay linear-time on a 10 MB blob.
MAX_CHARS = 200_000


def content_to_text(content: Any) -> str:
    """Turn a message `content` (a string, or a list of `{"type": "text", "text": ...}` parts) into text."""
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    return ""


def last_assistant_message(completion: Any) -> dict | None:
    """Return the last assistant message of a conversational completion, or `None`."""
    if isinstance(completion, dict):
        return completion
    if isinstance(completion, (list, tuple)):
        messages = [m for m in completion if isinstance(m, dict)]
        assistant = [m for m in messages if m.get("role", "assistant") == "assistant"]
        if assistant:
            return assistant[-1]
        if messages:
            return messages[-1]
    return None


def completion_text(completion: Any) -> str:
    """Return the text of a completion in any shape TRL or evaluation code may pass; `""` when there is none.

    Args:
        completion (`str`, `list[dict]`, `dict` or anything):
            A plain-text completion, a conversation (`[{"role": "assistant", "content": ...}]`) or a single
            message. Other types give `""`.
    """
    if isinstance(completion, str):
        text = completion
    elif isinstance(completion, bytes):
        text = completion.decode("utf-8", errors="replace")
    else:
        message = last_assistant_message(completion)
        text = content_to_text(message.get("content")) if message else ""
    return text[:MAX_CHARS]


def as_text(value: Any) -> str | None:
    """Coerce a gold/option cell to text: strings pass, numbers are formatted, `None` stays `None`."""
    if value is None:
        return None
    if isinstance(value, str):
        return value[:MAX_CHARS]
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) else str(value)
    try:
        return json.dumps(value, ensure_ascii=False)[:MAX_CHARS]
    except (TypeError, ValueError):
        return None


def column(values: Any, n: int) -> list:
    """Broadcast a dataset column to `n` rows: a list of the right length passes, a scalar is repeated."""
    if isinstance(values, (list, tuple)) and len(values) == n:
        return list(values)
    if isinstance(values, (list, tuple)):
        # A wrong-length column is a caller bug; pad with None so the reward marks rows "not applicable".
        return (list(values) + [None] * n)[:n]
    return [values] * n


def batch_size(completions: Any) -> int:
    """Number of rows in a batch; a non-sequence counts as one row."""
    if isinstance(completions, Sequence) and not isinstance(completions, (str, bytes)):
        return len(completions)
    return 1


def safe_item(name: str, scorer: Callable[..., float | None], *args: Any) -> float | None:
    """Call `scorer(*args)`; on any exception log once, count `<name>/error` and score `0.0`."""
    try:
        return scorer(*args)
    except Exception as exc:  # noqa: BLE001 - a reward must never end a training run
        count_failure(f"{name}/error")
        logger.debug("reward %s swallowed %r", name, exc)
        return 0.0


def with_extract(reward: Callable, extract: Callable[..., Any]) -> Callable:
    """Give ``reward`` its ``extract(completion, **row) -> answer | None``: the answer the reward reads in one
    completion (the row's dataset columns as keywords, as the reward gets them), `None` where it reads none, the
    completions it counts as unparsed. Like the reward it never raises: an error reads as no answer."""
    name = reward.__name__

    def safe_extract(completion: Any, **row: Any) -> Any:
        try:
            return extract(completion, **row)
        except Exception as exc:  # noqa: BLE001 - showing an answer must never end a run either
            count_failure(f"{name}/error")
            logger.debug("extractor of %s swallowed %r", name, exc)
            return None

    reward.extract = safe_extract
    return reward


def report(kwargs: dict, name: str, rewards: list[float | None], unparsed: int) -> None:
    """Log the share of unreadable rows through TRL's `log_metric` hook when the trainer provides it."""
    log_metric = kwargs.get("log_metric")
    if callable(log_metric) and rewards:
        try:
            log_metric(f"rewards/{name}/unparsed_frac", unparsed / len(rewards))
        except Exception:  # noqa: BLE001
            pass


