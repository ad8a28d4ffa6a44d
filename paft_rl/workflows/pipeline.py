"""The pipeline workflow: SFT -> (merge LoRA) -> GRPO -> evaluation on held-out templates, from a `PipelineConfig`.

The config names two ordinary recipes and the evaluation::

    sft: launch/recipes/arc_sft_qwen2.5-1.5b.yaml
    grpo: launch/recipes/arc_grpo_qwen2.5-1.5b_from_sft.yaml
    eval: {templates: heldout, limit: 500}     # + optional task (default: the recipes'), models: [base, sft, grpo]
    output_dir: runs/arc_pipeline                         # optional: stage markers, evaluation, summary

The GRPO stage starts from whatever the SFT stage produced: its folder, or, when SFT trained a LoRA adapter,
that adapter merged into full weights. The evaluation uses the prompt settings the models were trained with
(``prompt_format``, ``system_prompt`` of the recipes), so a model trained with a system prompt is judged with it.
Each stage is skipped on a rerun once finished with the same settings, rerun when they changed, and an
interrupted training stage resumes from its last checkpoint. Under ``accelerate launch`` every process runs the
training stages; merging and evaluation run on the main process while the others wait.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from prompt_pool import UserError, atomic_write_text, read_yaml_mapping

from ..eval.folder import result_settings
from ..eval.runner import SPLIT_SPECS, EvalSettings, eval_templates
from ..outputs import check_output
from ..settings import SettingError, Settings, option
from ..stages import (
    MARKER,
    MODELS,
    STARTED,
    consumed_models,
    is_adapter,
    merge_adapter,
    resume_or_overwrite,
    run_recipe,
    run_stage,
    shared_prompt_settings,
    stage_summary,
    trained_precision,
    training_prompt_settings,
)
from ..tasks import get_task

STAGES = ("sft", "grpo")


@dataclass
class PipelineEval(EvalSettings, Settings):
    """The pipeline's ``eval:`` section: every `EvalSettings` option, with the models named by role.

    The pipeline sets ``out`` (its ``output_dir/eval``) and ``labels`` (the role names) itself, and takes
    ``prompt_format`` and ``system_prompt`` from the training recipes: writing any of them differently is refused.
    So is ``pool``: ``templates: heldout`` evaluates the held-out templates of the pool the stages train on
    (with their ``field_aliases``), the templates unseen in training; ``mc_answer_style`` defaults to ``text``
    when a stage trains text answers.

    Args:
        models (`list[str]`, *optional*): roles to evaluate: ``base`` (the first recipe's starting model), ``sft``,
            ``grpo``. Defaults to the stages the pipeline trains.
        prompt_format (`str`, *optional*): defaults to the training recipe's; another value is refused.
        system_prompt (`str`, *optional*): defaults to the training recipe's; another value is refused.
    """

    task: str | None = option(None, help="task name; default: the training recipes' task")
    models: list[Literal["base", "sft", "grpo"]] = option(
        default_factory=list, help="roles to evaluate (base, sft, grpo); default: the stages the pipeline trains")
    out: str = option("", help="set by the pipeline (its output_dir/eval)")
    prompt_format: Literal["auto", "chat", "plain"] | None = option(
        None, help="default: the training recipe's prompt_format (another value is refused)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.out:
            raise SettingError("out", "is set by the pipeline (its output_dir/eval): remove it, or change output_dir")
        if self.labels:
            raise SettingError("labels", "are set by the pipeline (the role names base, sft, grpo): remove them")
        twice = sorted({role for role in self.models if self.models.count(role) > 1})
        if twice:
            raise SettingError("models", f"names {', '.join(twice)} twice")


@dataclass
class PipelineConfig(Settings):
    """A pipeline run: stage recipes, the evaluation, and where the run's records go.

    Args:
        sft (`str`, *optional*): SFT recipe (YAML) of the first stage.
        grpo (`str`, *optional*): GRPO recipe; after an SFT stage it starts from the SFT model.
        eval (`PipelineEval`, *optional*): the evaluation after training; none when absent.
        output_dir (`str`, *optional*): stage markers, recipes as run, the evaluation and ``summary.json``.
    """

    sft: str | None = option(None, help="SFT recipe (YAML) of the first stage")
    grpo: str | None = option(None, help="GRPO recipe; after an SFT stage it starts from the SFT model")
    eval: PipelineEval | None = option(None, help="the evaluation after training (paft-rl eval's options)")
    output_dir: str | None = option(None, help="stage markers, recipes as run, the evaluation and summary.json")

    def __post_init__(self) -> None:
        super().__post_init__()
        recipes = self.recipes()
        if not recipes:
            raise SettingError("sft", "and grpo are both missing: name at least one stage recipe (sft: R.yaml)")
        for stage, path in recipes.items():
            if not Path(path).is_file():
                raise SettingError(stage, f"recipe {path!r} does not exist")
        missing = [role for role in (self.eval.models if self.eval else []) if role != "base" and role not in recipes]
        if missing:
            raise SettingError("eval.models", f"names {', '.join(missing)}, a stage this pipeline has no recipe for")

    def recipes(self) -> dict[str, str]:
        """Stage -> recipe path, in the order the stages run."""
        return {stage: path for stage, path in (("sft", self.sft), ("grpo", self.grpo)) if path is not None}


def stage_recipe(command: str, recipe_path: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The recipe a stage trains with: the file's options plus what the pipeline sets (the starting model)."""
    recipe = read_yaml_mapping(recipe_path, f"{command} recipe")
    recipe.update(overrides)
    recipe.pop("resume_from_checkpoint", None)
    recipe.pop("overwrite", None)  # the pipeline decides: resume its own interrupted stage, else start afresh
    recipe.setdefault("output_dir", f"runs/{command}")
    return recipe


def check_stage_recipes(config: PipelineConfig) -> dict[str, Any]:
    """Parse every stage's recipe before the first stage trains, so a mistake in the last one costs nothing.

    Returns each stage's parsed config (TRL's defaults applied). The GRPO recipe is parsed starting from the SFT
    stage's output, as it will run.
    """
    from ..training import recipe_configs

    parsed = {}
    for command, path in config.recipes().items():
        starts_from_sft = command == "grpo" and config.sft is not None
        overrides = {"model_name_or_path": stage_recipe("sft", config.sft, {})["output_dir"]} if starts_from_sft else {}
        try:
            parsed[command], _ = recipe_configs(command, stage_recipe(command, path, overrides))
        except UserError as error:
            raise UserError(f"{command} recipe {path}: {error}") from None
    return parsed


def check_stages(config: PipelineConfig, evaluation: EvalSettings | None) -> None:
    """Every stage's pre-flight before the first one runs: each recipe as ``paft-rl sft|grpo`` checks it (a GRPO
    stage after SFT with the SFT stage's starting model, which has the architecture and tokenizer of what SFT
    makes), and the evaluation's task, templates and rows."""
    from .preflight import check_evaluation, check_training

    start = stage_recipe("sft", config.sft, {})["model_name_or_path"] if config.sft else None
    for command, path in config.recipes().items():
        check_training(command, stage_recipe(command, path, {}), f"{command} recipe {path}",
                       model=start if command == "grpo" else None)
    if evaluation is not None:
        check_evaluation(evaluation, "eval")


def eval_prompt_settings(config: PipelineConfig, parsed: dict[str, Any]) -> dict[str, str | None]:
    """The prompt settings of the evaluation: the training recipes' (the GRPO recipe's when there is a GRPO stage,
    the SFT recipe's otherwise). Recipes that disagree, or an eval section asking for other prompts, are refused."""
    recipes = config.recipes()
    by_stage = {f"{stage} recipe ({recipes[stage]})": training_prompt_settings(parsed[stage])
                for stage in reversed(STAGES) if stage in parsed}
    settings = shared_prompt_settings(by_stage)
    source = next(iter(by_stage))
    for key, asked in (("prompt_format", config.eval.prompt_format), ("system_prompt", config.eval.system_prompt)):
        if asked is not None and asked != settings[key]:
            raise UserError(f"eval.{key} is {asked!r} but the {source} trains with {settings[key]!r}: remove "
                            f"eval.{key} (the evaluation uses the recipe's) or set it in the recipe")
    return settings


def run_pipeline(config: PipelineConfig, fresh: bool = False) -> dict[str, Any]:
    """Run the stages ``config`` names, skipping those finished with the same settings; returns the summary
    (also written to ``output_dir/summary.json``).

    Args:
        config (`PipelineConfig`): the stages and the evaluation; ``output_dir`` must be set.
        fresh (`bool`, defaults to `False`): delete the run folder first and replace the stages' training output.
    """
    from accelerate import PartialState

    if config.output_dir is None:
        raise UserError("the pipeline needs an output_dir for its stage markers, evaluation and summary: set it")
    parsed = check_stage_recipes(config)
    evaluation = evaluation_settings(config, parsed) if config.eval else None
    check_stages(config, evaluation[1] if evaluation else None)
    state = PartialState()
    out = Path(config.output_dir)
    check_output(out, "output_dir")
    for command, path in config.recipes().items():  # every stage's output, before the first stage trains
        check_stage_output(command, Path(stage_recipe(command, path, {})["output_dir"]), out, fresh)
    if fresh and state.is_main_process and out.exists():
        shutil.rmtree(out)
    state.wait_for_everyone()
    log = print if state.is_main_process else (lambda *_: None)
    sync = (state.is_main_process, state.wait_for_everyone)
    summary: dict[str, Any] = {}

    # ------------------------------------------------------------------ SFT
    if config.sft:
        recipe = stage_recipe("sft", config.sft, {})
        settings = {"recipe": recipe, "precision": trained_precision(parsed["sft"]),
                    MODELS: consumed_models([recipe["model_name_or_path"]], recipe.get("model_revision"))}
        summary["sft"] = run_training("sft", recipe, out, settings, fresh, log, sync)
    # ------------------------------------------------------------------ merge, when GRPO starts from an adapter
    start = summary.get("sft", {}).get("model")
    if config.grpo and start and is_adapter(start):
        merged = Path(f"{start.rstrip('/')}-merged")
        if state.is_main_process:
            summary["merge"] = run_stage("merge LoRA", out / "merge",
                                         lambda resume: {"model": str(merge_adapter(start, merged, replace=True))},
                                         {"after": summary["sft"]["fingerprint"], "model": str(merged),
                                          MODELS: consumed_models([start])}, log)
        state.wait_for_everyone()
        summary["merge"] = stage_summary(out / "merge")
        start = str(merged)
    # ------------------------------------------------------------------ GRPO
    if config.grpo:
        recipe = stage_recipe("grpo", config.grpo, {"model_name_or_path": start} if start else {})
        after = (summary.get("merge") or summary.get("sft") or {}).get("fingerprint")
        settings = {"recipe": recipe, "precision": trained_precision(parsed["grpo"]), "after": after,
                    MODELS: consumed_models([recipe["model_name_or_path"]], recipe.get("model_revision"))}
        summary["grpo"] = run_training("grpo", recipe, out, settings, fresh, log, sync)
    # ------------------------------------------------------------------ evaluation
    if evaluation is not None and state.is_main_process:
        section, settings = evaluation
        after = {name: summary[name]["fingerprint"] for name in STAGES if name in summary}
        summary["eval"] = run_stage("eval", out / "eval", lambda resume: evaluate_stage(settings),
                                    {"eval": result_settings(section), "after": after,
                                     MODELS: consumed_models(settings.models)}, log)
    state.wait_for_everyone()
    if state.is_main_process:
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
        log(f"pipeline done: {out / 'summary.json'}")
    return summary


def train_stage(command: str, recipe: dict[str, Any], out: Path, resume: bool, ours: bool) -> dict[str, Any]:
    """Train a stage recipe with ``paft-rl sft|grpo``'s code; returns where the model went.

    Checkpoints in the recipe's output_dir are resumed only when this pipeline's own stage was interrupted with the
    same settings, replaced when an earlier run of this stage (``ours``) or ``--fresh`` wrote them, and refused
    otherwise: another run's checkpoints are never resumed as this one, nor deleted.
    """
    output_dir = Path(recipe["output_dir"])
    if not resume and not ours:
        check_stage_output(command, output_dir, out, False)
    written = run_recipe(command, {**recipe, **resume_or_overwrite(output_dir, resume)},
                         out / "recipes" / f"{command}.yaml")
    return {"model": recipe["output_dir"], "recipe": written, "base": recipe.get("model_name_or_path")}


def check_stage_output(command: str, output_dir: Path, out: Path, fresh: bool) -> None:
    """A stage's output_dir can be written, and holds no run this pipeline did not start (checkpoints, or the model a
    finished run saved): another run is never resumed as this one, nor replaced, unless ``fresh``."""
    from ..trainers.cycles import existing_checkpoints
    from ..trainers.preflight import finished_model_files

    check_output(output_dir, f"{command} output_dir")
    ours = fresh or (out / command / STARTED).is_file() or (out / command / MARKER).is_file()
    held = [p.name for p in existing_checkpoints(output_dir)] + finished_model_files(output_dir)
    if held and not ours:
        raise UserError(f"{command} output_dir {output_dir} holds {', '.join(held[:3])} of a run this pipeline did not "
                        "start: move them, set another output_dir in the recipe, or pass --fresh to replace them")


def run_training(command: str, recipe: dict[str, Any], out: Path, settings: dict[str, Any], fresh: bool, log,
                 sync) -> dict:
    """A training stage; its output_dir is the pipeline's to replace when an earlier run of it (or --fresh) says so."""
    ours = fresh or (out / command / STARTED).is_file() or (out / command / MARKER).is_file()
    return run_stage(command, out / command, lambda resume: train_stage(command, recipe, out, resume, ours),
                     settings, log, sync)


def eval_task(parsed: dict[str, Any]) -> str:
    """The task the stages train on, the evaluation's default; stages on different tasks need ``eval.task``."""
    tasks = {stage: args.task for stage, args in parsed.items()}
    if len(set(tasks.values())) > 1:
        raise UserError(f"the stages train on different tasks ({', '.join(f'{k}: {v}' for k, v in tasks.items())}): "
                        "set eval.task")
    return next(iter(tasks.values()))


def evaluation_settings(config: PipelineConfig, parsed: dict[str, Any]) -> tuple[PipelineEval, EvalSettings]:
    """The eval section with the training prompt settings filled in, and the `EvalSettings` it runs with, checked
    before the first stage trains: models by role (where each stage will save its model), labelled by role."""
    from ..eval.runner import check_settings

    section = replace(config.eval, **eval_prompt_settings(config, parsed), task=config.eval.task or eval_task(parsed))
    section = replace(section, **eval_pool_settings(section, parsed))
    recipes = {stage: stage_recipe(stage, path, {}) for stage, path in config.recipes().items()}
    where = {"base": next(iter(recipes.values()))["model_name_or_path"],
             **{stage: recipe["output_dir"] for stage, recipe in recipes.items()}}
    roles = section.models or list(recipes)
    settings = EvalSettings(**{**asdict(section), "models": [where[role] for role in roles], "labels": list(roles),
                               "out": str(Path(config.output_dir) / "eval")})
    check_settings(settings)
    eval_templates(get_task(settings.task), settings.templates, settings.field_aliases, settings.pool)
    return section, settings


def eval_pool_settings(section: PipelineEval, parsed: dict[str, Any]) -> dict[str, Any]:
    """The evaluation's pool and answer style, from the stages that train on its task.

    A split in ``templates`` is a split of the pool they train on, so ``heldout`` is what no stage saw; stages on
    different pools, or an ``eval.pool`` other than theirs, are refused. Text answers in any stage make the
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
        raise UserError(f"the stages train on different pools ({named}): set the same pool and field_aliases in "
                        "both recipes, so the held-out templates are unseen by every model, or set eval.templates "
                        "to a pool file")
    pool, aliases = next(iter(pools.values()))
    if section.pool not in (None, pool or get_task(section.task).builtin_pool):
        raise UserError(f"eval.pool is {section.pool!r} but the stages train on {pool or 'the built-in pool'!r}: "
                        "remove eval.pool (templates heldout are those of the pool trained on), or set "
                        "eval.templates to a pool file to evaluate it whole")
    return {**found, "pool": pool, "field_aliases": [*aliases, *section.field_aliases]}


def evaluate_stage(settings: EvalSettings) -> dict[str, Any]:
    """Evaluate the pipeline's models into its ``eval`` folder; the summary keys them by role."""
    from ..eval.report import format_table, write_outputs
    from ..eval.runner import evaluate

    results, records = evaluate(settings)
    write_outputs(results, records, settings.out)
    print(format_table(results))
    return {"models": dict(zip(settings.labels, settings.models)),
            "results": {role: {k: results["models"][m][k] for k in ("mean", "std", "min", "max")}
                        for role, m in zip(settings.labels, settings.models)}}
