"""Template syntax: ``{field}`` placeholders, ``{{``/``}}`` literal braces, every other brace literal.

Literal-by-default matters: math and tool-use prompts are full of ``\\boxed{}`` and JSON examples, and
``str.format`` would make every one of them an escaping bug. Only ``{identifier}`` is a placeholder.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .errors import UserError

# `{{` and `}}` are escapes; `{name}` with an identifier name is a placeholder; nothing else is special.
_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


def placeholders(text: str) -> list[str]:
    """Return the placeholder names of ``text`` in order of first use, without repeats."""
    names: dict[str, None] = {}
    for match in _TOKEN.finditer(text):
        if match.group(1) is not None:
            names.setdefault(match.group(1))
    return list(names)


def render(text: str, fields: Mapping[str, object], template_id: str | None = None) -> str:
    """Fill the placeholders of ``text`` from ``fields``.

    Args:
        text (`str`): the template text.
        fields (`Mapping[str, object]`): values by placeholder name; values are turned into `str`.
        template_id (`str`, *optional*): named in the error message when a field is missing.

    Raises:
        UserError: when the template uses a field that ``fields`` does not have.
    """

    def substitute(match: re.Match) -> str:
        name = match.group(1)
        if name is None:
            return match.group(0)[0]
        try:
            return str(fields[name])
        except KeyError:
            where = f"template {template_id!r}" if template_id else "template"
            known = ", ".join(sorted(fields)) or "none"
            raise UserError(
                f"{where} uses {{{name}}} but the example has no field {name!r} (fields: {known}); "
                f"rename the placeholder or add field_aliases {name}=FIELD"
            ) from None

    return _TOKEN.sub(substitute, text)


def normalise_whitespace(text: str) -> str:
    """Collapse runs of whitespace so that two templates differing only in spacing count as duplicates."""
    return " ".join(text.split())
