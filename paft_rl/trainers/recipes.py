"""Training recipes: TRL's parser for a Paft config and TRL's `ModelConfig` (model path, LoRA options), read from
a YAML file, ``--key value`` flags or a mapping, with one-line errors; ``--help`` in plain text; and what the command
line hands the trainers from `ModelConfig` (PEFT's `LoraConfig`, the model's loading options)."""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any

from prompt_pool import UserError, first_line, unknown_key_error

from ..settings import SettingError, _range_problem, check_options, parsed, settings_parser


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
    def parse_and_check():
        args, model_args = parse()
        check_model_options(model_args)
        return args, model_args

    args, model_args = parsed(parse_and_check, where)
    if not model_args.model_name_or_path:
        raise UserError("no model given: set model_name_or_path in the recipe or pass --model_name_or_path PATH")
    return args, model_args


# What a recipe sets first, in this order, at the top of ``--help``: the model, the task, its data and templates,
# where the model goes, and how long to train.
FIRST_OPTIONS = ("model_name_or_path", "task", "data", "pool", "output_dir", "max_steps", "num_train_epochs")


def recipe_help(parser, command: str) -> str:
    """``paft-rl sft|grpo --help``: the recipe file, the options a recipe sets first, paft-rl's own options, then
    TRL's and transformers' by the groups their documentation gives them, in plain text."""
    from ..configs import PaftArguments, PaftGroupArguments

    own = {f.name for options in (PaftArguments, PaftGroupArguments) for f in fields(options)}
    actions = [action for action in parser._actions if action.option_strings and action.dest != "help"]
    for action in actions:
        action.help = _plain(action.help or "")
        if action.dest == "bf16":
            action.help += (" paft-rl: on a CPU, when neither bf16 nor fp16 is set, bf16 only where the CPU has native "
                            "bf16 (AVX512-BF16 or AMX), fp32 otherwise.")
        if action.dest == "max_steps":
            action.help += " paft-rl: -1 trains for num_train_epochs; 0 and other negative values are refused."
    by_dest = {action.dest: action for action in actions}
    first = [by_dest[name] for name in FIRST_OPTIONS]
    rest = [action for action in actions if action.dest not in FIRST_OPTIONS]
    sections = [("start here: the model, the task, its data and templates, where the model goes, how long", first),
                ("paft-rl options (template pool and draws)", [a for a in rest if a.dest in own]),
                *library_groups(parser.dataclass_types, [a for a in rest if a.dest not in own])]
    formatter = parser._get_formatter()
    formatter.add_text(f"usage: paft-rl {command} --config R.yaml [--key value ...]")
    formatter.add_text("Every option below can be set in the recipe (key: value) or on the command line "
                       "(--key value, which wins over the recipe).")
    formatter.start_section("recipe")
    formatter.add_text("--config R.yaml     YAML recipe: any option below as key: value")
    formatter.end_section()
    for title, group in sections:
        formatter.start_section(title)
        formatter.add_arguments(group)
        formatter.end_section()
    return formatter.format_help()


def library_groups(dataclass_types, actions: list) -> list[tuple[str, list]]:
    """TRL's and transformers' options in the groups their class documentation gives them (``> Parameters that
    control generation``, ``> Optimizer``...): TRL's ModelConfig first, then the config's groups in the order
    its classes document them (TRL's, then transformers'); deprecated options last."""
    from trl import ModelConfig

    model = "TRL ModelConfig: the model, LoRA and quantization"
    model_options = {f.name for f in fields(ModelConfig)}
    titles: dict[str, str] = {}
    for config_class in dataclass_types:
        for cls in config_class.__mro__:
            for name, title in documented_groups(cls).items():
                titles.setdefault(name, title)
    order = [model, *dict.fromkeys(titles.values()), "other options"]
    groups: dict[str, list] = {}
    for action in actions:
        title = model if action.dest in model_options else titles.get(action.dest, "other options")
        groups.setdefault(title, []).append(action)
    return sorted(groups.items(), key=lambda item: ("Deprecated" in item[0], order.index(item[0])))


def documented_groups(cls) -> dict[str, str]:
    """Parameter name -> its group title in ``cls``'s docstring (HF style: ``> Group`` lines above the parameters
    of each group); empty for a class whose docstring has none."""
    groups, title, previous = {}, None, ""
    library = "TRL" if cls.__module__.startswith("trl") else cls.__module__.split(".")[0]
    for line in (cls.__dict__.get("__doc__") or "").splitlines():
        heading = re.fullmatch(r" {8}> (.+)", line)
        if heading and not heading.group(1).startswith("[!") and not previous.lstrip().startswith(">"):
            topic = _plain(heading.group(1).removeprefix("Parameters that control "))
            title = f"{library} {cls.__name__}: {topic}"
        parameter = re.match(r" {8}(\w+) ?\(", line)
        if parameter and title is not None:
            groups.setdefault(parameter.group(1), title)
        previous = line
    return groups


def _plain(text: str) -> str:
    """Help text without the Markdown / doc-builder markup TRL's docstrings carry."""
    text = re.sub(r"\[`~?(?:[\w.]+\.)?([\w]+)`\]", r"\1", text)  # [`~trl.GRPOConfig`] -> GRPOConfig
    text = re.sub(r"\[([^\]]+)\]\((https?://[^)]+)\)", r"\1 (\2)", text)  # [text](url) -> text (url)
    text = re.sub(r"</?\w+[^>]*>", "", text)  # stray HTML tags
    return " ".join(text.replace("`", "").split())


def check_model_options(model_args) -> None:
    """ModelConfig's LoRA values, which PEFT checks only when it wraps the loaded model (or never: an alpha of 0
    trains an adapter that changes nothing); then PEFT's own `LoraConfig` is built from them."""
    from trl import get_peft_config

    if not model_args.use_peft:
        return
    for name, interval in (("lora_r", ("(", 0, None, ")")), ("lora_alpha", ("(", 0, None, ")")),
                           ("lora_dropout", ("[", 0, 1, ")"))):
        problem = _range_problem(getattr(model_args, name), interval)
        if problem is not None:
            raise SettingError(name, problem)
    try:
        get_peft_config(model_args)
    except ValueError as error:
        raise UserError(f"invalid LoRA options: {first_line(error)}") from None


def peft_config_of(model_args):
    """PEFT's `LoraConfig` from ModelConfig's LoRA options (`None` without ``use_peft``), as TRL's scripts build it.

    A single target name is a module name, as in a longer list (TRL hands a one-item list to PEFT as a regular
    expression over full module paths, which a bare name like ``q_proj`` never matches).
    """
    from trl import get_peft_config

    check_model_options(model_args)  # a ModelConfig built in code was not checked by a parser
    targets = model_args.lora_target_modules
    if isinstance(targets, str) and targets != "all-linear" and re.fullmatch(r"[\w.]+", targets):
        model_args.lora_target_modules = [targets]
    return get_peft_config(model_args)


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
