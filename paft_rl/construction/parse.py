"""Turning a model's reply into candidate template texts.

The meta-prompts ask for each template between ``<template>`` tags, but models number their answers,
wrap them in code fences, answer with a JSON list, or add a friendly sentence before and after. The parser
takes tags when there are any, else a JSON list, else blocks split at numbering or blank lines that
contain at least one placeholder (stray prose has none). Whether a candidate is a *valid* template is the
filters' job, so nothing is silently dropped here that the report should count.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_OPEN_TAG = re.compile(r"<template>", re.I)
_CLOSE_TAG = re.compile(r"</template>", re.I)
_FENCE = re.compile(r"^\s*```[\w-]*\s*$", re.M)
_PLACEHOLDER = re.compile(r"(?<!\{)\{[A-Za-z_][A-Za-z0-9_]*\}(?!\})")
# "1.", "2)", "Template 3:", "**Template 4**", "### Prompt 5 -", "#6:" at the start of a line
_NUMBER_LABEL = re.compile(
    r"^\s*(?:#{1,6}\s*)?(?:\*\*)?\s*(?:(?:template|prompt|example)\s*#?\s*\d{1,3}|#?\d{1,3}[.)]|#\d{1,3})"
    r"\s*(?:\*\*)?\s*[:.)\-–]?\s*(?:\*\*)?\s*", re.I)


def parse_templates(reply: str, fields: Iterable[str] = ()) -> list[str]:
    """Candidate templates in ``reply``, in order.

    Args:
        reply (`str`): the model's text.
        fields (`Iterable[str]`, *optional*): the task's field names; ``{{name}}`` around one of them is
            repaired to ``{name}`` (models often double the braces, as in Python format strings).
    """
    reply = _THINK.sub("", reply)
    texts = _tagged(reply)
    if not texts:
        texts = _json_templates(reply)
    if not texts:
        texts = _loose_blocks(reply)
    cleaned = (_clean(text, tuple(fields)) for text in texts)
    return [text for text in cleaned if text]


def _tagged(reply: str) -> list[str]:
    """Texts after each ``<template>``, up to ``</template>`` (or the next opening tag: a reply cut off by
    the token budget, or a model that forgets to close, still yields its templates)."""
    return [_CLOSE_TAG.split(part, maxsplit=1)[0] for part in _OPEN_TAG.split(reply)[1:]]


def _json_templates(reply: str) -> list[str]:
    """A JSON list of strings (or of objects with ``template`` / ``text``) anywhere in the reply."""
    start, end = reply.find("["), reply.rfind("]")
    if start < 0 or end <= start:
        return []
    try:
        data = json.loads(reply[start:end + 1])
    except ValueError:
        return []
    if isinstance(data, dict):
        data = data.get("templates", [])
    texts = []
    for item in data if isinstance(data, list) else []:
        if isinstance(item, dict):
            item = item.get("template") or item.get("text")
        if isinstance(item, str):
            texts.append(item)
    return texts


def _loose_blocks(reply: str) -> list[str]:
    """Blocks split at code fences, numbering labels, ``---`` rules or (without labels) blank lines."""
    lines = _FENCE.sub("\n\x00\n", reply).splitlines()
    labelled = sum(bool(_NUMBER_LABEL.match(line)) for line in lines) >= 2
    blocks, current = [], []
    for line in lines:
        separator = line.strip() in ("\x00", "---", "***") or (not labelled and not line.strip())
        if separator or (labelled and _NUMBER_LABEL.match(line)):
            blocks.append(current)
            current = [] if separator else [_NUMBER_LABEL.sub("", line, count=1)]
        else:
            current.append(line)
    blocks.append(current)
    texts = ["\n".join(block) for block in blocks]
    return [text for text in texts if _PLACEHOLDER.search(text)]


def _clean(text: str, fields: tuple[str, ...]) -> str:
    text = _FENCE.sub("", text).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        text = text[1:-1].strip()
    for name in fields:
        text = re.sub(r"\{\{\s*" + re.escape(name) + r"\s*\}\}", "{" + name + "}", text)
    return text
