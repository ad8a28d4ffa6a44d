"""``paft-rl grpo --config R.yaml [--key value ...]``: GRPO with one pool template per rollout group (PAFT).

Runs as one process, or under ``accelerate launch`` / ``torchrun`` (DDP, DeepSpeed ZeRO-2/3). The training itself
is `paft_rl.training.train_grpo`.
"""

from __future__ import annotations


def main(argv: list[str]) -> int:
    from ..configs import PaftGRPOConfig
    from ..trainers.recipes import parse_recipe
    from ..training import train_command

    train_command("grpo", *parse_recipe(PaftGRPOConfig, argv))
    return 0
