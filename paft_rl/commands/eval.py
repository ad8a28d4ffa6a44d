"""``paft-rl eval``: accuracy of one or more models across many templates, with metrics, files and plots.

PAFT's claim is about the distribution of accuracy over unseen templates, so this runs every template
over the same questions in one call (one model load, all prompts batched), and resumes where a killed
run stopped. Options are the fields of `EvalSettings`, read from ``--config eval.yaml`` and ``--key value``
flags the way ``paft-rl sft|grpo`` read theirs.
"""

from __future__ import annotations

import argparse
import sys

from ..eval import EvalSettings, evaluate, format_table, write_outputs
from ..eval.budget import format_estimates
from ..settings import parse_settings, settings_parser


def build_parser():
    parser = settings_parser(EvalSettings, prog="paft-rl eval")
    parser.description = "Evaluate models over every template of a pool and report robustness."
    return parser


USAGE = """usage: paft-rl eval --models M [M ...] --task T --out DIR [--key value ...]
       paft-rl eval --config eval.yaml [--key value ...]"""


def eval_help(parser) -> str:
    """``paft-rl eval --help``: how the file and the flags combine, then each option with its default once."""
    formatter = argparse.HelpFormatter(parser.prog)
    formatter.add_text(parser.description + " Every option below can be set in the --config YAML file (key: value) "
                       "or on the command line (--key value, which wins over the file).")
    formatter.start_section("options")
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        if isinstance(action, argparse._StoreFalseAction):
            action.help = f"turn {action.dest} off"
        elif "default:" not in action.help and action.default not in (None, [], argparse.SUPPRESS):
            action.help += f" (default: {action.default})"
        formatter.add_argument(action)
    formatter.end_section()
    return USAGE + "\n\n" + formatter.format_help()


def parse_eval_settings(argv: list[str]) -> EvalSettings:
    """`EvalSettings` from ``--config F.yaml`` and flags."""
    if "-h" in argv or "--help" in argv:
        print(eval_help(build_parser()))
        raise SystemExit(0)
    (settings,) = parse_settings(build_parser(), argv)
    return settings


def main(argv: list[str]) -> int:
    settings = parse_eval_settings(argv)
    results, records = evaluate(settings)
    paths = write_outputs(results, records, settings.out)
    print("\n".join([format_table(results), *format_estimates(results)]))
    print(f"wrote {', '.join(p.name for p in paths.values())} to {settings.out}", file=sys.stderr)
    return 0
