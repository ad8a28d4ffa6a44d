"""Task adapters: a dataset row becomes template fields, a gold answer and a reference completion.

A task is data plus two small functions, in the spirit of lm-evaluation-harness: which columns it reads,
which template fields it offers and requires, and which reward scores it. The same reward scores GRPO
rollouts and held-out evaluation answers, so training and evaluation cannot drift apart.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prompt_pool import UserError

LETTERS = string.ascii_uppercase


@dataclass
class Example:
    """One dataset row seen through a task.

    Args:
        fields (`dict[str, str]`): values for the template placeholders.
        gold (`str`): what the reward compares against (a number, a letter, a JSON list of tool calls...).
        target (`str`): a reference completion for supervised fine-tuning.
        options (`list[str]`, *optional*): option texts in letter order, for multiple choice.
    """

    fields: dict[str, str]
    gold: str
    target: str
    options: list[str] | None = None


@dataclass(frozen=True)
class Task:
    """A task adapter.

    Args:
        name (`str`): registry name (``gsm8k``, ``hellaswag``, ...).
        description (`str`): one sentence on what the model must do; also given to pool generators.
        fields (`tuple[str, ...]`): template fields the task offers.
        required_fields (`tuple[str, ...]`): fields every template must use.
        option_sets (`tuple[tuple[str, ...], ...]`): for multiple choice, the ways a template may show the
            options (all of ``A B C D``, or ``options``); a template must use one whole set.
        columns (`tuple[str, ...]`): dataset columns the adapter reads.
        to_example (`Callable[[Mapping], Example]`): the row mapping.
        reward (`str`): name in `rewards.REWARDS` that scores a completion against ``gold``.
        answer_cue (`str`): the cue a template ends with or asks for (checked when generating pools).
        hub_id (`str`, *optional*): default dataset on the Hugging Face hub.
        hub_config (`str`, *optional*): its configuration name.
        train_split / eval_split (`str`): default splits.
        max_new_tokens (`int`): generation budget for evaluation.
        top_threshold (`float`): accuracy a template must reach to count in the Top share (PAFT's thresholds).
        generate (`Callable[..., list[dict]]`, *optional*): for synthetic tasks, rows from ``(n, seed, split,
            start=0)`` instead of a hub dataset: rows ``start`` to ``start + n - 1``, each a pure function of
            ``(seed, split, index)``.
        mc_answer_style (`str`): for multiple choice, whether the reference completion is the ``letter`` or
            the option ``text`` (small models learn the text far faster; the reward accepts both).
        pool (`str`, *optional*): built-in pool name when it differs from the task name.
        read_file (`Callable[[Path], datasets.Dataset]`, *optional*): reads a local data file of a format of the
            task's own; other tasks' files go through `datasets` by their suffix.
        cloze (`bool`, defaults to `False`): multiple choice scored "cloze style", as lm-evaluation-harness scores
            PIQA, HellaSwag and ARC: a template shows only the context (never the options), each option's text is
            the continuation, and the answer is that text (``mc_answer_style`` is ``text``; the reference
            completion starts with the space that separates it from a prompt ending in a cue like ``Answer:``).
    """

    name: str
    description: str
    fields: tuple[str, ...]
    required_fields: tuple[str, ...]
    columns: tuple[str, ...]
    to_example: Callable[[Mapping[str, Any]], Example]
    reward: str
    answer_cue: str = "Answer:"
    option_sets: tuple[tuple[str, ...], ...] = ()
    hub_id: str | None = None
    hub_config: str | None = None
    train_split: str = "train"
    eval_split: str = "test"
    max_new_tokens: int = 32
    top_threshold: float = 0.8
    generate: Callable[..., list[dict]] | None = None
    mc_answer_style: str = "letter"
    synthetic_size: int = field(default=1000)
    pool: str | None = None
    read_file: Callable[[Path], Any] | None = None
    cloze: bool = False

    @property
    def builtin_pool(self) -> str:
        """Name of the built-in pool for this task (tasks that share a format share a pool)."""
        return self.pool or self.name

    @property
    def is_multiple_choice(self) -> bool:
        return bool(self.option_sets) or self.cloze

    @property
    def default_scoring(self) -> str:
        """How evaluation scores answers unless told: ``loglik`` (each option as the continuation) for a cloze
        task, whose prompts never show the options to pick from; ``generate`` otherwise."""
        return "loglik" if self.cloze else "generate"

    @property
    def answers_with_text(self) -> bool:
        """Multiple choice answered with the option's text (a right answer copies an option, however long)."""
        return self.is_multiple_choice and self.mc_answer_style == "text"

    def example(self, row: Mapping[str, Any]) -> Example:
        """Map one dataset row to an `Example`, with a clear error when the row does not fit."""
        try:
            example = self.to_example(row)
        except (KeyError, IndexError, TypeError, ValueError) as error:
            raise UserError(f"task {self.name!r} cannot read this row ({type(error).__name__}: {error}); "
                            f"it needs columns {', '.join(self.columns)}") from None
        if example.options is not None and self.mc_answer_style == "text":
            example.target = example.options[LETTERS.index(example.gold)]
            if self.cloze:  # the continuation loglik scores after a prompt ending in a cue ("Answer: <option>")
                example.target = " " + example.target
        if self.cloze:  # only the context: the options are the continuations, never shown
            example.fields = {name: example.fields[name] for name in self.fields}
        return example

    def with_answer_style(self, style: str | None) -> Task:
        """The task with multiple-choice completions as option ``letter`` or ``text``; unchanged for ``None``
        (the task's own style) and for tasks that are not multiple choice."""
        if style is None or not self.is_multiple_choice:
            return self
        if style not in ("letter", "text"):
            raise UserError(f"answer style must be 'letter' or 'text', got {style!r}")
        if self.cloze and style != "text":
            raise UserError(f"mc_answer_style {style!r} does not fit cloze task {self.name!r}: its prompts show no "
                            "lettered options and the answer is the option's text; use mc_answer_style text")
        return replace(self, mc_answer_style=style)


# A text answer is the option, maybe after a letter or a lead-in ("B. "), then the end-of-text token.
TEXT_ANSWER_MARGIN = 4


def longest_option_tokens(option_lists: Iterable[Sequence[str] | None], tokenizer) -> tuple[int, str]:
    """The longest option in tokens, and its text: what a multiple-choice answer in ``text`` style copies, so
    the least generation budget that lets every right answer be written whole."""
    texts = sorted({str(option) for options in option_lists for option in options or ()})
    if not texts:
        return 0, ""
    lengths = []
    for start in range(0, len(texts), 512):  # short calls: Ctrl-C is only seen between them
        lengths += [len(ids) for ids in tokenizer(texts[start : start + 512], add_special_tokens=False)["input_ids"]]
    longest = max(range(len(texts)), key=lengths.__getitem__)
    return lengths[longest], texts[longest]


def text_answer_tokens(task: Task, option_lists: Iterable[Sequence[str] | None], tokenizer) -> tuple[int, str] | None:
    """For a multiple-choice task answered with the option's ``text``, the longest option in tokens and its text:
    the least generation budget a right answer needs. ``None`` for other tasks and for letter answers."""
    return longest_option_tokens(option_lists, tokenizer) if task.answers_with_text else None


def lettered_fields(options: Sequence[str], letters: int | None = None) -> dict[str, str]:
    """Offer options both lettered (``A``, ``B``, ...) and as one ``options`` block ("A. x\\nB. y").

    ``letters`` pads missing letters with empty strings, so a template may name ``{E}`` for rows with
    fewer options (ARC has 3 to 5).
    """
    options = [str(option).strip() for option in options]
    fields = {LETTERS[i]: text for i, text in enumerate(options)}
    for i in range(len(options), letters or 0):
        fields[LETTERS[i]] = ""
    fields["options"] = "\n".join(f"{LETTERS[i]}. {text}" for i, text in enumerate(options))
    return fields


def choice_example(fields: dict[str, str], options: Sequence[str], answer_index: int,
                   letters: int | None = None) -> Example:
    """An `Example` for a multiple-choice row whose answer is option ``answer_index``."""
    options = [str(option).strip() for option in options]
    if not 0 <= answer_index < len(options):
        raise ValueError(f"answer index {answer_index} outside {len(options)} options")
    letter = LETTERS[answer_index]
    return Example(fields={**fields, **lettered_fields(options, letters)}, gold=letter, target=letter, options=options)
