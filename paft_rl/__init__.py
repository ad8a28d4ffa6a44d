"""paft-rl: prompt-agnostic fine-tuning on top of TRL.

``from paft_rl import PaftGRPOConfig, PaftGRPOTrainer`` as ``from trl import GRPOConfig, GRPOTrainer`` (see
`PaftGRPOTrainer` and docs/training.md). The names below load on first use: ``paft-rl pool ...`` and the data layers
do not pay for torch and TRL.
"""

from importlib import import_module

_WHERE = {"PaftGRPOConfig": "configs", "PaftSFTConfig": "configs", "PaftGRPOTrainer": "trainers.grpo",
          "PaftSFTTrainer": "trainers.sft", "PromptFormat": "formatting"}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_WHERE[name]}", __name__), name)


__all__ = sorted(_WHERE)
