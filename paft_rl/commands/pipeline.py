"""``paft-rl pipeline --config P.yaml [--fresh]``: named stages (train, merge, select, evaluate, sequence), resumable.

This module only reads the command line and the pipeline file (`paft_rl.workflows.pipeline.read_pipeline`, every
key checked, with a did-you-mean for a typo at any depth) and calls `paft_rl.workflows.pipeline.run_pipeline`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ..settings import Settings, option, parse_settings, settings_parser


@dataclass
class PipelineFlags(Settings):
    """``paft-rl pipeline``'s command line; everything else is in the pipeline file."""

    config: str = option(help="pipeline YAML: stages (train, merge, select, evaluate, sequence), output_dir")
    fresh: bool = option(False, help="start over: delete the run folder and replace the stages' training output")


def default_output_dir(config_path: str) -> str:
    """``runs/<config name>``: ``p.pipeline.yaml`` -> ``runs/p``."""
    return str(Path("runs") / Path(config_path).name.removesuffix(".yaml").removesuffix(".pipeline"))


def main(argv: list[str]) -> int:
    from ..workflows.pipeline import read_pipeline, run_pipeline

    parser = settings_parser(PipelineFlags, "paft-rl pipeline")
    parser.description = "named stages (train, merge, select, evaluate, sequence), resumable; all in --config"
    (flags,) = parse_settings(parser, argv)
    config = read_pipeline(flags.config)
    if config.output_dir is None:
        config = replace(config, output_dir=default_output_dir(flags.config))
    run_pipeline(config, fresh=flags.fresh)
    return 0
