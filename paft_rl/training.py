"""Training as library calls: `train_sft` and `train_grpo` take the parsed configs, build the trainer as a Python
user would (`paft_rl.PaftSFTTrainer`, `paft_rl.PaftGRPOTrainer`), train and save; one path for every caller.

``paft-rl sft|grpo`` only parse a recipe and call these. Workflows (pipeline, demo, sequence) call `train_recipe`
with a recipe held as a mapping: it is parsed exactly as a YAML file would be, and no settings travel through a
file (the workflows still save each recipe as run, for people).

```python
>>> from paft_rl.training import recipe_configs, train_sft
>>> args, model_args = recipe_configs("sft", {"model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct",
...                                           "task": "synth_mc", "output_dir": "runs/mc", "max_steps": 40})
>>> result = train_sft(args, model_args)
```
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainResult:
    """What a training call produced.

    Args:
        output_dir (`str`): where the final model (or LoRA adapter) and tokenizer were saved.
        global_step (`int`): optimizer steps taken in total (a resumed run counts the steps before it too).
        metrics (`dict`): TRL's training metrics (``train_loss``, ``train_runtime``...).
    """

    output_dir: str
    global_step: int
    metrics: dict[str, Any] = field(default_factory=dict)


def train_sft(args, model_args) -> TrainResult:
    """PAFT SFT with `PaftSFTTrainer` (which checks every input before the model loads), then the model saved.

    Args:
        args (`PaftSFTConfig`): TRL's SFT options plus the pool options.
        model_args (`trl.ModelConfig`): model path and LoRA options.
    """
    from .trainers.sft import PaftSFTTrainer

    return _trained(PaftSFTTrainer, args, model_args)


def train_grpo(args, model_args) -> TrainResult:
    """PAFT GRPO with `PaftGRPOTrainer` (which checks every input before the model loads), then the model saved.

    Args:
        args (`PaftGRPOConfig`): TRL's GRPO options plus the pool options.
        model_args (`trl.ModelConfig`): model path and LoRA options.
    """
    from .trainers.grpo import PaftGRPOTrainer

    return _trained(PaftGRPOTrainer, args, model_args)


def _trained(trainer_class, args, model_args) -> TrainResult:
    """As TRL's scripts: the trainer built from the model path, the config and ModelConfig's `LoraConfig`; trained
    (resuming as the config says) and saved with its tokenizer into output_dir."""
    from .trainers.preflight import check_run_output
    from .trainers.recipes import model_init_kwargs, peft_config_of

    check_run_output(args)  # a command's output folder and resume point, before anything else
    model_init_kwargs(args, model_args)
    trainer = trainer_class(model=model_args.model_name_or_path, args=args, peft_config=peft_config_of(model_args))
    output = trainer.train()
    trainer.save_model(args.output_dir)
    return TrainResult(args.output_dir, int(output.global_step), dict(output.metrics))


def recipe_configs(command: str | None, recipe: dict[str, Any], where: str | None = None):
    """(config, ModelConfig) for ``sft`` or ``grpo`` from a recipe mapping, checked as a recipe file is.

    ``command`` ``None``: a recipe with a key only GRPO knows (``num_generations``...) is a GRPO recipe, any
    other an SFT recipe (so an unknown key gets SFT's did-you-mean). ``where`` names the recipe in messages.
    """
    from .configs import PaftGRPOConfig, PaftSFTConfig
    from .trainers.recipes import parse_recipe_mapping

    if command is None:
        grpo_only = set(PaftGRPOConfig.__dataclass_fields__) - set(PaftSFTConfig.__dataclass_fields__)
        command = "grpo" if grpo_only & set(recipe) else "sft"
    config_class = {"sft": PaftSFTConfig, "grpo": PaftGRPOConfig}[command]
    return parse_recipe_mapping(config_class, dict(recipe), where or f"{command} recipe")


def train_recipe(command: str, recipe: dict[str, Any]) -> TrainResult:
    """Parse a recipe mapping and train it with ``paft-rl sft`` or ``grpo``'s code."""
    args, model_args = recipe_configs(command, recipe)
    return {"sft": train_sft, "grpo": train_grpo}[command](args, model_args)


def train_command(command: str, args, model_args) -> TrainResult:
    """``paft-rl sft|grpo``: train with `train_sft` / `train_grpo`, then say where the model was saved; when
    interrupted (Ctrl-C), say how to continue. Under several processes only the first one speaks."""
    speaks = int(os.environ.get("RANK", "0")) == 0
    try:
        result = {"sft": train_sft, "grpo": train_grpo}[command](args, model_args)
    except KeyboardInterrupt:
        if speaks:
            print(f"paft-rl {command}: {interrupted_message(args)}", file=sys.stderr)
        raise
    if speaks:
        print(f"paft-rl {command}: {saved_message(result)}")
    return result


def saved_message(result: TrainResult) -> str:
    """Where a finished training saved its model (or LoRA adapter)."""
    what = "LoRA adapter" if (Path(result.output_dir) / "adapter_config.json").is_file() else "model"
    return f"saved the {what} and its tokenizer in {result.output_dir} (after {result.global_step} steps)"


def interrupted_message(args) -> str:
    """What an interrupted training left in output_dir, and the flag that continues it from there."""
    from .trainers.cycles import checkpoint_step, existing_checkpoints

    last = max(existing_checkpoints(args.output_dir), key=lambda p: checkpoint_step(p) or 0, default=None)
    if last is None:
        return (f"training interrupted before any checkpoint was saved in {args.output_dir}: nothing to resume; run "
                "the same command again to start over")
    flags = "--resume_from_checkpoint true" + (" --overwrite false" if args.overwrite else "")
    return f"training interrupted; the last checkpoint is {last}: add {flags} to the same command to continue from it"
