"""Filters from raw candidates to pool templates, each step counted.

Order matters and is fixed: cheap validity checks first (placeholders, answer cue, length), then exact
and near-duplicate removal among the survivors (so an invalid template never shadows a valid near-copy),
then the optional accuracy screen, the only step that costs model time. Human-written seed templates are
the reference for duplicates: a generated copy of a seed is dropped, which also keeps a seed that goes to
held-out from leaking into training through its paraphrase-by-copy.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from prompt_pool.pool import PromptPool, Template

from .config import FilterConfig, TaskSpec

_NON_WORD = re.compile(r"[^\w{}]+")


@dataclass
class FilterStep:
    """Counts of one filter step; ``examples`` holds a few ``(template id, reason)`` pairs for the report."""

    name: str
    before: int
    dropped: int
    examples: list[tuple[str, str]] = field(default_factory=list)

    @property
    def after(self) -> int:
        return self.before - self.dropped

    def to_dict(self) -> dict:
        return {"step": self.name, "in": self.before, "dropped": self.dropped, "out": self.after,
                "examples": [{"id": i, "reason": r} for i, r in self.examples]}


# ---------------------------------------------------------------------------- per-template checks
def placeholder_problem(text: str, task: TaskSpec) -> str | None:
    """Why ``text`` is not a valid template for ``task`` (required fields, unknown fields, options), or None."""
    problems = PromptPool([Template("candidate", text)]).problems(task)
    return problems[0].replace("template 'candidate' ", "") if problems else None


def answer_cue_problem(text: str, cue: str) -> str | None:
    """None when the text contains the answer cue (case-insensitive) or the task has none."""
    if not cue or cue.lower() in text.lower():
        return None
    return f"lacks the answer cue {cue!r}"


def length_problem(text: str, min_chars: int, max_chars: int) -> str | None:
    """Bounds on the template's own words: its length without placeholders must reach ``min_chars``."""
    own = len(" ".join(re.sub(r"\{[A-Za-z_][A-Za-z0-9_]*\}", " ", text).split()))
    if own < min_chars:
        return f"only {own} characters besides placeholders (min {min_chars})"
    if len(text) > max_chars:
        return f"{len(text)} characters (max {max_chars})"
    return None


# ---------------------------------------------------------------------------- similarity
def normalised(text: str) -> str:
    """Lower case, punctuation and whitespace runs collapsed: what counts as the same text."""
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def ngrams(text: str, n: int) -> frozenset[tuple[str, ...]]:
    """Word n-grams of the normalised text (a text shorter than n words is one gram)."""
    words = normalised(text).split()
    if len(words) < n:
        return frozenset([tuple(words)]) if words else frozenset()
    return frozenset(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def exact_duplicates(texts: Sequence[str], reference: Sequence[str] = (),
                     labels: Sequence[str] | None = None) -> dict[int, str]:
    """Index -> reason for each text whose normalised form equals an earlier text's or a reference's.

    ``labels`` name the texts in the reasons (default ``candidate <index>``); references are ``seed <index>``.
    """
    labels = labels or [f"candidate {i}" for i in range(len(texts))]
    seen = {normalised(t): f"seed {i}" for i, t in enumerate(reference)}
    dropped = {}
    for i, text in enumerate(texts):
        key = normalised(text)
        if key in seen:
            dropped[i] = f"same text as {seen[key]}"
        else:
            seen[key] = labels[i]
    return dropped


def near_duplicates(texts: Sequence[str], n: int, threshold: float, reference: Sequence[str] = (),
                    labels: Sequence[str] | None = None) -> dict[int, str]:
    """Index -> reason for each text whose n-gram Jaccard with a kept earlier text (or reference) is above
    ``threshold``."""
    labels = labels or [f"candidate {i}" for i in range(len(texts))]
    kept: list[tuple[str, frozenset]] = [(f"seed {i}", ngrams(t, n)) for i, t in enumerate(reference)]
    dropped = {}
    for i, text in enumerate(texts):
        grams = ngrams(text, n)
        match = next(((label, s) for label, other in kept if (s := jaccard(grams, other)) > threshold), None)
        if match is not None:
            dropped[i] = f"similarity {match[1]:.2f} with {match[0]}"
        else:
            kept.append((labels[i], grams))
    return dropped


# ---------------------------------------------------------------------------- the chain
def apply_filters(candidates: list[Template], task: TaskSpec, settings: FilterConfig,
                  seeds: Sequence[str] = ()) -> tuple[list[Template], list[FilterStep]]:
    """Run the filters in order; return the surviving templates and one `FilterStep` per filter."""
    per_item: list[tuple[str, Callable[[str], str | None]]] = [
        ("placeholders", lambda t: placeholder_problem(t, task)),
        ("answer_cue", lambda t: answer_cue_problem(t, task.answer_cue if settings.require_answer_cue else "")),
        ("length", lambda t: length_problem(t, settings.min_chars, settings.max_chars)),
    ]
    steps = []
    for name, check in per_item:
        reasons = {i: r for i, t in enumerate(candidates) if (r := check(t.text)) is not None}
        candidates, step = _drop(name, candidates, reasons)
        steps.append(step)
    texts, ids = [t.text for t in candidates], [t.id for t in candidates]
    candidates, step = _drop("exact_duplicates", candidates, exact_duplicates(texts, seeds, ids))
    steps.append(step)
    texts, ids = [t.text for t in candidates], [t.id for t in candidates]
    reasons = near_duplicates(texts, settings.ngram, settings.near_duplicate_threshold, seeds, ids)
    candidates, step = _drop("near_duplicates", candidates, reasons)
    steps.append(step)
    return candidates, steps


def _drop(name: str, templates: list[Template], reasons: dict[int, str]) -> tuple[list[Template], FilterStep]:
    kept = [t for i, t in enumerate(templates) if i not in reasons]
    examples = [(templates[i].id, reason) for i, reason in list(reasons.items())[:5]]
    return kept, FilterStep(name, len(templates), len(reasons), examples)
