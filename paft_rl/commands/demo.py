"""``paft-rl demo [--sft_steps N ...]``: PAFT in miniature on a laptop CPU, offline, in about ten minutes.

This module only reads the options (`paft_rl.workflows.demo.DemoSettings`: ``--key value`` flags or
``--config F.yaml``, ``--sft-steps`` spelled either way) and calls `paft_rl.workflows.demo.run_demo`.
"""

from __future__ import annotations

from ..settings import parse_settings, settings_parser


def main(argv: list[str]) -> int:
    from ..workflows.demo import DemoSettings, run_demo

    parser = settings_parser(DemoSettings, "paft-rl demo")
    parser.description = "PAFT in miniature on a CPU: fixed template vs PAFT pool (and GRPO), held-out evaluation"
    (settings,) = parse_settings(parser, argv)
    run_demo(settings)
    return 0
