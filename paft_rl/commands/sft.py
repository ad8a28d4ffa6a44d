"""``paft-rl sft --config R.yaml [--key value ...]``: supervised fine-tuning with pool templates (PAFT).

``template_draw: uniform`` redraws each example's template every K steps; ``fixed`` (one user-written
template) and ``top`` (one pool template id) are the single-template baselines. Runs as one process, or under
``accelerate launch`` / ``torchrun`` (DDP, DeepSpeed ZeRO-2/3).
"""

from __future__ import annotations


def main(argv: list[str]) -> int:
    from trl import get_peft_config

    from ..configs import PaftSFTConfig
    from ..trainers.setup import (
        attach_adaptive_draws,
        check_prompt_fits,
        model_init_kwargs,
        parse_recipe,
        prepare_inputs,
        train_and_save,
    )
    from ..trainers.sft import PaftSFTCollator, PaftSFTTrainer

    # ------------------------------------------------------------------ recipe and checks (no model yet)
    args, model_args = parse_recipe(PaftSFTConfig, argv)
    inputs = prepare_inputs(args, model_args.model_name_or_path)
    # At least one completion token must survive truncation, and the prompt must fit the model.
    check_prompt_fits(inputs, 1, args.max_length, "completion token", "raise max_length")
    check_prompt_fits(inputs, 1, inputs.context, "completion token", "the model's context cannot grow")
    model_init_kwargs(args, model_args)

    # ------------------------------------------------------------------ train
    collator = PaftSFTCollator(inputs.tokenizer, inputs.chooser, inputs.conversational, args.system_prompt,
                               args.max_length)
    trainer = PaftSFTTrainer(
        model=model_args.model_name_or_path, args=args, train_dataset=inputs.dataset, collator=collator,
        processing_class=inputs.tokenizer, peft_config=get_peft_config(model_args), eval_dataset=inputs.eval_dataset,
    )
    attach_adaptive_draws(trainer, args, inputs)
    train_and_save(trainer, args)
    return 0
