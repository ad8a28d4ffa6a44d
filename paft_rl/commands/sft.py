"""``paft-rl sft --config R.yaml [--key value ...]``: supervised fine-tuning with pool templates (PAFT).

``template_draw: uniform`` redraws each example's template every K steps; ``fixed`` (one user-written
template) and ``top`` (one pool template id) are the single-template baselines. Runs as one process, or under
``accelerate launch`` / ``torchrun`` (DDP, DeepSpeed ZeRO-2/3). The training itself is `paft_rl.training.train_sft`.
"""

from __future__ import annotations


def main(argv: list[str]) -> int:
    from ..configs import PaftSFTConfig
    from ..trainers.recipes import parse_recipe
    from ..training import train_command

    train_command("sft", *parse_recipe(PaftSFTConfig, argv))
    return 0
