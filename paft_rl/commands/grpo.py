"""``paft-rl grpo --config R.yaml [--key value ...]``: GRPO with one pool template per rollout group (PAFT).

Runs as one process, or under ``accelerate launch`` / ``torchrun`` (DDP, DeepSpeed ZeRO-2/3).
"""

from __future__ import annotations


def main(argv: list[str]) -> int:
    from trl import get_peft_config

    from ..configs import PaftGRPOConfig, check_vllm_on_this_machine
    from ..trainers.common import reward_functions
    from ..trainers.grpo import PaftGRPOTrainer
    from ..trainers.setup import (
        attach_adaptive_draws,
        check_prompt_fits,
        model_init_kwargs,
        parse_recipe,
        prepare_inputs,
        train_and_save,
    )

    # ------------------------------------------------------------------ recipe and checks (no model yet)
    args, model_args = parse_recipe(PaftGRPOConfig, argv)
    check_vllm_on_this_machine(args)
    inputs = prepare_inputs(args, model_args.model_name_or_path)
    funcs = reward_functions(args.rewards, inputs.task)
    check_prompt_fits(inputs, args.max_completion_length or 0, inputs.context, "generated tokens",
                      "lower max_completion_length")
    model_init_kwargs(args, model_args)

    # ------------------------------------------------------------------ train
    trainer = PaftGRPOTrainer(
        model=model_args.model_name_or_path, reward_funcs=funcs, args=args, train_dataset=inputs.dataset,
        chooser=inputs.chooser, conversational=inputs.conversational, system_prompt=args.system_prompt,
        processing_class=inputs.tokenizer, peft_config=get_peft_config(model_args), eval_dataset=inputs.eval_dataset,
    )
    attach_adaptive_draws(trainer, args, inputs)
    train_and_save(trainer, args)
    return 0
