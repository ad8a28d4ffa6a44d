"""PAFT trainers: TRL's GRPO and SFT trainers with training prompts drawn from a template pool.

Modules: `grpo` and `sft` (the trainers), `draws` (which template an example gets), `data` (rows to training
rows), `cycles` (GRPO's generation cycles and checkpoints), `preflight` (every check before a model loads),
`recipes` (recipe files and ``--help``). The names below load on first use, so that importing the package (as
`paft_rl.configs` does for the draws) does not pay for torch and TRL.
"""

from importlib import import_module

_WHERE = {"PaftGRPOTrainer": "grpo", "PaftSFTCollator": "sft", "PaftSFTTrainer": "sft", "DRAWS": "draws",
          "TemplateChooser": "draws", "TemplateDraw": "draws", "build_chooser": "draws", "build_dataset": "data"}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_WHERE[name]}", __name__), name)


__all__ = sorted(_WHERE)
