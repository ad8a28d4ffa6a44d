"""GRPO's generation cycles and the checkpoints a run can resume from exactly.

TRL generates once every ``steps_per_generation x num_iterations`` micro-batches and trains on slices of that
buffer, so a cycle can span several optimizer steps; templates follow the step a cycle starts at, and a checkpoint
saved inside a cycle can only be resumed when TRL's regenerated buffer trains the same rows in the same order.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from pathlib import Path
from typing import Any

from prompt_pool import UserError

logger = logging.getLogger("paft_rl.trainers")


def existing_checkpoints(output_dir: str | Path) -> list[Path]:
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if re.fullmatch(r"checkpoint-\d+", p.name))


def checkpoint_step(checkpoint: str | Path) -> int | None:
    state = Path(checkpoint) / "trainer_state.json"
    if state.is_file():
        return int(json.loads(state.read_text())["global_step"])
    match = re.fullmatch(r"checkpoint-(\d+)", Path(checkpoint).name)
    return int(match.group(1)) if match else None


def resume_value(args) -> bool | str | None:
    """``resume_from_checkpoint``: ``true`` (last checkpoint in output_dir), a path, or nothing."""
    value = args.resume_from_checkpoint
    if isinstance(value, str) and value.lower() in ("true", "last", "yes", "1"):
        return True
    if isinstance(value, str) and value.lower() in ("false", "no", "0", ""):
        return None
    return value


def generation_cycle(args) -> tuple[int, int]:
    """GRPO's generation cycle: (micro-batches from one generation, micro-batches per optimizer step)."""
    return args.steps_per_generation * args.num_iterations, args.gradient_accumulation_steps


def cycle_start_step(micro_step: int, cycle: int, accumulation: int) -> int:
    """The optimizer step at which the generation cycle holding micro-batch ``micro_step`` starts."""
    return (micro_step // cycle) * cycle // accumulation


def safe_resume_every(args) -> int:
    """Checkpoints at multiples of this many optimizer steps resume exactly (1: every step is safe).

    A checkpoint inside a cycle is regenerated on resume (TRL does not save its buffer). Its (row, template)
    pairs come back, since templates follow the cycle's start; which rows each remaining step trains on comes
    back only when every optimizer step uses the whole buffer (``gradient_accumulation_steps`` a multiple of
    ``steps_per_generation``), since the regenerated buffer is shuffled anew.
    """
    cycle, accumulation = generation_cycle(args)
    if accumulation % args.steps_per_generation == 0:
        return 1
    return cycle // math.gcd(cycle, accumulation)


def warn_unsafe_save_steps(args) -> None:
    """Say at the start, not at resume time, when periodic checkpoints will fall inside generation cycles."""
    every = safe_resume_every(args)
    if args.save_strategy == "steps" and every > 1 and args.save_steps % every:
        logger.warning("paft-rl: save_steps %s puts checkpoints inside GRPO generation cycles, which cannot be "
                       "resumed exactly; use a multiple of %d", args.save_steps, every)


def check_resume_point(args, resume: Any) -> None:
    """GRPO: refuse a checkpoint saved inside a generation cycle whose data order TRL cannot restore."""
    from trl import GRPOConfig

    if not resume or not isinstance(args, GRPOConfig):
        return
    every = safe_resume_every(args)
    if every == 1:
        return
    checkpoint = max(existing_checkpoints(args.output_dir), key=checkpoint_step, default=None) if resume is True \
        else Path(resume)
    step = checkpoint_step(checkpoint) if checkpoint is not None else None
    if step is None or step % every == 0:
        return
    cycle, accumulation = generation_cycle(args)
    raise UserError(f"{checkpoint} was saved at step {step}, inside a generation cycle ({cycle} micro-batches = "
                    f"steps_per_generation x num_iterations, {accumulation} per optimizer step) that TRL regenerates "
                    f"on resume and trains in another order: resume from a checkpoint at a multiple of {every} steps "
                    f"(save_steps: a multiple of {every})")


def train_resume(trainer, resume_from_checkpoint) -> bool | str | None:
    """What ``train`` resumes from: the checkpoint it is given, or the config's ``resume_from_checkpoint`` (which
    the pre-flight checked)."""
    return resume_value(trainer.args) if resume_from_checkpoint is None else resume_from_checkpoint


def remove_replaced_checkpoints(trainer, resume) -> None:
    """With ``overwrite`` and no resume, remove the old run's checkpoints first, so the folder never mixes runs."""
    if trainer.args.overwrite and not resume and trainer.accelerator.is_main_process:
        for checkpoint in existing_checkpoints(trainer.args.output_dir):
            shutil.rmtree(checkpoint)
    trainer.accelerator.wait_for_everyone()
