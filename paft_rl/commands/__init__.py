"""One module per ``paft-rl`` subcommand, each with ``main(argv) -> int``."""

from __future__ import annotations

from prompt_pool import UserError


def refuse_renamed(argv: list[str], renamed: dict[str, str]) -> None:
    """A flag spelt the way an earlier version spelt it: one line naming the spelling to write now."""
    for token in argv:
        name = token.split("=", 1)[0]
        if name in renamed:
            raise UserError(f"{name} is now {renamed[name]}")
