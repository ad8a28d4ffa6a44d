"""``paft-rl sequence --config S.yaml``: train a sequence of tasks with SAPO's template choice at every boundary,
evaluate every task after every stage, and report the accuracy matrix with AP, BWT and FWT."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..settings import Settings, option


@dataclass
class SequenceFlags(Settings):
    """``paft-rl sequence``'s own flags; everything else is in the config file."""

    config: str = option(help="sequence config (model_name_or_path, output_dir, tasks, sft, select, eval)")
    fresh: bool = option(False, help="delete the run folder first and start over")


def main(argv: list[str]) -> int:
    from ..settings import parse_settings, read_settings_file, settings_parser
    from ..workflows.sequence import SequenceConfig, format_report, run_sequence

    (flags,) = parse_settings(settings_parser(SequenceFlags, "paft-rl sequence"), argv)
    config = read_settings_file(SequenceConfig, flags.config, "sequence config")
    report = run_sequence(config, fresh=flags.fresh, where=Path(flags.config).name)
    print(format_report(report))
    print(f"wrote {config.output_dir}/sequence.json")
    return 0
