"""``paft-rl eval``: accuracy of one or more models across many templates, with metrics, files and plots.

PAFT's claim is about the distribution of accuracy over unseen templates, so this runs every template
over the same questions in one call (one model load, all prompts batched), and resumes where a killed
run stopped.
"""

from __future__ import annotations

import argparse
import sys

from ..eval import EvalSettings, evaluate, format_table, write_outputs
from ..eval.budget import format_estimates


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paft-rl eval", description="Evaluate models over every template of a pool and report robustness.")
    parser.add_argument("--model", action="append", required=True, metavar="M",
                        help="model folder, hub id, or LoRA adapter folder (repeat for several models)")
    parser.add_argument("--task", required=True, help="task name (gsm8k, piqa, synth_mc, ...)")
    parser.add_argument("--data", help="hub id or local file (default: the task's dataset)")
    parser.add_argument("--split", help="dataset split (default: the task's evaluation split)")
    parser.add_argument("--templates", default="heldout", metavar="heldout|train|all|FILE",
                        help="a split of the task's built-in pool, or a pool file evaluated whole (default: heldout)")
    parser.add_argument("--field-alias", action="append", default=[], metavar="NAME=FIELD",
                        help="treat the pool's {NAME} as the task's FIELD (repeatable)")
    parser.add_argument("--limit", type=int, help="evaluate the first N questions")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (re-run with it to resume)")
    parser.add_argument("--backend", default="hf", choices=["hf", "vllm"], help="generation backend (default: hf)")
    parser.add_argument("--max-new-tokens", type=int, help="generation budget (default: the task's)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="most prompts decoded together, hf backend (default: 64)")
    parser.add_argument("--max-batch-tokens", type=int,
                        help="most padded prompt tokens per prefill pass, hf backend (default: 2048 on CPU, 32768 on GPU)")
    parser.add_argument("--top-threshold", type=float,
                        help="accuracy a template needs to count in Top (default: the task's, PAFT's values)")
    parser.add_argument("--prompt-format", default="auto", choices=["auto", "chat", "plain"],
                        help="chat: prompts as the user turn of the chat template; plain: raw text; auto (default): "
                             "chat when the tokenizer has a chat template. Use the training recipe's value")
    parser.add_argument("--system-prompt", help="system message before each chat prompt (the training recipe's)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--seed", type=int, default=0, help="seed of synthetic task data (default: 0)")
    parser.add_argument("--threads", type=int,
                        help="torch threads on CPU (default: one per core; fewer on a machine busy with other work)")
    parser.add_argument("--no-prefix-sharing", action="store_true",
                        help="hf backend: batch all prompts by length instead of reusing each template's shared prefix")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--label", action="append", default=[], metavar="NAME",
                        help="short name of each --model in tables and plots, in the same order "
                             "(default: from the folder name)")
    parser.add_argument("--scoring", default="generate", choices=["generate", "loglik"],
                        help="generate: greedy answers scored by the task reward (default); loglik: multiple "
                             "choice by the likeliest option after the prompt, as lm-eval scores PIQA/HellaSwag/ARC")
    parser.add_argument("--budget", metavar="B",
                        help="generate only this share of the grid (0.1 or 10%%) or this many cells (500), chosen so every "
                             "template and question appears, and estimate all accuracies with an item-response model")
    parser.add_argument("--target-error", type=float, metavar="E",
                        help="add cells in rounds until the 90%% intervals of the mean and the worst template are "
                             "narrower than E, or the grid is full (starts from --budget)")
    return parser


def settings_from_args(args: argparse.Namespace) -> EvalSettings:
    return EvalSettings(
        task=args.task, models=list(args.model), out=args.out, data=args.data, split=args.split,
        templates=args.templates, field_aliases=list(args.field_alias), limit=args.limit, backend=args.backend,
        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens,
        top_threshold=args.top_threshold,
        prompt_format=args.prompt_format, system_prompt=args.system_prompt, dtype=args.dtype, seed=args.seed, threads=args.threads,
        share_prefix=not args.no_prefix_sharing,
        progress=not args.no_progress, labels=list(args.label), scoring=args.scoring, budget=args.budget,
        target_error=args.target_error,
    )


def main(argv: list[str]) -> int:
    settings = settings_from_args(build_parser().parse_args(argv))
    results, records = evaluate(settings)
    paths = write_outputs(results, records, settings.out)
    print("\n".join([format_table(results), *format_estimates(results)]))
    print(f"wrote {', '.join(p.name for p in paths.values())} to {settings.out}", file=sys.stderr)
    return 0
