"""From parsed recipe to a ready trainer: everything that can fail on bad input is checked here, before a
model is loaded or a step is taken, and each failure says which option to change."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from prompt_pool import UserError, first_line, unknown_key_error

from ..eval.models import context_length, resolve_model
from ..formatting import resolve_conversational
from ..settings import check_options, parsed, settings_parser
from ..tasks import Task
from .common import (
    TemplateChooser,
    build_chooser,
    check_fields_available,
    check_output_dir,
    check_resume_point,
    check_sft_data_options,
    existing_checkpoints,
    load_eval_dataset,
    load_eval_pool,
    load_training_dataset,
    longest_prompt_tokens,
    resolve_task,
)


@dataclass
class RunInputs:
    """What a PAFT run trains on, checked."""

    task: Task
    chooser: TemplateChooser
    dataset: datasets.Dataset
    tokenizer: Any
    conversational: bool
    prompt_tokens: int
    context: int | None
    longest: tuple[str, Any] = ("", None)  # (template id, row id) of the longest prompt, for messages
    eval_dataset: datasets.Dataset | None = None  # rows of evaluation during training (eval_strategy not "no")


def recipe_parser(config_class):
    """TRL's parser for (``config_class``, ModelConfig), with one-line errors; ``use_cpu`` defaults to true on a
    machine without a GPU, so CPU runs need nothing beyond the recipe."""
    import torch
    from trl import ModelConfig

    parser = settings_parser((config_class, ModelConfig), prog=f"paft-rl {command_of(config_class)}")
    if not torch.cuda.is_available():
        parser.set_defaults(use_cpu=True)
    return parser


def command_of(config_class) -> str:
    return "grpo" if "GRPO" in config_class.__name__ else "sft"


def parse_recipe(config_class, argv: list[str]):
    """Parse ``--config R.yaml`` plus ``--key value`` overrides into (config, ModelConfig) with `TrlParser`."""
    parser = recipe_parser(config_class)
    if "-h" in argv or "--help" in argv:
        print(recipe_help(parser, command_of(config_class)))
        raise SystemExit(0)
    check_options(parser, argv)
    return _checked_configs(lambda: parser.parse_args_and_config(argv))


def parse_recipe_mapping(config_class, recipe: dict[str, Any], where: str = "recipe"):
    """(config, ModelConfig) from a recipe held as a mapping, exactly as if it had been read from a YAML file."""
    parser = recipe_parser(config_class)
    destinations = {action.dest for action in parser._actions}
    for key in recipe:
        if key not in destinations:
            raise unknown_key_error(key, destinations, where, "option")

    def parse():
        parser.set_defaults_with_config(**recipe)
        return parser.parse_args_into_dataclasses(args=[])

    return _checked_configs(parse, where)


def _checked_configs(parse, where: str | None = None):
    args, model_args = parsed(parse, where)
    if not model_args.model_name_or_path:
        raise UserError("no model given: set model_name_or_path in the recipe or pass --model_name_or_path PATH")
    return args, model_args


def recipe_help(parser, command: str) -> str:
    """``paft-rl sft|grpo --help``: the recipe file first, paft-rl's own options next, then TRL's, in plain text."""
    from dataclasses import fields

    from ..configs import PaftArguments, PaftGroupArguments

    own = {f.name for options in (PaftArguments, PaftGroupArguments) for f in fields(options)}
    actions = [action for action in parser._actions if action.option_strings and action.dest != "help"]
    for action in actions:
        action.help = _plain(action.help or "")
        if action.dest == "bf16":
            action.help += (" paft-rl: on a CPU, when neither bf16 nor fp16 is set, bf16 only where the CPU has native "
                            "bf16 (AVX512-BF16 or AMX), fp32 otherwise.")
    formatter = parser._get_formatter()
    formatter.add_text(f"usage: paft-rl {command} --config R.yaml [--key value ...]")
    formatter.add_text("Every option below can be set in the recipe (key: value) or on the command line "
                       "(--key value, which wins over the recipe).")
    formatter.start_section("recipe")
    formatter.add_text("--config R.yaml     YAML recipe: any option below as key: value")
    formatter.end_section()
    for title, group in ((f"paft-rl options (template pool and draws)", [a for a in actions if a.dest in own]),
                         ("TRL, transformers and model options", [a for a in actions if a.dest not in own])):
        formatter.start_section(title)
        formatter.add_arguments(group)
        formatter.end_section()
    return formatter.format_help()


def _plain(text: str) -> str:
    """Help text without the Markdown / doc-builder markup TRL's docstrings carry."""
    text = re.sub(r"\[`~?(?:[\w.]+\.)?([\w]+)`\]", r"\1", text)  # [`~trl.GRPOConfig`] -> GRPOConfig
    text = re.sub(r"\[([^\]]+)\]\((https?://[^)]+)\)", r"\1 (\2)", text)  # [text](url) -> text (url)
    text = re.sub(r"</?\w+[^>]*>", "", text)  # stray HTML tags
    return " ".join(text.replace("`", "").split())


def resume_value(args) -> bool | str | None:
    """``resume_from_checkpoint``: ``true`` (last checkpoint in output_dir), a path, or nothing."""
    value = args.resume_from_checkpoint
    if isinstance(value, str) and value.lower() in ("true", "last", "yes", "1"):
        return True
    if isinstance(value, str) and value.lower() in ("false", "no", "0", ""):
        return None
    return value


def prepare_inputs(args, model_path: str, tokenizer=None) -> RunInputs:
    """Load and check the pool, the data and the tokenizer; measure the longest prompt."""
    check_output_dir(args.output_dir, resume_value(args), args.overwrite)
    check_resume_point(args, resume_value(args))
    source = resolve_model(model_path)  # a path that cannot be a model fails before the data is read
    task = resolve_task(args)
    chooser = build_chooser(args, task)
    dataset = load_training_dataset(args, task)
    check_fields_available(chooser, dataset)
    eval_dataset = None
    if args.eval_strategy != "no":
        chooser.eval_pool = load_eval_pool(args, task)
        eval_dataset = load_eval_dataset(args, task)
    if tokenizer is None:
        tokenizer = _load_tokenizer(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    conversational = resolve_conversational(args.prompt_format, tokenizer, args.system_prompt)
    check_sft_data_options(args, conversational)
    tokens, template_id, row_id = longest_prompt_tokens(chooser, dataset, tokenizer, conversational,
                                                        args.system_prompt)
    return RunInputs(task, chooser, dataset, tokenizer, conversational, tokens, context_length(source, tokenizer),
                     (template_id, row_id), eval_dataset)


def _load_tokenizer(model_path: str):
    """The model's tokenizer, after checking from small files that ``model_path`` can be a model at all."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_path)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot load the tokenizer of model {model_path!r}: {first_line(error)}; set "
                        "model_name_or_path to a saved model folder or a hub id") from None


def check_prompt_fits(inputs: RunInputs, generated: int, limit: int | None, what: str, fix: str) -> None:
    """Raise when the longest prompt plus ``generated`` tokens exceeds ``limit`` (context or max_length)."""
    if limit is None or inputs.prompt_tokens + generated <= limit:
        return
    template_id, row_id = inputs.longest
    raise UserError(f"the prompt of row {row_id} with template {template_id!r} is {inputs.prompt_tokens} tokens; "
                    f"with {generated} {what} it exceeds {limit} tokens: {fix}, shorten or drop long templates, "
                    f"or use data with shorter rows")


def model_init_kwargs(args, model_args) -> None:
    """Pass ModelConfig's loading options to TRL, which loads the model from its path (ZeRO-3 aware).

    TRL 1.16's ModelConfig has no ``trust_remote_code``; a recipe sets it in ``model_init_kwargs``.
    """
    kwargs = dict(args.model_init_kwargs or {})
    kwargs.setdefault("dtype", model_args.dtype or "auto")
    kwargs.setdefault("revision", model_args.model_revision)
    if model_args.attn_implementation:
        kwargs.setdefault("attn_implementation", model_args.attn_implementation)
    args.model_init_kwargs = kwargs


def adaptive_draws(args, inputs: RunInputs):
    """SAPO's adaptive draw weights for ``template_draw: sapo`` / ``sapo_reward``, to give the trainer when it is
    built (`None` for the other draws). The probe set for ``sapo`` is the first ``sapo_probe_rows`` training rows.
    """
    from ..selection.adaptive import MODES, AdaptiveWeights

    if args.template_draw not in MODES:
        return None
    rows = inputs.dataset.select(range(min(args.sapo_probe_rows, len(inputs.dataset))))
    return AdaptiveWeights(
        inputs.chooser.pool, args.template_draw, args.sapo_every, args.sapo_temperature,
        probe=[inputs.task.example(row) for row in rows], tokenizer=inputs.tokenizer,
        conversational=inputs.conversational, system_prompt=args.system_prompt)


def train_and_save(trainer, args):
    """Train (resuming when asked), then save the final model and tokenizer into output_dir; returns TRL's
    ``TrainOutput``.

    With ``overwrite`` and no resume, the old run's checkpoints are removed first, so the folder never mixes runs.
    """
    resume = resume_value(args)
    if args.overwrite and not resume and trainer.accelerator.is_main_process:
        for checkpoint in existing_checkpoints(args.output_dir):
            shutil.rmtree(checkpoint)
    trainer.accelerator.wait_for_everyone()
    output = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(args.output_dir)
    return output
