"""``paft-rl select --config R.yaml``: SAPO's static selection.

Scores every train template of the recipe's pool by the current model's loss on the gold answers of the
first N rows (SAPO uses 250), writes the table, and writes a copy of the recipe that trains on the chosen
template (``template_draw: top``), to pass to ``paft-rl sft`` or ``paft-rl grpo``.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paft-rl select", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="SFT or GRPO recipe (model, task, data, pool, prompt format)")
    parser.add_argument("--model", help="model to score with (default: the recipe's model_name_or_path)")
    parser.add_argument("--rows", type=int,
                        help="score on the first N rows (default: SAPO's 250, or the recipe's data_limit if smaller)")
    parser.add_argument("--pick", choices=["lowest", "highest"], default="lowest",
                        help="lowest loss (SAPO) or highest (the paper's pessimal control)")
    parser.add_argument("--batch-size", type=int, default=16, help="(template, row) pairs per forward pass")
    parser.add_argument("--out", help="output folder (default: <output_dir>/sapo_selection, else ./sapo_selection)")
    return parser


def main(argv: list[str]) -> int:
    from ..selection.select import read_recipe, select_template, write_selection

    args = build_parser().parse_args(argv)
    recipe = read_recipe(args.config)
    if args.model:
        recipe["model_name_or_path"] = args.model
    out_dir = Path(args.out or Path(recipe.get("output_dir") or ".") / "sapo_selection")
    selection = select_template(recipe, args.rows, args.pick, args.batch_size)
    paths = write_selection(selection, recipe, args.config, out_dir)
    for rank, score in enumerate(sorted(selection.scores, key=lambda s: s.loss)[:10], start=1):
        marker = "  <- chosen" if score is selection.chosen else ""
        print(f"{rank:>3}. {score.template_id:<28} loss {score.loss:.4f}{marker}")
    print(f"chosen ({args.pick} loss): {selection.chosen.template_id}; scored {len(selection.scores)} templates x "
          f"{selection.scores[0].rows} rows in {selection.seconds:.1f} s")
    print(f"wrote {paths['csv']}, {paths['json']}")
    print(f"train on it: paft-rl sft --config {paths['recipe']}   (or paft-rl grpo)")
    return 0
