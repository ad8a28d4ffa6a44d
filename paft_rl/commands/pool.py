"""``paft-rl pool validate|stats|split|render|generate``: work with template pool files."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

from prompt_pool import PoolValidationError, UserError, load_pool, write_pool

from ..settings import SettingError, Settings, option, parse_settings, settings_parser


class OneLineParser(argparse.ArgumentParser):
    """argparse with one spelling per flag (no abbreviations, as the other commands) and one-line errors (a
    `UserError`) instead of the usage and an exit."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str):
        raise UserError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="paft-rl pool", description="Validate, inspect, split and render template pools.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=OneLineParser)

    validate = actions.add_parser("validate", help="check a pool (for a task when --task is given)")
    validate.add_argument("file", help="pool file (JSONL, YAML, JSON, CSV, XLSX) or built-in pool name")
    validate.add_argument("--task", help="task whose fields the templates must use")
    _add_alias_option(validate)
    _flag(validate, "drop_duplicate_templates", action="store_true",
          help="drop repeated texts within a split before checking (published pools have some)")

    stats = actions.add_parser("stats", help="counts, lengths and placeholder use")
    stats.add_argument("file")
    stats.add_argument("--json", action="store_true", help="print one JSON object")

    actions.add_parser("split", help="reassign train / held-out splits (see `paft-rl pool split --help`)",
                       add_help=False)

    render = actions.add_parser("render", help="show the prompt a template makes for one dataset row")
    render.add_argument("file")
    render.add_argument("--task", required=True)
    render.add_argument("--data", help="local file or hub id (default: the task's dataset or generator)")
    render.add_argument("--split", help="dataset split (default: the task's train split)")
    render.add_argument("--index", type=int, required=True, help="row index in the split")
    render.add_argument("--template", help="template id (default: the train template drawn for this row)")
    render.add_argument("--seed", type=int, default=0, help="seed of the draw when --template is not given")
    render.add_argument("--position", type=int, default=0, help="training position of the draw")
    _add_alias_option(render)

    actions.add_parser("generate", help="build a pool with an ensemble of LLMs (see `paft-rl pool generate --help`)",
                       add_help=False)
    _add_export_parser(actions)
    return parser


def _add_export_parser(actions) -> None:
    export = actions.add_parser("export", help="write the pool as an lm-evaluation-harness task group")
    export.add_argument("file", help="pool file or built-in pool name")
    export.add_argument("--task", required=True, help="task whose fields, gold and answer format the tasks use")
    export.add_argument("--format", required=True, choices=["lm-eval"], help="what to export to")
    export.add_argument("--out", required=True, metavar="DIR",
                        help="folder for the task files (lm_eval --include_path)")
    export.add_argument("--templates", default="all", choices=["all", "train", "heldout"],
                        help="which of the pool's templates (default: all, as `paft-rl eval --templates FILE`)")
    export.add_argument("--data", help="hub id or local file (default: the task's dataset)")
    export.add_argument("--split", help="dataset split (default: the task's evaluation split)")
    export.add_argument("--limit", type=int, help="first N questions")
    export.add_argument("--seed", type=int, default=0, help="seed of synthetic task data (default: 0)")
    export.add_argument("--scoring", choices=["generate", "loglik"],
                        help="generate + regex filter, or loglik: multiple choice by option likelihood (default: "
                             "loglik for cloze tasks, generate otherwise)")
    _flag(export, "max_new_tokens", type=int, help="generation budget (default: the task's)")
    export.add_argument("--group", help="group name (default: paft_<task>, or paft_<task>_<file> for a pool file)")
    export.add_argument("--force", action="store_true",
                        help="replace an earlier export in --out (its task files that this export does not write "
                             "again are removed)")
    _add_alias_option(export)


def _add_alias_option(parser: argparse.ArgumentParser) -> None:
    _flag(parser, "field_aliases", nargs="+", action="extend", default=[], metavar="NAME=FIELD",
          help="NAME=FIELD pairs: the pool's {NAME} is the task's FIELD (a recipe's field_aliases)")


def _flag(parser: argparse.ArgumentParser, name: str, **kwargs) -> None:
    """A flag spelt as in every other command (``--max_new_tokens``, a recipe's key), or with dashes."""
    spellings = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    parser.add_argument(*spellings, dest=name, **kwargs)


def main(argv: list[str]) -> int:
    if argv and argv[0] == "generate":
        from ..construction.cli import main as generate_main

        return generate_main(argv[1:])
    if argv and argv[0] == "split":
        return run_split(*parse_split_flags(argv[1:]))
    args = build_parser().parse_args(argv)
    return {"validate": run_validate, "stats": run_stats, "render": run_render, "export": run_export}[args.action](args)


def run_validate(args: argparse.Namespace) -> int:
    from paft_rl.tasks import get_task, parse_field_aliases

    task = get_task(args.task) if args.task else None
    pool = load_pool(args.file).with_aliases(parse_field_aliases(args.field_aliases))
    dropped: list[str] = []
    if args.drop_duplicate_templates:
        pool, dropped = pool.drop_duplicates()
    try:
        pool.validate(task)
    except PoolValidationError as error:
        print(f"paft-rl pool validate: {pool.name}: {len(error.problems)} problem(s):", file=sys.stderr)
        for problem in error.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2  # bad input, as every other command's (1 is for bugs)
    target = f" for task {task.name!r}" if task else ""
    note = f" ({len(dropped)} duplicate(s) dropped)" if dropped else ""
    print(f"{pool.name}: valid{target}: {len(pool)} templates, {len(pool.train)} train, "
          f"{len(pool.heldout)} held-out{note}")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    stats = load_pool(args.file).stats()
    if args.json:
        print(json.dumps(stats))
        return 0
    print(f"{stats['name']}: {stats['count']} templates ({stats['train']} train, {stats['heldout']} held-out)")
    for unit in ("chars", "words"):
        s = stats[unit]
        print(f"  {unit:<6} min {s['min']}, mean {s['mean']}, max {s['max']}")
    print("  placeholders: " + (", ".join(f"{{{k}}} x{v}" for k, v in stats["placeholders"].items()) or "none"))
    print("  sources: " + ", ".join(f"{k} x{v}" for k, v in stats["sources"].items()))
    return 0


@dataclass
class SplitFlags(Settings):
    """``paft-rl pool split FILE``: the pool's templates reassigned to train and held-out."""

    heldout_fraction: float = option(help="share of the templates held out, between 0 and 1 (exclusive)")
    seed: int = option(help="split seed: the split is a hash of the seed and each template's id")
    out: str = option(help="output pool file; its suffix names the format (.jsonl, .json, .yaml, .csv, .xlsx)")
    force: bool = option(False, help="replace --out when it already exists")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.heldout_fraction < 1:
            raise SettingError("heldout_fraction", f"must be between 0 and 1 (exclusive), got {self.heldout_fraction}")


def parse_split_flags(argv: list[str]) -> tuple[str, SplitFlags]:
    """The pool named first, and the flags after it."""
    parser = settings_parser(SplitFlags, "paft-rl pool split")
    parser.add_argument("file", help="pool file (JSONL, YAML, JSON, CSV, XLSX) or built-in pool name")
    flags, rest = parse_settings(parser, argv)
    return rest.file, flags


def run_split(file: str, flags: SplitFlags) -> int:
    from pathlib import Path

    from prompt_pool.io import pool_format

    from ..outputs import check_output, refuse_replacing

    out = Path(flags.out)
    pool_format(out)  # refuse an unknown suffix before reading anything
    if Path(file).exists() and out.exists() and out.resolve() == Path(file).resolve():
        raise UserError(f"--out {flags.out} is the input pool: write the split pool to another file")
    if out.is_dir():
        raise UserError(f"--out {flags.out} is a folder: name a pool file such as {out / 'pool.jsonl'}")
    check_output(out, "--out", "file")
    refuse_replacing(out, "--out", [out.name] if out.exists() else [], flags.force)
    pool = load_pool(file).split(flags.heldout_fraction, flags.seed)
    write_pool(pool, out)
    print(f"wrote {flags.out}: {len(pool.train)} train, {len(pool.heldout)} held-out (seed {flags.seed})")
    return 0


def run_render(args: argparse.Namespace) -> int:
    from paft_rl.tasks import get_task, load_row, parse_field_aliases

    task = get_task(args.task)
    pool = load_pool(args.file).with_aliases(parse_field_aliases(args.field_aliases))
    row = load_row(task, args.data, args.split, args.index)
    example = task.example(row)
    if args.template:
        template, how = pool.get(args.template), "given"
    else:
        template = pool.draw(args.seed, row["row_id"], args.position)
        how = f"drawn for seed {args.seed}, position {args.position}"
    print(f"# template {template.id} ({template.split}, {how}); gold: {example.gold}")
    print(pool.render(template, example.fields))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from paft_rl.eval.export import check_exportable, export_lm_eval
    from paft_rl.eval.runner import eval_templates
    from paft_rl.tasks import get_task

    task = get_task(args.task)
    args.scoring = args.scoring or task.default_scoring
    check_exportable(task, args.scoring)
    if args.max_new_tokens is not None and args.max_new_tokens <= 0:
        raise UserError(f"--max-new-tokens must be positive, got {args.max_new_tokens}")
    whole = eval_templates(task, args.file, args.field_aliases)
    pool = whole.subset(args.templates)
    if not pool.templates:  # nothing unseen in training would be exported under the name held-out
        raise UserError(f"{whole.name} has no {'held-out' if args.templates == 'heldout' else args.templates} "
                        "templates to export: mark some with split heldout (paft-rl pool split), or pass --templates "
                        "all or train")
    written = export_lm_eval(pool, task, args.out, group=args.group, data=args.data, split=args.split,
                             limit=args.limit, seed=args.seed, scoring=args.scoring, max_new_tokens=args.max_new_tokens,
                             replace=args.force)
    print(f"wrote lm-eval group {written['group']} ({len(written['tasks'])} tasks, one per template, "
          f"{written['questions']} questions) to {args.out}; run: lm_eval --include_path {args.out} "
          f"--tasks {written['group']} --apply_chat_template ...")
    return 0
