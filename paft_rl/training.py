"""Training as library calls: `train_sft` and `train_grpo` take the parsed configs and return what they made.

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

from dataclasses import dataclass, field
from typing import Any

from .precision import announce


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
    """PAFT SFT: every checked input first (pool, data, tokenizer, lengths), then TRL's `SFTTrainer` with a
    collator that renders each example's template when its batch is built.

    Args:
        args (`PaftSFTConfig`): TRL's SFT options plus the pool options.
        model_args (`trl.ModelConfig`): model path and LoRA options.
    """
    from trl import get_peft_config

    from .trainers.setup import adaptive_draws, check_prompt_fits, model_init_kwargs, prepare_inputs
    from .trainers.sft import PaftSFTCollator, PaftSFTTrainer

    announce(args.precision_note)
    inputs = prepare_inputs(args, model_args.model_name_or_path)
    # At least one completion token must survive truncation, and the prompt must fit the model.
    check_prompt_fits(inputs, 1, args.max_length, "completion token", "raise max_length")
    check_prompt_fits(inputs, 1, inputs.context, "completion token", "the model's context cannot grow")
    model_init_kwargs(args, model_args)
    collator = PaftSFTCollator(inputs.tokenizer, inputs.chooser, inputs.conversational, args.system_prompt,
                               args.max_length)
    trainer = PaftSFTTrainer(
        model=model_args.model_name_or_path, args=args, train_dataset=inputs.dataset, collator=collator,
        processing_class=inputs.tokenizer, peft_config=get_peft_config(model_args), eval_dataset=inputs.eval_dataset,
        adaptive=adaptive_draws(args, inputs),
    )
    return _result(trainer, args)


def train_grpo(args, model_args) -> TrainResult:
    """PAFT GRPO: every checked input first, then TRL's `GRPOTrainer` with one pool template per rollout group.

    Args:
        args (`PaftGRPOConfig`): TRL's GRPO options plus the pool options.
        model_args (`trl.ModelConfig`): model path and LoRA options.
    """
    from trl import get_peft_config

    from .configs import check_vllm_on_this_machine
    from .trainers.common import reward_functions
    from .trainers.grpo import PaftGRPOTrainer
    from .trainers.setup import adaptive_draws, check_prompt_fits, model_init_kwargs, prepare_inputs

    announce(args.precision_note)

    check_vllm_on_this_machine(args)
    inputs = prepare_inputs(args, model_args.model_name_or_path)
    funcs = reward_functions(args.rewards, inputs.task)
    check_prompt_fits(inputs, args.max_completion_length or 0, inputs.context, "generated tokens",
                      "lower max_completion_length")
    note_text_answer_budget(inputs, args.max_completion_length)
    model_init_kwargs(args, model_args)
    trainer = PaftGRPOTrainer(
        model=model_args.model_name_or_path, reward_funcs=funcs, args=args, train_dataset=inputs.dataset,
        chooser=inputs.chooser, conversational=inputs.conversational, system_prompt=args.system_prompt,
        processing_class=inputs.tokenizer, peft_config=get_peft_config(model_args), eval_dataset=inputs.eval_dataset,
        adaptive=adaptive_draws(args, inputs),
    )
    return _result(trainer, args)


def note_text_answer_budget(inputs, budget: int | None) -> None:
    """Say so when GRPO's completions cannot hold the longest option a text answer copies: those rows cannot be
    answered right, and their reward is 0 whatever the model learns."""
    from prompt_pool import short_value

    from .tasks import text_answer_tokens

    if budget is None or not inputs.task.answers_with_text:
        return
    longest = text_answer_tokens(inputs.task, inputs.dataset["options"], inputs.tokenizer)
    if budget < longest[0]:
        announce(f"max_completion_length {budget} cuts text answers: option {short_value(longest[1])} is "
                 f"{longest[0]} tokens, so no completion can copy it whole (raise max_completion_length)")


def _result(trainer, args) -> TrainResult:
    from .trainers.setup import train_and_save

    output = train_and_save(trainer, args)
    return TrainResult(args.output_dir, int(output.global_step), dict(output.metrics))


def recipe_configs(command: str | None, recipe: dict[str, Any], where: str | None = None):
    """(config, ModelConfig) for ``sft`` or ``grpo`` from a recipe mapping, checked as a recipe file is.

    ``command`` ``None``: a recipe with a key only GRPO knows (``num_generations``...) is a GRPO recipe, any
    other an SFT recipe (so an unknown key gets SFT's did-you-mean). ``where`` names the recipe in messages.
    """
    from .configs import PaftGRPOConfig, PaftSFTConfig
    from .trainers.setup import parse_recipe_mapping

    if command is None:
        grpo_only = set(PaftGRPOConfig.__dataclass_fields__) - set(PaftSFTConfig.__dataclass_fields__)
        command = "grpo" if grpo_only & set(recipe) else "sft"
    config_class = {"sft": PaftSFTConfig, "grpo": PaftGRPOConfig}[command]
    return parse_recipe_mapping(config_class, dict(recipe), where or f"{command} recipe")


def train_recipe(command: str, recipe: dict[str, Any]) -> TrainResult:
    """Parse a recipe mapping and train it with ``paft-rl sft`` or ``grpo``'s code."""
    args, model_args = recipe_configs(command, recipe)
    return {"sft": train_sft, "grpo": train_grpo}[command](args, model_args)
