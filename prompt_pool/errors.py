"""Errors that mean "the input is wrong", as opposed to bugs.

The CLI turns these into one-line messages with a non-zero exit; anything else is a bug and keeps
its traceback (behind ``PAFT_RL_DEBUG=1``).
"""


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
