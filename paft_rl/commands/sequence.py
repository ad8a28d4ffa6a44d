"""``paft-rl sequence --config S.yaml``: train a sequence of tasks with SAPO's template choice at every boundary,
evaluate every task after every stage, and report the accuracy matrix with AP, BWT and FWT."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def main(argv: list[str]) -> int:
    from ..selection.sequence import SequenceConfig, format_report, run_sequence

    parser = argparse.ArgumentParser(prog="paft-rl sequence", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="sequence config (model, output_dir, tasks, sft, select, eval)")
    parser.add_argument("--fresh", action="store_true", help="delete the run folder first and start over")
    args = parser.parse_args(argv)
    config = SequenceConfig.from_yaml(args.config)
    if args.fresh and Path(config.output_dir).exists():
        shutil.rmtree(config.output_dir)
    report = run_sequence(config)
    print(format_report(report))
    print(f"wrote {config.output_dir}/sequence.json")
    return 0
