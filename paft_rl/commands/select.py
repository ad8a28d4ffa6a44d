"""``paft-rl select --config R.yaml``: SAPO's static selection.

Scores every train template of the recipe's pool by the current model's loss on the gold answers of the
first N rows (SAPO uses 250), writes the table, and writes a copy of the recipe that trains on the chosen
template (``template_draw: top``), to pass to ``paft-rl sft`` or ``paft-rl grpo``.
"""

from __future__ import annotations


def main(argv: list[str]) -> int:
    from ..settings import parse_settings, settings_parser
    from ..workflows.select import SelectSettings, run_select

    (settings,) = parse_settings(settings_parser(SelectSettings, "paft-rl select"), argv)
    run_select(settings)
    return 0
