"""Task sequences (SAPO's continual setting): train tasks one after another, choosing each task's template
with the model as it stands at that task's boundary, and measure forgetting and transfer.

Each stage: score the task's train templates under the current model and pick one (SAPO's rule; or, with
``pick: original``, take the task's own ``template`` with no scoring, SAPO's baseline), LoRA-SFT on that
template, fold the adapter into the running model; then, as a stage of its own (so a changed ``eval:``
evaluates again without training again), evaluate every task of the sequence on its held-out templates. The
accuracy matrix gives AP, BWT and FWT (`paft_rl.selection.continual`).

Every task is scored, trained and evaluated with the same prompt text: its stage recipe's ``prompt_format`` and
``system_prompt`` (the shared ``sft:`` section under the task's own options) reach the selection, the trainer and
each evaluation of that task, at the start and after every stage.

``adapter_mode: merge`` keeps a full model per stage. ``stack`` keeps only the base model and one LoRA adapter
per task on disk; a stage's model (base plus the adapters so far) is assembled in a scratch folder when it is
needed and deleted afterwards.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from prompt_pool import atomic_write_text

from ..eval.fingerprint import folder_fingerprint
from ..eval.folder import result_settings
from ..eval.runner import SPLIT_SPECS, EvalSettings
from ..outputs import check_output
from ..selection.continual import sequence_metrics
from ..settings import SettingError, Settings, option
from ..stages import (
    LORA,
    MODELS,
    consumed_models,
    merge_adapter,
    run_recipe,
    run_stage,
    stage_summary,
    trained_precision,
    training_prompt_settings,
)
from ..tasks import get_task
from ..training import recipe_configs
from .select import SelectOptions, check_rows, select_template, write_selection

# Recipe options each stage's SFT recipe gets from the sequence, refused in an sft section.
SFT_SET_BY_SEQUENCE = {
    "model_name_or_path": "the top-level model_name_or_path starts the sequence; each stage trains the one before",
    "output_dir": "each stage trains into its folder under output_dir",
    "task": "each stage's task is its entry in tasks:",
    "template_draw": "SAPO picks each stage's template",
    "template_id": "SAPO picks each stage's template",
    "fixed_template": "SAPO picks each stage's template",
    "overwrite": "a stage that reruns starts afresh",
}


def check_sft_section(section: dict[str, Any]) -> None:
    for key, reason in SFT_SET_BY_SEQUENCE.items():
        if key in section:
            raise SettingError(f"sft.{key}", f"is set by the sequence ({reason}): remove it")


@dataclass
class SequenceTask(Settings):
    """One stage of a sequence.

    Args:
        task (`str`): task name.
        data (`str`, *optional*): training data (file, folder or hub id); default the task's dataset.
        eval_data (`str`, *optional*): evaluation data; default the task's evaluation split of ``data``
            (synthetic tasks generate a separate test stream).
        eval_split (`str`, *optional*): split of the evaluation data.
        template (`str`, *optional*): with ``select: {pick: original}``, the template text this task trains on
            (the task's original prompt, SAPO's baseline); required then, refused otherwise.
        sft (`dict`, *optional*): this stage's SFT recipe options, over the shared ``sft:`` section.
    """

    task: str = option(help="task name")
    data: str | None = option(None, help="training data (file, folder or hub id); default: the task's dataset")
    eval_data: str | None = option(None, help="evaluation data; default: the task's evaluation split of data")
    eval_split: str | None = option(None, help="split of the evaluation data")
    template: str | None = option(None, help="with select pick original: the template text this task trains on")
    sft: dict[str, Any] = option(help="this stage's SFT recipe options, over the shared sft section",
                                 default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_sft_section(self.sft)


# What each stage's evaluation gets from the sequence rather than from the eval section, and where to set it.
SET_BY_SEQUENCE = {
    "task": "every task of tasks: is evaluated",
    "models": "each stage's model is evaluated",
    "out": "each evaluation goes into its stage folder",
    "labels": "each evaluation has one model, named by its stage",
    "data": "give a task eval_data in tasks:",
    "split": "give a task eval_split in tasks:",
    "prompt_format": "each task is evaluated with its training recipe's; set it in sft: or a task's sft:",
    "system_prompt": "each task is evaluated with its training recipe's; set it in sft: or a task's sft:",
    "pool": "each task's held-out templates are those of the pool it trains on; set pool in sft: or a task's sft:",
    "mc_answer_style": "each task is evaluated with its training recipe's; set it in sft: or a task's sft:",
}


@dataclass
class SequenceEval(EvalSettings, Settings):
    """A sequence's ``eval:`` section: `EvalSettings` for every task after every stage, less what the sequence
    sets itself (`SET_BY_SEQUENCE`: task, models, out, data, prompt settings...), with smaller defaults."""

    task: str | None = option(None, help="set by the sequence")
    models: list[str] = option(help="set by the sequence", default_factory=list)
    out: str | None = option(None, help="set by the sequence")
    labels: list[str] = option(help="set by the sequence", default_factory=list)
    prompt_format: Literal["auto", "chat", "plain"] | None = option(None, help="set by the sequence")
    limit: int | None = option(50, help="first N questions of each task", positive=True)
    batch_size: int = option(32, help="most prompts decoded together", positive=True)
    progress: bool = option(False, help="show a progress bar")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, reason in SET_BY_SEQUENCE.items():
            if getattr(self, name) not in (None, []):
                raise SettingError(name, f"is set by the sequence ({reason}): remove it")

    def for_task(self, **given) -> EvalSettings:
        """The `EvalSettings` of one evaluation: this section's options plus what the sequence ``given``."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(EvalSettings) if f.name not in given}
        return EvalSettings(**shared, **given)


@dataclass
class SequenceSelect(SelectOptions):
    """A sequence's ``select:`` section: `SelectOptions`, and ``pick: original``, which scores nothing and trains
    each task on the ``template`` its entry in ``tasks:`` gives (SAPO's comparison with the original prompt)."""

    pick: Literal["lowest", "highest", "original"] = option(
        "lowest", help="lowest loss (SAPO), highest (the pessimal control) or original (each task's own template)")


@dataclass
class SequenceConfig(Settings):
    """A task sequence (``paft-rl sequence --config S.yaml``).

    Args:
        model_name_or_path (`str`): the starting model.
        output_dir (`str`): run folder.
        tasks (`list[SequenceTask]`): the stages, in order.
        sft (`dict`): SFT recipe options shared by every stage (learning rate, steps, LoRA, prompt format...).
        select (`SequenceSelect`): SAPO's ``rows`` (N), ``pick`` (``lowest`` / ``highest`` / ``original``),
            ``batch_size``.
        eval (`SequenceEval`): evaluation options (``limit``, ``templates``, ``batch_size``...).
        adapter_mode (`str`, defaults to `"merge"`): ``merge`` or ``stack``.
    """

    model_name_or_path: str = option(help="the starting model")
    output_dir: str = option(help="run folder")
    tasks: list[SequenceTask] = option(help="the stages, in order: task, data, eval_data, eval_split, sft")
    sft: dict[str, Any] = option(help="SFT recipe options shared by every stage", default_factory=dict)
    select: SequenceSelect = option(help="SAPO selection: rows, pick, batch_size", default_factory=SequenceSelect)
    eval: SequenceEval = option(help="evaluation options (limit, templates, batch_size...)",
                                default_factory=SequenceEval)
    adapter_mode: Literal["merge", "stack"] = option("merge", help="merge: a full model per stage; stack: the "
                                                                  "base model and one LoRA adapter per task")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_sft_section(self.sft)
        if not self.tasks:
            raise SettingError("tasks", "must list at least one task")
        original = self.select.pick == "original"
        for index, stage in enumerate(self.tasks):
            get_task(stage.task)  # unknown names fail now, not after the first stage trained
            if original and not stage.template:
                raise SettingError(f"tasks[{index}].template", "is required with select pick original: give the "
                                                               "template text this task trains on")
            if stage.template is not None and not original:
                raise SettingError(f"tasks[{index}].template", f"is the template of select pick original, but pick "
                                                               f"is {self.select.pick}: remove it or set pick original")


def stage_recipe(config: SequenceConfig, index: int, model: str, folder: Path) -> dict[str, Any]:
    """The SFT recipe of stage ``index`` (from 0): LoRA defaults, the shared section, the task's own options."""
    stage = config.tasks[index]
    own = {"task": stage.task, **({"data": stage.data} if stage.data is not None else {}), **stage.sft}
    recipe = {**LORA, "report_to": "none", "save_strategy": "no", **config.sft, **own}
    recipe.update({"model_name_or_path": model, "output_dir": str(folder / "adapter"), "overwrite": True})
    if config.select.pick == "original":  # checked with the recipe (the task's fields) before anything runs
        recipe.update({"template_draw": "fixed", "fixed_template": stage.template})
    return recipe


def check_recipes(config: SequenceConfig, where: str) -> list:
    """Every stage's recipe parsed as ``paft-rl sft`` parses it, before anything runs; returns their configs.

    The shared section is checked on its own first, so a bad key is named where it was written
    (``sequence.yaml.sft`` or ``sequence.yaml.tasks[1].sft``). Then every stage's pre-flight (pool, data, tokenizer,
    LoRA targets: `paft_rl.trainers.preflight.preflight`, each stage checked with the starting model, whose architecture
    and tokenizer every stage keeps) and every task's evaluation rows, so that nothing fails after a stage ran.
    """
    from .preflight import check_evaluation, check_training

    out = Path(config.output_dir)
    shared = {**LORA, "task": config.tasks[0].task, **config.sft, "model_name_or_path": config.model_name_or_path,
              "output_dir": str(out)}
    recipe_configs("sft", shared, f"{where}.sft")
    recipes = []
    for i in range(len(config.tasks)):
        recipe = stage_recipe(config, i, config.model_name_or_path, out / f"stage_{i + 1}")
        args, _ = recipe_configs("sft", recipe, f"{where}.tasks[{i}].sft")
        check_rows(config.select, args, f"{where}.select.rows")
        recipes.append(args)
    for i, stage in enumerate(config.tasks):
        check_training("sft", stage_recipe(config, i, config.model_name_or_path, out / f"stage_{i + 1}"),
                       f"{where}.tasks[{i}] ({stage.task})")
        check_evaluation(eval_settings(config, i, recipes[i], config.model_name_or_path, out),
                         f"{where}.tasks[{i}] ({stage.task}) evaluation")
    return recipes


def eval_settings(config: SequenceConfig, index: int, args, model: str, out: Path) -> EvalSettings:
    """The evaluation of task ``index`` with ``model``: the eval section, prompted as that task trains, on the
    held-out templates of the pool it trains on (its ``pool`` and ``field_aliases``; a pool file in
    ``eval.templates`` is evaluated whole instead).

    A task may name its evaluation data (``eval_data``, ``eval_split``); by default the task's evaluation split
    of the data it trains on.
    """
    stage = config.tasks[index]
    pool = {}
    if config.eval.templates in SPLIT_SPECS:
        pool = {"pool": args.pool, "field_aliases": [*(args.field_aliases or ()), *config.eval.field_aliases]}
    return config.eval.for_task(task=stage.task, models=[model], out=str(out), labels=[],
                                data=stage.eval_data or args.data, split=stage.eval_split,
                                mc_answer_style=args.mc_answer_style, **pool, **training_prompt_settings(args))


def _evaluate(config: SequenceConfig, model: str, index: int, args, out: Path) -> float:
    """Mean accuracy of ``model`` over the held-out templates of task ``index`` (`eval_settings`)."""
    from ..eval.report import write_outputs
    from ..eval.runner import evaluate

    settings = eval_settings(config, index, args, model, out)
    results, records = evaluate(settings)
    write_outputs(results, records, out)
    return float(results["models"][model]["mean"])


def run_sequence(config: SequenceConfig, fresh: bool = False, where: str = "sequence", log=print) -> dict:
    """Run every stage (skipping finished ones) and return the matrix and metrics.

    Args:
        config (`SequenceConfig`): the sequence.
        fresh (`bool`): delete the run folder first (after every check passed) and start over.
        where (`str`): the config's name in messages (its file name).
    """
    recipes = check_recipes(config, where)
    out = check_output(config.output_dir, f"{where}.output_dir")
    if fresh and out.exists():
        shutil.rmtree(out)
    names = [stage.task for stage in config.tasks]
    # Every evaluation's settings hold the whole sequence's evaluation (all tasks, in order, with their prompt
    # settings) and the training stage it judges; every training stage's hold its recipe and the stage before it.
    # So reordering the tasks or changing an earlier stage reruns what follows, and changing only the evaluation
    # evaluates again without training again.
    evaluation = {"tasks": [dataclasses.asdict(t) for t in config.tasks], "eval": result_settings(config.eval),
                  "prompts": [training_prompt_settings(args) for args in recipes]}

    def evaluate_all(model: str, folder: Path) -> list[float]:
        return [_evaluate(config, model, i, recipes[i], folder / name) for i, name in enumerate(names)]

    # Every stage's settings hold the model it reads by content: a model changed by hand reruns what reads it.
    base_files = current_files = consumed_models([config.model_name_or_path])
    start = run_stage("baseline: evaluate every task with the starting model", out / "stage_0",
                      lambda resume: {"accuracy": evaluate_all(config.model_name_or_path, out / "stage_0")},
                      {**evaluation, "model": config.model_name_or_path, MODELS: base_files}, log)
    baseline, previous = start["accuracy"], None
    current = config.model_name_or_path
    adapters: list[str] = []
    matrix = []
    for index, name in enumerate(names, start=1):
        folder = out / f"stage_{index}"
        recipe = stage_recipe(config, index - 1, current, folder)

        def train(resume, index=index, folder=folder, recipe=recipe, model=current):
            if config.select.pick == "original":  # nothing to score: the recipe trains on the task's own template
                run_recipe("sft", recipe, folder / "recipe.yaml")
                merge_adapter(folder / "adapter", folder / "model")
                return {"task": names[index - 1], "template": "original", "template_text": recipe["fixed_template"]}
            # The recipe as checked, but scored under the model as it stands at this boundary.
            choice = select_template(recipes[index - 1], model, config.select)
            write_selection(choice, recipe, f"sequence stage {index}", folder / "selection")
            trained = {**recipe, "template_draw": "top", "template_id": choice.chosen.template_id}
            run_recipe("sft", trained, folder / "recipe.yaml")
            merge_adapter(folder / "adapter", folder / "model")
            return {"task": names[index - 1], "template": choice.chosen.template_id}

        trained = run_stage(f"stage {index}/{len(names)}: {name}", folder, train,
                            {"select": dataclasses.asdict(config.select), "adapter_mode": config.adapter_mode,
                             "stage": index, "recipe": recipe, "precision": trained_precision(recipes[index - 1]),
                             "after": previous, MODELS: current_files}, log)
        previous = trained["fingerprint"]
        adapters.append(str(folder / "adapter"))
        current = _stage_model(folder, config, adapters)
        current_files = _stage_model_files(config, current, base_files, adapters)
        judged = run_stage(f"stage {index}/{len(names)}: evaluate every task", folder / "eval",
                           lambda resume, model=current, folder=folder: {
                               "accuracy": evaluate_all(model, folder / "eval")},
                           {**evaluation, "after": previous, MODELS: current_files}, log)
        matrix.append(judged["accuracy"])
        if config.adapter_mode == "stack" and index > 1:
            # The previous full model was only needed to train this stage; its adapter stays on disk.
            shutil.rmtree(out / f"stage_{index - 1}" / "model", ignore_errors=True)
    metrics = sequence_metrics(matrix, baseline)
    report = {"tasks": names, "baseline": baseline, "matrix": matrix, "metrics": metrics,
              "templates": [stage_summary(out / f"stage_{i}")["template"] for i in range(1, len(names) + 1)],
              "adapter_mode": config.adapter_mode}
    atomic_write_text(out / "sequence.json", json.dumps(report, indent=2) + "\n")
    return report


def _stage_model(folder: Path, config: SequenceConfig, adapters: list[str]) -> str:
    """The full model after a stage: kept on disk, or (stack mode) rebuilt from the base and the adapters so far."""
    if (folder / "model" / "config.json").is_file():
        return str(folder / "model")
    return str(assemble_stack(config.model_name_or_path, adapters, folder / "model"))


def _stage_model_files(config: SequenceConfig, model: str, base: dict[str, str], adapters: list[str]) -> dict:
    """What a stage's model is made of, by content (`MODELS` of the stages that read it): the merged model's files,
    or in stack mode the starting model's and each adapter's (the assembled folder is rebuilt on every run, so
    its own files are new each time though the model is the same)."""
    if config.adapter_mode == "merge":
        return consumed_models([model])
    return {**base, **{adapter: folder_fingerprint(adapter) for adapter in adapters}}


def assemble_stack(base: str, adapters: list[str], out_dir: Path) -> Path:
    """Apply LoRA adapters one after another to ``base`` (each was trained on the model before it) and save."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    for adapter in adapters:
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.save_pretrained(str(out_dir), safe_serialization=True)
    AutoTokenizer.from_pretrained(base).save_pretrained(str(out_dir))
    return out_dir


def format_report(report: dict) -> str:
    names = report["tasks"]
    width = max(12, *(len(n) for n in names))
    lines = ["accuracy on held-out templates (rows: after stage; columns: task)",
             " " * 14 + "".join(f"{n:>{width + 2}}" for n in names),
             f"{'start':<14}" + "".join(f"{a:>{width + 2}.3f}" for a in report["baseline"])]
    for index, row in enumerate(report["matrix"], start=1):
        lines.append(f"{'after ' + names[index - 1]:<14}"[:14] + "".join(f"{a:>{width + 2}.3f}" for a in row))
    metrics = report["metrics"]
    lines.append("  ".join(f"{k} {v:+.3f}" if v is not None else f"{k} n/a" for k, v in metrics.items()))
    lines.append("templates chosen: " + ", ".join(report["templates"]))
    return "\n".join(lines)
