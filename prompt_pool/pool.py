"""A pool of instruction templates: load, validate, split, draw, save.

Pools are data (JSONL, YAML, CSV or XLSX with a ``text`` column) with an explicit train / held-out split,
so that unseen evaluation templates cannot leak into training: ``draw`` only ever returns train templates.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from .errors import PoolValidationError, UserError
from .sampling import draw_index, unit_hash
from .template import normalise_whitespace, placeholders, render

SPLITS = ("train", "heldout")
# The answer formats a template may ask for (``Template.answer_format``), besides ``regex:<pattern>``; the
# ``template_format`` reward (rewards/format.py) checks each of them.
ANSWER_FORMATS = ("boxed", "answer_is", "answer_tags", "hashes", "last_line", "option_letter", "option_text")
REGEX_FORMAT = "regex:"


@dataclass(frozen=True)
class Template:
    """One instruction template.

    Args:
        id (`str`): unique within its pool.
        text (`str`): template text with ``{field}`` placeholders.
        split (`str`, defaults to `"train"`): ``"train"`` or ``"heldout"``.
        source (`Any`, *optional*): provenance (a file, a generator model and mode, a person).
        answer_format (`str`, *optional*): the answer format the text asks for: one of `ANSWER_FORMATS`
            (``boxed``, ``answer_is`` "The answer is N", ``answer_tags`` <answer>..</answer>, ``hashes`` "#### N",
            ``last_line``, ``option_letter``, ``option_text``) or ``regex:<pattern>``. Only the ``template_format``
            reward reads it; the accuracy rewards never see the template.
    """

    id: str
    text: str
    split: str = "train"
    source: Any = None
    answer_format: str | None = None

    @property
    def fields(self) -> list[str]:
        return placeholders(self.text)

    def render(self, fields: Mapping[str, object]) -> str:
        return render(self.text, fields, template_id=self.id)

    def to_dict(self) -> dict:
        record = asdict(self)
        for optional in ("source", "answer_format"):
            if record[optional] is None:
                del record[optional]
        return record


class FieldSpec(Protocol):
    """What validation needs from a task: its name, the fields it offers and which it requires, how a template
    shows the options, and whether the task is cloze (a template shows no options at all)."""

    name: str
    fields: Sequence[str]
    required_fields: Sequence[str]
    option_sets: Sequence[Sequence[str]]
    cloze: bool


@dataclass
class PromptPool:
    """An ordered collection of templates with a train / held-out split.

    Args:
        templates (`list[Template]`): the templates, in file order.
        name (`str`, *optional*): where the pool came from, used in messages.
        aliases (`dict[str, str]`, *optional*): pool placeholder name -> task field name
            (``field_aliases``), so a pool written for other names can be used as it is.
    """

    templates: list[Template]
    name: str = "pool"
    aliases: dict[str, str] = field(default_factory=dict)

    # ---------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.templates)

    def __iter__(self):
        return iter(self.templates)

    @property
    def train(self) -> list[Template]:
        return [t for t in self.templates if t.split == "train"]

    @property
    def heldout(self) -> list[Template]:
        return [t for t in self.templates if t.split == "heldout"]

    def get(self, template_id: str) -> Template:
        for template in self.templates:
            if template.id == template_id:
                return template
        raise UserError(f"{self.name}: no template with id {template_id!r}")

    def with_aliases(self, aliases: Mapping[str, str]) -> PromptPool:
        return replace(self, aliases={**self.aliases, **dict(aliases)})

    def subset(self, split: str) -> PromptPool:
        """A pool of only the ``split`` templates (``"train"``, ``"heldout"`` or ``"all"``)."""
        if split == "all":
            return replace(self, templates=list(self.templates))
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}: use train, heldout or all")
        return replace(self, templates=[t for t in self.templates if t.split == split])

    # ---------------------------------------------------------------- rendering
    def render(self, template: Template | str, fields: Mapping[str, object]) -> str:
        """Render a template (or template id) with an example's fields, applying the pool's aliases."""
        if isinstance(template, str):
            template = self.get(template)
        if self.aliases:
            fields = {**fields, **{alias: fields[target] for alias, target in self.aliases.items() if target in fields}}
        return template.render(fields)

    # ---------------------------------------------------------------- drawing
    def draw(self, seed: int, row_id: object, position: int,
             weights: Sequence[float] | Mapping[str, float] | None = None) -> Template:
        """Draw a train template as a pure function of ``(seed, row_id, position)``.

        Args:
            seed (`int`): the run's seed.
            row_id (`object`): a stable id of the example.
            position (`int`): the training position (step, epoch or block of K steps).
            weights (`Sequence[float]` or `Mapping[str, float]`, *optional*): per-train-template weights,
                aligned with ``self.train`` or keyed by template id (missing ids weigh 0). Uniform when omitted.
        """
        candidates = self.train
        if not candidates:
            raise UserError(f"{self.name}: no train template to draw from")
        if isinstance(weights, Mapping):
            weights = [float(weights.get(t.id, 0.0)) for t in candidates]
        return candidates[draw_index(seed, row_id, position, len(candidates), weights)]

    def drop_duplicates(self) -> tuple[PromptPool, list[str]]:
        """Remove templates whose text repeats an earlier one of the same split (up to whitespace).

        Published pools contain such repeats (PAFT's Winogrande pool has 24); they would double the
        weight of one wording in a uniform draw. Returns the new pool and the ids removed.
        """
        seen: set[tuple[str, str]] = set()
        kept, dropped = [], []
        for template in self.templates:
            key = (template.split, normalise_whitespace(template.text))
            if key in seen:
                dropped.append(template.id)
            else:
                seen.add(key)
                kept.append(template)
        return replace(self, templates=kept), dropped

    # ---------------------------------------------------------------- splitting
    def split(self, heldout_fraction: float, seed: int) -> PromptPool:
        """Reassign splits: a seeded, order-independent choice of ``heldout_fraction`` of the templates."""
        if not 0 < heldout_fraction < 1:
            raise UserError(f"--heldout-fraction must be between 0 and 1 (exclusive), got {heldout_fraction}")
        if len(self.templates) < 2:
            raise UserError(f"{self.name}: need at least 2 templates to split, found {len(self.templates)}")
        # Templates with the same text move together, so no text ends up in both splits.
        groups: dict[str, list[Template]] = {}
        for template in self.templates:
            groups.setdefault(normalise_whitespace(template.text), []).append(template)
        if len(groups) < 2:
            raise UserError(f"{self.name}: need at least 2 distinct template texts to split, found {len(groups)}")
        ranked = sorted(groups.values(), key=lambda group: min(unit_hash("split", seed, t.id) for t in group))
        n_heldout = min(max(1, round(heldout_fraction * len(ranked))), len(ranked) - 1)
        heldout_ids = {t.id for group in ranked[:n_heldout] for t in group}
        templates = [replace(t, split="heldout" if t.id in heldout_ids else "train") for t in self.templates]
        return replace(self, templates=templates)

    # ---------------------------------------------------------------- validation
    def problems(self, task: FieldSpec | None = None) -> list[str]:
        """Every problem of the pool (for ``task`` when given), each naming the template and the fix."""
        problems: list[str] = []
        problems += _structure_problems(self.templates)
        alias_problems = _alias_problems(self.aliases, task) if task is not None else []
        problems += alias_problems
        if task is not None and not alias_problems:  # a bad alias would be reported once per template otherwise
            for template in self.templates:
                if template.text.strip():  # an empty template is already reported as empty
                    problems += _field_problems(template, task, self.aliases)
        if not self.train:
            problems.append("the pool has no train template: mark at least one template with split 'train'")
        return problems

    def validate(self, task: FieldSpec | None = None) -> PromptPool:
        """Raise `PoolValidationError` listing every problem at once; return the pool when it is valid."""
        problems = self.problems(task)
        if problems:
            raise PoolValidationError(problems, source=self.name)
        return self

    # ---------------------------------------------------------------- stats
    def stats(self) -> dict:
        """Counts, text lengths and placeholder use."""
        lengths = [len(t.text) for t in self.templates]
        words = [len(t.text.split()) for t in self.templates]
        use = Counter(name for t in self.templates for name in t.fields)
        sources = Counter(_source_label(t.source) for t in self.templates)
        return {
            "name": self.name,
            "count": len(self.templates),
            "train": len(self.train),
            "heldout": len(self.heldout),
            "chars": _summary(lengths),
            "words": _summary(words),
            "placeholders": dict(sorted(use.items(), key=lambda item: (-item[1], item[0]))),
            "sources": dict(sources.most_common()),
        }


def _structure_problems(templates: Iterable[Template]) -> list[str]:
    problems = []
    templates = list(templates)
    id_counts = Counter(t.id for t in templates)
    for template_id, count in id_counts.items():
        if count > 1:
            problems.append(f"id {template_id!r} is used by {count} templates: give each template its own id")
    first_by_text: dict[str, Template] = {}
    for template in templates:
        if template.split not in SPLITS:
            problems.append(f"template {template.id!r} has split {template.split!r}: use 'train' or 'heldout'")
        problem = _answer_format_problem(template.answer_format)
        if problem:
            problems.append(f"template {template.id!r}: {problem}")
        if not template.text.strip():
            problems.append(f"template {template.id!r} is empty: give it text or remove it")
            continue
        key = normalise_whitespace(template.text)
        earlier = first_by_text.setdefault(key, template)
        if earlier is template:
            continue
        if earlier.split != template.split:
            problems.append(
                f"template {template.id!r} ({template.split}) has the same text as {earlier.id!r} ({earlier.split}): "
                "a held-out template must be unseen in training; remove one of them"
            )
        else:
            problems.append(f"template {template.id!r} duplicates {earlier.id!r} (same text up to whitespace): "
                            "remove one")
    return problems


def _answer_format_problem(answer_format: Any) -> str | None:
    """What is wrong with a declared answer format (`None` when it is valid or absent)."""
    if answer_format is None:
        return None
    if not isinstance(answer_format, str):
        return f"answer_format must be text, got {type(answer_format).__name__}"
    if answer_format.startswith(REGEX_FORMAT):
        pattern = answer_format[len(REGEX_FORMAT):]
        if not pattern:
            return "answer_format 'regex:' has no pattern: write regex:<pattern>"
        try:
            re.compile(pattern)
        except re.error as error:
            return f"answer_format {answer_format!r} is not a valid regular expression ({error})"
        return None
    if answer_format not in ANSWER_FORMATS:
        return (f"unknown answer_format {answer_format!r}: use one of {', '.join(ANSWER_FORMATS)}, or "
                "regex:<pattern>")
    return None


def _alias_problems(aliases: Mapping[str, str], task: FieldSpec) -> list[str]:
    """An alias must map a pool placeholder onto a field the task offers."""
    offered = ", ".join("{" + f + "}" for f in task.fields)
    return [f"field alias {name}={target}: task {task.name!r} has no field {{{target}}} (it offers {offered}); "
            f"map {name} onto one of those" for name, target in aliases.items() if target not in set(task.fields)]


def _field_problems(template: Template, task: FieldSpec, aliases: Mapping[str, str]) -> list[str]:
    used = set(template.fields)
    resolved = {aliases.get(name, name) for name in used}
    problems = []
    known = set(task.fields)
    for name in sorted(used):
        target = aliases.get(name, name)
        if target not in known and task.cloze:
            problems.append(
                f"template {template.id!r} uses field {{{name}}}, but task {task.name!r} is cloze: a template shows "
                f"only the context ({', '.join('{' + f + '}' for f in task.fields)}), never the options, and ends "
                "where the answer's text continues; remove it"
            )
        elif target not in known:
            problems.append(
                f"template {template.id!r} uses unknown field {{{name}}}: task {task.name!r} offers "
                f"{', '.join('{' + f + '}' for f in task.fields)}; rename it, map it with field_aliases {name}=FIELD, "
                f"or write {{{{{name}}}}} for literal braces"
            )
    for name in task.required_fields:
        if name not in resolved:
            problems.append(f"template {template.id!r} does not use required field {{{name}}}: add it")
    option_sets = [set(option_set) for option_set in task.option_sets]
    if option_sets and not any(option_set <= resolved for option_set in option_sets):
        choices = " or ".join(" ".join("{" + f + "}" for f in sorted(s)) for s in option_sets)
        problems.append(f"template {template.id!r} does not show the answer options: use {choices}")
    return problems


def _summary(values: list[int]) -> dict:
    if not values:
        return {"min": 0, "mean": 0.0, "max": 0}
    return {"min": min(values), "mean": round(statistics.fmean(values), 1), "max": max(values)}


def _source_label(source: Any) -> str:
    if source is None:
        return "unknown"
    if isinstance(source, Mapping):
        return str(source.get("generator") or source.get("file") or json.dumps(source, sort_keys=True))
    return str(source)
