"""Format rewards: they look at the shape of a completion, not at whether its answer is right.

`think_answer_format` checks the `<think>...</think><answer>...</answer>` layout used by R1-style recipes;
`answer_cue` checks that the completion states an answer in a form the accuracy rewards can read;
`template_format` checks that the completion follows the answer format its own template asked for;
`length_penalty` (optional) pushes completions below a length budget. None of them needs the gold.
"""

import functools
import re
from collections.abc import Callable
from typing import Any

from ._common import batch_size, column, completion_text, report, safe_item, with_extract
from .metrics import count_failure
from .qa import _letters, _options_column, normalize_answer

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


def _think_answer(completion: Any, **row: Any) -> str | None:
    """The ``<answer>`` block of a completion laid out as `think_answer_format` asks, else `None`."""
    text = completion_text(completion)
    return _THINK_ANSWER.fullmatch(text)["answer"].strip() if score_think_answer(text) else None


def _with_cue(completion: Any, **row: Any) -> str | None:
    """The completion when it states its answer with a cue `answer_cue` reads, else `None`."""
    return completion_text(completion) if score_answer_cue(completion) else None


with_extract(think_answer_format, _think_answer)
with_extract(answer_cue, _with_cue)


# ---------------------------------------------------------------------------- the format a template asked for
_BOXED = re.compile(r"\\boxed\s*\{\s*[^\s}]")
_ANSWER_IS = re.compile(r"\bthe\s+(?:final\s+)?answer\s+is\s*:?\s*[^\s.]", re.IGNORECASE)
_HASHES = re.compile(r"####\s*[^\s#]")
_LABEL = re.compile(r"^(?:the\s+)?(?:final\s+)?(?:answer|result|total)(?:\s+is)?\s*[:=\-]?\s*", re.IGNORECASE)
_CUE = re.compile(r"\b(?:answer|option|choice|letter)(?:\s+(?:is|would\s+be|should\s+be))?\s*[:=\-]?\s*",
                  re.IGNORECASE)
_LETTER = re.compile(r"[(\[]?([A-Za-z])[)\]]?(?:[.:)]\s+\S.*|[.:)!]*)", re.DOTALL)
_LETTER_LABEL = re.compile(r"^[(\[]?[A-Za-z][)\].:]\s+")
_DECORATION = " \t*_`'\"“”"
LAST_LINE_WORDS, LAST_LINE_CHARS = 4, 40


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _answer_spans(text: str) -> list[str]:
    """Where a stated answer sits: the first and last non-empty lines, each also after its last answer cue."""
    lines = _lines(text)
    spans = []
    for line in dict.fromkeys(lines[:1] + lines[-1:]):
        spans.append(line.strip(_DECORATION))
        cues = list(_CUE.finditer(line))
        if cues:
            spans.append(line[cues[-1].end():].strip(_DECORATION))
    return spans


def _has_tagged_answer(text: str) -> bool:
    """A non-empty ``<answer>...</answer>`` span (found with `str.find`: linear even on unclosed tags)."""
    lowered, start = text.lower(), 0
    while (opening := lowered.find("<answer>", start)) >= 0:
        closing = lowered.find("</answer>", opening + 8)
        if closing < 0:
            return False
        if lowered[opening + 8:closing].strip():
            return True
        start = closing + 9
    return False


def _on_last_line(text: str) -> bool:
    """The last non-empty line holds just an answer: at most 4 words and 40 characters after a label such as
    ``Final answer:``."""
    lines = _lines(text)
    if not lines:
        return False
    answer = _LABEL.sub("", lines[-1].strip(_DECORATION)).strip(_DECORATION + ".")
    return bool(answer) and len(answer) <= LAST_LINE_CHARS and len(answer.split()) <= LAST_LINE_WORDS


def _answers_with_letter(text: str, options: Any) -> bool:
    """The first or last line answers with one option letter: ``B``, ``(B)``, ``Answer: B``, ``B. its text``."""
    allowed = _letters(options)
    for span in _answer_spans(text):
        match = _LETTER.fullmatch(span)
        if match and match.group(1).upper() in allowed:
            return True
    return False


def _answers_with_text(text: str, options: Any) -> bool | None:
    """The first or last line answers with one option's text (SQuAD-normalised); `None` without options."""
    if not isinstance(options, (list, tuple)):
        return None
    texts = {normalize_answer(o) for o in options} - {""}
    if not texts:
        return None
    return any(normalize_answer(_LETTER_LABEL.sub("", span)) in texts for span in _answer_spans(text))


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


FORMAT_CHECKS: dict[str, Callable[[str, Any], bool | None]] = {
    "boxed": lambda text, options: bool(_BOXED.search(text)),
    "answer_is": lambda text, options: bool(_ANSWER_IS.search(text)),
    "answer_tags": lambda text, options: _has_tagged_answer(text),
    "hashes": lambda text, options: bool(_HASHES.search(text)),
    "last_line": lambda text, options: _on_last_line(text),
    "option_letter": _answers_with_letter,
    "option_text": _answers_with_text,
}
REGEX_FORMAT = "regex:"


def score_template_format(completion: Any, answer_format: Any, options: Any = None) -> float | None:
    """`1.0` when ``completion`` follows ``answer_format`` (a name of `FORMAT_CHECKS` or ``regex:<pattern>``,
    searched anywhere in the text), `0.0` when not; `None` when no format is declared, the format is unknown or
    the pattern does not compile, or ``option_text`` has no options to compare with."""
    if not isinstance(answer_format, str):
        return None
    text = completion_text(completion)
    if answer_format.startswith(REGEX_FORMAT):
        pattern = _compiled(answer_format[len(REGEX_FORMAT):])
        return None if pattern is None else float(bool(pattern.search(text)))
    check = FORMAT_CHECKS.get(answer_format)
    if check is None:
        return None
    followed = check(text, options)
    return None if followed is None else float(followed)


def template_format(prompts: Any, completions: Any, gold: Any = None, answer_format: Any = None,
                    options: Any = None, **kwargs: Any) -> list[float | None]:
    """Reward `1.0` when a completion follows the answer format its own template declared, `0.0` when not.

    The declared format comes from the ``answer_format`` column, which the PAFT GRPO trainer fills per
    completion from the template that prompted it (`prompt_pool.Template.answer_format`); `None` (not
    applicable) for a template that declares none. See `score_template_format` for the formats.

    Args:
        answer_format (`list[str | None]`): the declared format of each completion's template.
        options (`list[list[str]]`, *optional*): option texts per row (for ``option_text`` and ``option_letter``).
    """
    n = batch_size(completions)
    completions = completions if isinstance(completions, (list, tuple)) else [completions] * n
    formats, opts = column(answer_format, n), _options_column(options, n)
    scores = [safe_item("template_format", score_template_format, c, f, o)
              for c, f, o in zip(completions, formats, opts)]
    missed = sum(1 for s in scores if s == 0.0)
    count_failure("template_format", missed)
    report(kwargs, "template_format", scores, missed)
    return scores


def _followed_format(completion: Any, answer_format: Any = None, options: Any = None, **row: Any) -> str | None:
    """The completion, `None` when it misses the format its template asked for (what `template_format` counts)."""
    return None if score_template_format(completion, answer_format, options) == 0.0 else completion_text(completion)


with_extract(template_format, _followed_format)


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

    def extract(self, completion: Any, **row: Any) -> str:
        """No answer to read: the completion itself (a length always counts)."""
        return completion_text(completion)


length_penalty = LengthPenalty()
