"""Configuration dataclasses for the PAFT trainers.

`PaftGRPOConfig` and `PaftSFTConfig` are TRL's `GRPOConfig` / `SFTConfig` plus the options that say where
training prompts come from: the task, its data, the template pool and how templates are drawn. They are
parsed from YAML recipes and ``--key value`` overrides by `trl.TrlParser`, together with TRL's
`ModelConfig` (model path, LoRA options), exactly as TRL's and open-r1's scripts do.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

from trl import GRPOConfig, SFTConfig

from prompt_pool import UserError

from .precision import choose_precision, trains_on_cpu
from .settings import SettingError, _range_problem, check_values, option
from .trainers.draws import DRAWS, UniformDraw

TemplateDrawName = Literal[tuple(DRAWS)]  # every registered draw
PromptFormatName = Literal["auto", "chat", "plain"]
GroupTemplates = Literal["same", "mixed"]


@dataclass
class PaftArguments:
    """Pool options shared by the SFT and GRPO configs.

    Args:
        task (`str`):
            Task name (``gsm8k``, ``hellaswag``, ``synth_arith``, ...): which columns are read, which template
            fields exist and which reward scores completions.
        data (`str`, *optional*):
            Local file or folder, or hub dataset id. Defaults to the task's dataset (or its generator).
        data_split (`str`, *optional*):
            Dataset split. Defaults to the task's train split.
        data_limit (`int`, *optional*):
            Keep only the first ``data_limit`` rows.
        pool (`str`, *optional*):
            Template pool: a file (JSONL, CSV, XLSX...) or a built-in pool name. Defaults to the task's pool.
        field_aliases (`list[str]`, *optional*):
            ``NAME=FIELD`` pairs mapping a pool placeholder to a task field.
        drop_duplicate_templates (`bool`, defaults to `False`):
            Remove repeated template texts before drawing.
        template_draw (`str`, defaults to `"uniform"`):
            ``uniform``: PAFT, a train template drawn per example (per group in GRPO); ``fixed``: one
            user-written template (``fixed_template``) for every example; ``top``: one pool template
            (``template_id``) for every example.
        template_every (`int`, defaults to `1`):
            PAFT's K: an example keeps its template for blocks of K optimizer steps.
        template_seed (`int`, *optional*):
            Seed of the template draws. Defaults to ``seed``.
        fixed_template (`str`, *optional*):
            Template text for ``template_draw: fixed``.
        template_id (`str`, *optional*):
            Pool template id for ``template_draw: top``.
        sapo_every (`int`, defaults to `50`):
            For ``template_draw: sapo`` / ``sapo_reward``: optimizer steps between updates of the draw weights.
        sapo_temperature (`float`, defaults to `0.1`):
            Softmax temperature of the adaptive weights (``softmax(-loss / T)``, or mean reward / T); 0 = argmin.
        sapo_probe_rows (`int`, defaults to `64`):
            For ``sapo``: the first N training rows form the probe set on which templates are scored.
        prompt_format (`str`, defaults to `"auto"`):
            ``chat``: the rendered template is the user message of a chat (tokenizer's chat template);
            ``plain``: the rendered template is the raw prompt text; ``auto``: chat when the tokenizer has a
            chat template.
        system_prompt (`str`, *optional*):
            System message placed before the user message in chat prompts.
        mc_answer_style (`str`, *optional*):
            For multiple choice: the reference completion is the option ``text`` or its ``letter``. Defaults to
            the task's own style, which matches its built-in pool (``letter`` for the benchmark tasks, ``text``
            for ``synth_mc``).
        rewards (`list[str]`, *optional*):
            Names in the reward registry. Defaults to the task's reward. Weights: TRL's ``reward_weights``.
        overwrite (`bool`, defaults to `False`):
            Allow writing checkpoints into an output directory that already holds some.
        eval_templates (`str`, defaults to `"heldout"`):
            Evaluation during training (``eval_strategy: steps``): ``heldout`` (the pool's unseen templates),
            ``train`` or ``all`` of the training pool, or a pool file (every template of it). Each eval row is
            evaluated with every one of these templates, the same (row, template) pairs at every evaluation.
        eval_data (`str`, *optional*):
            Eval rows: a local file or folder, or hub dataset id. Defaults to ``data`` (a hub dataset or the task's
            generator; a single training file has no eval split, so it needs ``eval_data``).
        eval_data_split (`str`, *optional*):
            Split of the eval rows. Defaults to the task's eval split.
        eval_data_limit (`int`, defaults to `32`):
            Keep the first N eval rows (each is evaluated with every eval template).
    """

    task: str | None = option(None, help="Task name (gsm8k, hellaswag, synth_arith, ...).")
    data: str | None = option(None, help="Local data file/folder or hub dataset id. Default: the task's dataset.")
    data_split: str | None = option(None, help="Dataset split. Default: the task's train split.")
    data_limit: int | None = option(None, help="Keep only the first N rows of the dataset.", positive=True)
    pool: str | None = option(None, help="Template pool file or built-in pool name. Default: the task's pool.")
    field_aliases: list[str] | None = option(None, help="NAME=FIELD pairs mapping pool placeholders to task fields.")
    drop_duplicate_templates: bool = option(
        False, help="Drop templates whose text repeats another of the same split.")
    template_draw: TemplateDrawName = option(
        "uniform", help=", ".join(f"{name} ({draw.summary})" for name, draw in DRAWS.items()) + ".")
    template_every: int = option(
        1, help="PAFT's K: an example keeps its drawn template for blocks of K optimizer steps.", positive=True)
    template_seed: int | None = option(None, help="Seed of the template draws. Default: seed.")
    fixed_template: str | None = option(
        None, help="Template text used for every example when template_draw is 'fixed'.")
    template_id: str | None = option(
        None, help="Pool template id used for every example when template_draw is 'top'.")
    sapo_every: int = option(
        50, help="sapo / sapo_reward draws: optimizer steps between weight updates (M).", positive=True)
    sapo_temperature: float = option(
        0.1, help="sapo draws: softmax temperature over -loss (or mean reward); 0 = argmin.",
        interval=("[", 0, None, ")"))
    sapo_probe_rows: int = option(
        64, help="sapo draws: score templates on the first N training rows.", positive=True)
    prompt_format: PromptFormatName = option(
        "auto", help="chat (template rendered into the user message), plain (raw text) or auto (chat when the "
                     "tokenizer has a chat template).")
    system_prompt: str | None = option(None, help="Optional system message for chat prompts.")
    mc_answer_style: Literal["text", "letter"] | None = option(
        None, help="Multiple choice reference completion: option 'text' or 'letter'. Default: the task's own "
                   "(what its built-in pool asks for).")
    rewards: list[str] | None = option(None, help="Reward function names (registry). Default: the task's reward.")
    overwrite: bool = option(False, help="Allow writing into an output_dir that already holds checkpoints.")
    eval_templates: str = option(
        "heldout", help="Evaluation during training: heldout (the pool's unseen templates), train, all, or a pool "
                        "file; every eval row is evaluated with each of them, the same pairs at every evaluation.")
    eval_data: str | None = option(
        None, help="Eval rows: file/folder or hub id. Default: data (a single file needs this).")
    eval_data_split: str | None = option(None, help="Split of the eval rows. Default: the task's eval split.")
    eval_data_limit: int | None = option(
        32, help="Keep the first N eval rows (each evaluated with every eval template).", positive=True)
    # What paft-rl chose for an unset precision, said when training starts (`paft_rl.training`), not when a recipe
    # is parsed: workflows and `select` parse recipes they do not train.
    precision_note: str | None = field(default=None, init=False, repr=False)

    def check_paft_arguments(self) -> None:
        """Raise `UserError` naming the option to change when the pool options do not fit together."""
        check_values(self, PaftArguments)
        check_trl_values(self)
        if not self.task:
            raise UserError("no task given: set `task:` in the recipe or pass --task NAME")
        DRAWS[self.template_draw].check_options(self)
        for name, draw in DRAWS.items():
            if draw.option and getattr(self, draw.option) and self.template_draw != name:
                raise UserError(f"{draw.option} is set but template_draw is {self.template_draw!r}, which ignores "
                                f"it: set template_draw: {name}, or remove {draw.option}")
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise UserError(f"nothing to train: max_steps is {self.max_steps} and num_train_epochs is "
                            f"{self.num_train_epochs}; set max_steps to a positive count, or num_train_epochs > 0 "
                            "with max_steps: -1")
        if self.overwrite and self.resume_from_checkpoint not in (None, False, "", "false", "False", "no", "0"):
            raise UserError("resume_from_checkpoint and overwrite conflict (resume continues the run in output_dir, "
                            "overwrite starts it afresh): keep one of them")


@dataclass
class PaftGroupArguments:
    """GRPO's rollout-group options: over how many templates the completions of one question are spread.

    Args:
        group_templates (`str`, defaults to `"same"`):
            ``same``: the ``num_generations`` completions of a question share one drawn template; ``mixed``: they
            are spread over ``templates_per_group`` distinct train templates of it, in equal shares, so the group's
            advantage compares answers across wordings (TA-GRPO's shared baseline).
        templates_per_group (`int`, *optional*):
            For ``mixed``: the number m of distinct templates in a group. Defaults to ``num_generations`` (one
            completion each); it must divide ``num_generations`` and not exceed the pool's train templates.
    """

    group_templates: GroupTemplates = option(
        "same", help="same (a rollout group shares one drawn template) or mixed (its num_generations completions "
                     "are spread over templates_per_group distinct train templates, in equal shares).")
    templates_per_group: int | None = option(
        None, help="group_templates mixed: distinct templates per group; must divide num_generations. Default: "
                   "num_generations.", positive=True)

    def templates_in_group(self) -> int:
        """m: the distinct templates of one rollout group (1 for ``same``)."""
        if self.group_templates == "same":
            return 1
        return self.templates_per_group or self.num_generations

    def check_group_arguments(self) -> None:
        """Raise `UserError` naming the option to change when the group options cannot hold."""
        check_values(self, PaftGroupArguments)
        if self.group_templates == "same":
            if self.templates_per_group is not None:
                raise UserError("templates_per_group is set but group_templates is 'same', which ignores it: set "
                                "group_templates: mixed, or remove templates_per_group")
            return
        if not issubclass(DRAWS[self.template_draw], UniformDraw):
            pool_draws = [name for name, draw in DRAWS.items() if issubclass(draw, UniformDraw)]
            raise UserError(f"group_templates 'mixed' spreads each group over several pool templates, but "
                            f"template_draw {self.template_draw!r} trains one: use template_draw "
                            f"{', '.join(pool_draws[:-1])} or {pool_draws[-1]}, or group_templates: same")
        templates, generations = self.templates_in_group(), self.num_generations
        if templates > generations:
            raise UserError(f"templates_per_group {templates} exceeds num_generations {generations}: a group of "
                            f"{generations} completions covers at most {generations} templates; lower "
                            "templates_per_group or raise num_generations")
        if generations % templates:
            divisors = [str(d) for d in range(1, generations + 1) if generations % d == 0]
            raise UserError(f"templates_per_group {templates} does not divide num_generations {generations}: each "
                            f"template of a mixed group gets the same number of completions; use one of "
                            f"{', '.join(divisors)}")


@dataclass
class PaftGRPOConfig(GRPOConfig, PaftGroupArguments, PaftArguments):
    """TRL's `GRPOConfig` plus the pool options of `PaftArguments` and the group options of `PaftGroupArguments`
    (one template per rollout group, or several with ``group_templates: mixed``)."""

    def __post_init__(self):
        self.check_paft_arguments()
        self.precision_note = choose_precision(self)
        try:
            super().__post_init__()
        except ValueError as error:
            message = str(error).strip()
            if "num_generations" in message or "generation_batch_size" in message:
                raise UserError(
                    f"{message} A generation batch is per_device_train_batch_size x processes x "
                    f"steps_per_generation completions and must hold whole groups: change "
                    f"per_device_train_batch_size, steps_per_generation or num_generations") from None
            raise UserError(f"invalid GRPO options: {message}") from None
        self.check_group_arguments()


POSITIVE = ("(", 0, None, ")")
AT_LEAST_0 = ("[", 0, None, ")")
# TRL's and transformers' numbers that those libraries check only once the model has loaded (the optimizer, the
# data loader, generation), or never (a negative learning rate, a negative temperature): the range each accepts.
# An option only one of the configs has (max_length: SFT; temperature: GRPO) is checked where it exists.
TRL_RANGES = {
    "per_device_train_batch_size": POSITIVE,
    "per_device_eval_batch_size": POSITIVE,
    "gradient_accumulation_steps": POSITIVE,
    "learning_rate": AT_LEAST_0,
    "weight_decay": AT_LEAST_0,
    "adam_beta1": ("[", 0, 1, ")"),
    "adam_beta2": ("[", 0, 1, ")"),
    "adam_epsilon": AT_LEAST_0,
    "warmup_steps": AT_LEAST_0,
    "dataloader_num_workers": AT_LEAST_0,
    # transformers' set_seed seeds numpy too, which takes 0 .. 2**32 - 1 (torch takes more)
    "seed": ("[", 0, 2**32 - 1, "]"),
    "data_seed": ("[", 0, 2**32 - 1, "]"),
    "max_length": POSITIVE,
    "max_completion_length": POSITIVE,
    "temperature": POSITIVE,  # GRPO samples: logits are divided by it
    "top_p": ("(", 0, 1, "]"),
    "top_k": AT_LEAST_0,
    "repetition_penalty": POSITIVE,
    "num_iterations": POSITIVE,
    "steps_per_generation": POSITIVE,
    "generation_batch_size": POSITIVE,
}


def check_trl_values(config) -> None:
    """Raise `SettingError` for a TRL or transformers option outside the range it works in (`TRL_RANGES`), and for
    a ``max_steps`` that TRL would read as "train by epochs" without being -1."""
    present = {f.name for f in fields(config)}
    for name, interval in TRL_RANGES.items():
        value = getattr(config, name) if name in present else None
        problem = _range_problem(value, interval) if isinstance(value, (int, float)) else None
        if problem is not None:
            raise SettingError(name, problem)
    if config.max_steps == 0 or config.max_steps < -1:
        # transformers trains by num_train_epochs for any max_steps <= 0; only -1 says so on purpose
        raise SettingError("max_steps", f"must be a positive number of optimizer steps, or -1 to train for "
                                        f"num_train_epochs, got {config.max_steps}")


def check_vllm_on_this_machine(args: PaftGRPOConfig) -> None:
    """vLLM options this machine cannot honour, refused before the model loads (a GPU recipe parses anywhere)."""
    if args.use_vllm and args.vllm_enable_sleep_mode and trains_on_cpu(args.use_cpu):
        raise UserError("vllm_enable_sleep_mode: vLLM has no sleep mode on CPU (it stops after loading the model); "
                        "set it to false, or train on a GPU")


@dataclass
class PaftSFTConfig(SFTConfig, PaftArguments):
    """TRL's `SFTConfig` plus the pool options of `PaftArguments` (a template per example, redrawn every K steps)."""

    def __post_init__(self):
        self.check_paft_arguments()
        if DRAWS[self.template_draw].grpo_only:
            raise UserError(f"template_draw {self.template_draw!r} needs rollout rewards: use it with paft-rl grpo, "
                            "or use 'sapo'")
        self.precision_note = choose_precision(self)
        try:
            super().__post_init__()
        except ValueError as error:
            raise UserError(f"invalid SFT options: {str(error).strip()}") from None
