"""``paft-rl pipeline --config P.yaml [--fresh]``: SFT -> (merge LoRA) -> GRPO -> evaluation on held-out templates.

This module only reads the command line and the pipeline file (`paft_rl.workflows.pipeline.PipelineConfig`, every
key checked, with a did-you-mean for a typo at any depth) and calls `paft_rl.workflows.pipeline.run_pipeline`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ..settings import Settings, option, parse_settings, read_settings_file, settings_parser


@dataclass
class PipelineFlags(Settings):
    """``paft-rl pipeline``'s command line; everything else is in the pipeline file."""

    config: str = option(help="pipeline YAML: sft and/or grpo recipe paths, an eval section, output_dir")
    fresh: bool = option(False, help="start over: delete the run folder and replace the stages' training output")


def default_output_dir(config_path: str) -> str:
    """``runs/<config name>``: ``p.pipeline.yaml`` -> ``runs/p``."""
    return str(Path("runs") / Path(config_path).name.removesuffix(".yaml").removesuffix(".pipeline"))


def main(argv: list[str]) -> int:
    from ..workflows.pipeline import PipelineConfig, run_pipeline

    parser = settings_parser(PipelineFlags, "paft-rl pipeline")
    parser.description = "SFT -> (merge LoRA) -> GRPO -> evaluation, resumable; the stages and eval: are in --config"
    (flags,) = parse_settings(parser, argv)
    config = read_settings_file(PipelineConfig, flags.config, "pipeline config")
    if config.output_dir is None:
        config = replace(config, output_dir=default_output_dir(flags.config))
    run_pipeline(config, fresh=flags.fresh)
    return 0
