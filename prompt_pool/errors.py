"""Errors that mean "the input is wrong", as opposed to bugs.

The CLI turns these into one-line messages with a non-zero exit; anything else is a bug and keeps
its traceback (behind ``PAFT_RL_DEBUG=1``).
"""


import difflib
from collections.abc import Iterable


class UserError(ValueError):
    """Bad input from a user: a file, a flag or a config value that must change."""


class PoolValidationError(UserError):
    """A pool failed validation. ``problems`` holds every problem found, one string each."""

    def __init__(self, problems: list[str], source: str = "pool"):
        self.problems = list(problems)
        self.source = source
        count = len(self.problems)
        head = f"{source}: {count} problem{'s' if count != 1 else ''}"
        super().__init__(head + ": " + "; ".join(self.problems))


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (libraries' messages run to many lines), or its type's name."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def short_value(value: object, width: int = 40) -> str:
    """A setting's value for a one-line message: JSON (strings as they are unless they hold a line break or another
    control character), cut to ``width`` characters."""
    import json

    text = value if isinstance(value, str) and value.isprintable() else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


def unknown_key_error(key: object, known: Iterable[str], where: str, what: str = "key") -> UserError:
    """The error for a setting nobody reads: name it, where it was written, and the closest known name."""
    known = sorted(set(known))
    by_lower = {name.lower(): name for name in reversed(known)}  # `Split` and `SPLIT` are `split` misspelt
    close = [by_lower[name] for name in difflib.get_close_matches(str(key).lower(), by_lower, n=1, cutoff=0.6)]
    hint = f"; did you mean {close[0]!r}?" if close else (f"; known: {', '.join(known)}" if len(known) <= 30 else "")
    return UserError(f"{where}: unknown {what} {key!r}{hint}")
