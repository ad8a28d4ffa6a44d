"""The meta-prompts of dual prompting, and the requests a run sends.

PAFT asks every generator in two modes: *few-shot*, shown human-written example templates, and
*zero-shot*, given only the task description. Both meta-prompts are data files in ``metaprompts/``; this
module fills them in, picks which seed templates each few-shot request shows, and gives every request a
content hash that keys the response cache.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from string import Template as TextTemplate

from prompt_pool.errors import UserError
from prompt_pool.sampling import unit_hash

from .config import GenerateConfig, GeneratorConfig, TaskSpec

METAPROMPT_DIR = Path(__file__).parent / "metaprompts"


@dataclass(frozen=True)
class Request:
    """One chat request to one generator.

    Args:
        generator (`str`): generator name.
        mode (`str`): ``few_shot`` or ``zero_shot``.
        sample (`int`): index of this request among the generator's requests in this mode.
        messages (`tuple[dict, ...]`): chat messages (``role``, ``content``).
        temperature (`float`) / top_p (`float`) / max_tokens (`int`): sampling settings.
        key (`str`): hash of everything above plus the generator's identity; the cache key.
    """

    generator: str
    mode: str
    sample: int
    messages: tuple[dict, ...]
    temperature: float
    top_p: float
    max_tokens: int
    key: str


def load_metaprompt(name: str, overrides: dict[str, str] | None = None) -> str:
    """The text of a meta-prompt (``system``, ``few_shot`` or ``zero_shot``): the user's file or the shipped one."""
    path = Path(overrides[name]) if overrides and name in overrides else METAPROMPT_DIR / f"{name}.txt"
    return path.read_text(encoding="utf-8").strip()


def placeholder_rules(task: TaskSpec) -> str:
    """One line per placeholder: which must appear, which may, and how options may be shown."""
    in_option_sets = {name for option_set in task.option_sets for name in option_set}
    lines = [f"- {{{name}}}: must appear" for name in task.required_fields]
    if task.option_sets:
        ways = " or ".join(" ".join("{" + f + "}" for f in option_set) for option_set in task.option_sets)
        lines.append(f"- the answer options: show them with {ways} (one of these ways, with all of its placeholders)")
    if task.cloze:
        lines.append("- never show the answer options: end the template where the answer's text naturally continues")
    optional = [f for f in task.fields if f not in task.required_fields and f not in in_option_sets]
    lines += [f"- {{{name}}}: may appear" for name in optional]
    return "\n".join(lines)


def cue_rule(task: TaskSpec) -> str:
    if not task.answer_cue:
        return ""
    return f'- Each template must contain the exact text "{task.answer_cue}" where the answer should follow.\n'


def few_shot_examples(config: GenerateConfig, generator: str, sample: int) -> list[str]:
    """The seed templates shown in one few-shot request: a seeded choice, different for each request."""
    ranked = sorted(range(len(config.seed_templates)),
                    key=lambda i: unit_hash("few-shot", config.seed, generator, sample, i))
    return [config.seed_templates[i] for i in ranked[: config.few_shot_examples]]


def build_messages(config: GenerateConfig, mode: str, generator: str, sample: int) -> list[dict]:
    """System and user messages of one request."""
    task = config.task
    values = {
        "description": task.description,
        "placeholder_rules": placeholder_rules(task),
        "cue_rule": cue_rule(task),
        "count": str(config.templates_per_request),
        "first_field": (task.required_fields or task.fields)[0],
        "examples": "",
    }
    if mode == "few_shot":
        shown = few_shot_examples(config, generator, sample)
        values["examples"] = "\n".join(f"<template>\n{text}\n</template>" for text in shown)
    try:
        user = TextTemplate(load_metaprompt(mode, config.metaprompts)).substitute(values)
    except (KeyError, ValueError) as error:
        raise UserError(f"meta-prompt {mode}: unknown or malformed $-variable ({error}); "
                        f"use {', '.join('$' + k for k in values)} and write $$ for a dollar sign") from None
    system = load_metaprompt("system", config.metaprompts)
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]


def request_key(generator: GeneratorConfig, mode: str, sample: int, messages: list[dict], temperature: float,
                top_p: float) -> str:
    """Content hash of a request: the same config asks the same question and finds it in the cache."""
    payload = {"generator": generator.identity(), "mode": mode, "sample": sample, "messages": messages,
               "temperature": temperature, "top_p": top_p}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def build_requests(config: GenerateConfig) -> list[Request]:
    """Every request of the run, in a fixed order: generator, mode, sample."""
    requests = []
    for generator in config.generators:
        temperature = config.temperature_of(generator)
        for mode in config.modes:
            for sample in range(config.requests_per_mode):
                messages = build_messages(config, mode, generator.name, sample)
                key = request_key(generator, mode, sample, messages, temperature, config.top_p)
                requests.append(Request(generator.name, mode, sample, tuple(messages), temperature, config.top_p,
                                        generator.max_tokens, key))
    return requests
