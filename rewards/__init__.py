"""Rule-based reward functions for GRPO training and for evaluation (the same function scores both).

Every reward has TRL's signature `fn(prompts, completions, gold, **kwargs) -> list[float | None]`, takes plain
or conversational completions, never raises on bad input, and has a stable `__name__` (TRL logs
`rewards/<name>/mean`). `None` means "does not apply to this row" (e.g. a gold that cannot be read). Each
registered reward also has `extract(completion, **row) -> answer | None`: the answer it reads in one completion
(a letter, a number, tool calls), `None` for a completion it scores as unparsed (`get_extractor`).

```python
>>> from rewards import get_reward, resolve_rewards
>>> funcs, weights = resolve_rewards(["math_accuracy", "think_answer_format"], [1.0, 0.2])
```
"""

from collections.abc import Callable, Sequence
from typing import Any

from . import format, math, metrics, qa, tools
from ._common import completion_text
from .format import answer_cue, length_penalty, template_format, think_answer_format
from .math import MathAccuracy, extract_answer, get_math_accuracy_reward, math_accuracy, score_math
from .metrics import parse_failures, reset_parse_failures
from .qa import extract_choice, mc_accuracy, qa_exact_match, qa_f1, score_choice
from .tools import parse_tool_calls, tool_call_accuracy, tool_call_arguments, tool_call_format, tool_call_name

REWARDS: dict[str, Callable] = {
    fn.__name__: fn
    for fn in (
        math_accuracy,
        mc_accuracy,
        qa_exact_match,
        qa_f1,
        tool_call_accuracy,
        tool_call_format,
        tool_call_name,
        tool_call_arguments,
        think_answer_format,
        answer_cue,
        template_format,
        length_penalty,
    )
}


def get_reward(name: str) -> Callable:
    """The reward registered as `name`, or the function a dotted path names (`my_rewards.brevity`, as TRL's
    `trl grpo --reward_funcs` accepts); `ValueError` listing the known names otherwise."""
    if isinstance(name, str) and name in REWARDS:
        return REWARDS[name]
    if isinstance(name, str) and "." in name.strip("."):
        return _import_reward(name)
    raise ValueError(f"unknown reward {name!r}; known: {', '.join(sorted(REWARDS))}, or a dotted path "
                     "module.function to your own")


def read_whole_completion(completion: Any, **row: Any) -> str:
    """The extractor of a reward that defines none: the completion's text is its answer, never unparsed."""
    return completion_text(completion).strip()


def get_extractor(reward: Callable) -> Callable[..., Any]:
    """``reward.extract``: ``(completion, **row) -> answer | None``, `None` where the reward reads no answer.

    A reward of the user's own (a dotted path) need not define one: its answer is then the whole completion.
    """
    return getattr(reward, "extract", read_whole_completion)


def _import_reward(path: str) -> Callable:
    import importlib

    module_name, _, attribute = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"reward {path!r}: cannot import module {module_name!r} ({error})") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ValueError(f"reward {path!r}: module {module_name!r} has no function {attribute!r}")
    return function


def resolve_rewards(
    names: Sequence[str], weights: Sequence[float] | None = None
) -> tuple[list[Callable], list[float]]:
    """Turn a recipe's reward names and optional weights into functions and weights for `GRPOConfig`.

    Args:
        names (`list[str]`):
            Registered reward names or dotted paths to reward functions, at least one.
        weights (`list[float]`, *optional*):
            One weight per name; defaults to `1.0` each.

    Returns:
        `tuple[list[Callable], list[float]]`: the functions and their weights (`reward_weights`).
    """
    if isinstance(names, str) or not names:
        raise ValueError("resolve_rewards: give a non-empty list of reward names")
    funcs = [get_reward(n) for n in names]
    if weights is None:
        return funcs, [1.0] * len(funcs)
    if isinstance(weights, (str, bytes)) or len(weights) != len(funcs):
        raise ValueError(f"resolve_rewards: {len(funcs)} rewards but {len(weights)} weights")
    try:
        weights = [float(w) for w in weights]
    except (TypeError, ValueError):
        raise ValueError(f"resolve_rewards: weights must be numbers, got {list(weights)!r}") from None
    return funcs, weights


__all__ = [
    "REWARDS",
    "get_reward",
    "get_extractor",
    "resolve_rewards",
    "parse_failures",
    "reset_parse_failures",
    "MathAccuracy",
    "get_math_accuracy_reward",
    "extract_answer",
    "score_math",
    "extract_choice",
    "score_choice",
    "parse_tool_calls",
    "format",
    "math",
    "metrics",
    "qa",
    "tools",
    *REWARDS,
]
