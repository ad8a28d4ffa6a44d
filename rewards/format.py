"""Format rewards: they look at the shape of a completion, not at whether its answer is right.

`think_answer_format` checks the `<think>...</think><answer>...</answer>` layout used by R1-style recipes;
`answer_cue` checks that the completion states an answer in a form the accuracy rewards can read;
`length_penalty` (optional) pushes completions below a length budget. None of them needs the gold.
"""

import re
from typing import Any

from ._common import batch_size, completion_text, report, safe_item
from .metrics import count_failure


_THINK_ANSWER = re.compile(r"\s*<think>(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*", re.DOTALL)
_TAGS = re.compile(r"</?(?:think|answer)>")
_CUES = re.compile(
    r"\\boxed\s*\{|####|<answer>.*?\S.*?</answer>|\b(?:final\s+)?answer\s*(?:is|:)\s*\S",
    re.IGNORECASE | re.DOTALL,
)


def score_think_answer(completion: Any) -> float:
    """`1.0` when the text is exactly one non-empty `<think>` block followed by one non-empty `<answer>` block."""
    text = completion_text(completion)
    match = _THINK_ANSWER.fullmatch(text)
    if not match or len(_TAGS.findall(text)) != 4:
        return 0.0
    return float(bool(match["think"].strip()) and bool(match["answer"].strip()))


def score_answer_cue(completion: Any) -> float:
    """`1.0` when the completion states its answer explicitly (`\\boxed{}`, `####`, "The answer is", `<answer>`)."""
    return float(bool(_CUES.search(completion_text(completion))))


def _batch(name: str, scorer, completions: Any, kwargs: dict) -> list[float]:
    completions = completions if isinstance(completions, (list, tuple)) else [completions] * batch_size(completions)
    scores = [safe_item(name, scorer, c) for c in completions]
    missing = sum(1 for s in scores if s == 0.0)
    count_failure(name, missing)
    report(kwargs, name, scores, missing)
    return scores


def think_answer_format(prompts: Any, completions: Any, gold: Any = None, **kwargs: Any) -> list[float]:
    """Reward `1.0` for `<think>...</think><answer>...</answer>` and nothing else around it, `0.0` otherwise."""
    return _batch("think_answer_format", score_think_answer, completions, kwargs)


def answer_cue(prompts: Any, completions: Any, gold: Any = None, **kwargs: Any) -> list[float]:
    """Reward `1.0` when the completion contains an explicit answer cue, `0.0` otherwise."""
    return _batch("answer_cue", score_answer_cue, completions, kwargs)


class LengthPenalty:
    """Penalty for long completions: `0.0` up to `budget` tokens, falling linearly to `-1.0` at `limit`.

    Lengths come from TRL's `completion_ids` when passed, else from whitespace-separated words.

    Args:
        budget (`int`, *optional*, defaults to `512`):
            Length with no penalty.
        limit (`int`, *optional*, defaults to `1024`):
            Length (and beyond) with the full penalty of `-1.0`.
    """

    __name__ = "length_penalty"

    def __init__(self, budget: int = 512, limit: int = 1024) -> None:
        if limit <= budget:
            raise ValueError(f"length_penalty: limit ({limit}) must exceed budget ({budget})")
        self.budget, self.limit = budget, limit

    def penalty(self, length: int) -> float:
        share = min(1.0, max(0.0, (length - self.budget) / (self.limit - self.budget)))
        return -share if share else 0.0

    def __call__(self, prompts: Any, completions: Any, gold: Any = None, **kwargs: Any) -> list[float]:
        n = batch_size(completions)
        ids = kwargs.get("completion_ids")
        if isinstance(ids, (list, tuple)) and len(ids) == n:
            lengths = [len(x) if hasattr(x, "__len__") else 0 for x in ids]
        else:
            texts = completions if isinstance(completions, (list, tuple)) else [completions]
            lengths = [len(completion_text(c).split()) for c in texts]
        return [self.penalty(length) for length in lengths]


length_penalty = LengthPenalty()
