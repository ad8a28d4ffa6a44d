"""``paft-rl pipeline --config P.yaml``: SFT -> (merge LoRA) -> GRPO -> evaluation on held-out templates.

The config names two ordinary recipes and the evaluation::

    sft: launch/recipes/arc_sft_qwen2.5-1.5b.yaml
    grpo: launch/recipes/arc_grpo_qwen2.5-1.5b_from_sft.yaml
    eval: {task: arc, templates: heldout, limit: 500}     # + optional models: [base, sft, grpo]
    output_dir: runs/arc_pipeline                         # optional: stage markers, evaluation, summary

The GRPO stage starts from whatever the SFT stage produced: its folder, or, when SFT trained a LoRA adapter,
that adapter merged into full weights. Each stage is skipped on a rerun once finished, and an interrupted
training stage resumes from its last checkpoint. Under ``accelerate launch`` every process runs the training
stages; merging and evaluation run on the main process while the others wait.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from prompt_pool import UserError, atomic_write_text, read_yaml_mapping, unknown_key_error

from ..stages import is_adapter, merge_adapter, resume_or_overwrite, run_recipe, run_stage

EVAL_MODELS = ("base", "sft", "grpo")


EVAL_KEYS = {"task", "templates", "limit", "data", "split", "batch_size", "max_new_tokens", "backend",
             "field_aliases", "top_threshold", "threads", "models"}


def read_config(path: str) -> dict[str, Any]:
    config = read_yaml_mapping(path, "pipeline config")
    for key in config:
        if key not in {"sft", "grpo", "eval", "output_dir"}:
            raise unknown_key_error(key, {"sft", "grpo", "eval", "output_dir"}, Path(path).name)
    for key in config.get("eval") or {}:
        if key not in EVAL_KEYS:
            raise unknown_key_error(key, EVAL_KEYS, f"{Path(path).name}: eval")
    for stage in ("sft", "grpo"):
        if stage in config and not Path(config[stage]).is_file():
            raise UserError(f"{Path(path).name}: {stage} recipe {config[stage]!r} does not exist")
    if "sft" not in config and "grpo" not in config:
        raise UserError(f"{Path(path).name}: name at least one stage recipe (sft:, grpo:)")
    evaluation = config.get("eval") or {}
    if evaluation and not evaluation.get("task"):
        raise UserError(f"{Path(path).name}: eval needs a task")
    bad = sorted(set(evaluation.get("models", [])) - set(EVAL_MODELS))
    if bad:
        raise UserError(f"{Path(path).name}: eval.models may name {', '.join(EVAL_MODELS)}, not {', '.join(bad)}")
    config.setdefault("output_dir", str(Path("runs") / Path(path).name.removesuffix(".yaml").removesuffix(".pipeline")))
    return config


def check_stage_recipes(config: dict[str, Any]) -> None:
    """Parse every stage's recipe before the first stage trains, so a mistake in the last one costs nothing."""
    import tempfile

    from ..configs import PaftGRPOConfig, PaftSFTConfig
    from ..trainers.setup import parse_recipe

    for command, config_class in (("sft", PaftSFTConfig), ("grpo", PaftGRPOConfig)):
        if command in config:
            recipe = read_yaml_mapping(config[command], f"{command} recipe")
            with tempfile.TemporaryDirectory() as scratch:
                checked = Path(scratch) / Path(config[command]).name
                checked.write_text(yaml.safe_dump({**recipe, "overwrite": False, "resume_from_checkpoint": None}))
                try:
                    parse_recipe(config_class, ["--config", str(checked)])
                except UserError as error:
                    raise UserError(f"{command} recipe {config[command]}: {error}") from None


def train_stage(command: str, recipe_path: str, overrides: dict[str, Any], out: Path) -> dict[str, Any]:
    """Run ``paft-rl sft|grpo`` on a recipe with overrides; returns where the model went."""
    recipe = read_yaml_mapping(recipe_path, f"{command} recipe")
    recipe.update(overrides)
    recipe.update(resume_or_overwrite(recipe.get("output_dir", f"runs/{command}")))
    written = run_recipe(command, recipe, out / "recipes" / f"{command}.yaml")
    return {"model": recipe.get("output_dir"), "recipe": written, "base": recipe.get("model_name_or_path")}


def main(argv: list[str]) -> int:
    from accelerate import PartialState

    parser = argparse.ArgumentParser(prog="paft-rl pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    config = read_config(parser.parse_args(argv).config)
    check_stage_recipes(config)
    state = PartialState()
    out = Path(config["output_dir"])
    log = print if state.is_main_process else (lambda *_: None)
    summary: dict[str, Any] = {}

    # ------------------------------------------------------------------ SFT
    if "sft" in config:
        summary["sft"] = run_stage("sft", out / "sft", lambda: train_stage("sft", config["sft"], {}, out), log)
    # ------------------------------------------------------------------ merge, when SFT made an adapter
    start = summary.get("sft", {}).get("model")
    if start and is_adapter(start):
        merged = Path(f"{start.rstrip('/')}-merged")
        if state.is_main_process:
            summary["merge"] = run_stage("merge LoRA", out / "merge", lambda: {"model": str(merge_adapter(start, merged))}, log)
        state.wait_for_everyone()
        start = str(merged)
    # ------------------------------------------------------------------ GRPO
    if "grpo" in config:
        overrides = {"model_name_or_path": start} if start else {}
        summary["grpo"] = run_stage("grpo", out / "grpo", lambda: train_stage("grpo", config["grpo"], overrides, out), log)
    # ------------------------------------------------------------------ evaluation
    if config.get("eval") and state.is_main_process:
        summary["eval"] = run_stage("eval", out / "eval", lambda: evaluate_stage(config["eval"], summary, out), log)
    state.wait_for_everyone()
    if state.is_main_process:
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
        log(f"pipeline done: {out / 'summary.json'}")
    return 0


def evaluate_stage(options: dict[str, Any], summary: dict[str, Any], out: Path) -> dict[str, Any]:
    from ..eval.report import format_table, write_outputs
    from ..eval.runner import EvalSettings, evaluate

    first = summary.get("sft") or summary.get("grpo")
    candidates = {"base": first.get("base"), "sft": summary.get("sft", {}).get("model"),
                  "grpo": summary.get("grpo", {}).get("model")}
    wanted = options.get("models") or [name for name in ("sft", "grpo") if candidates[name]]
    models = [candidates[name] for name in wanted if candidates.get(name)]
    settings = EvalSettings(models=models, out=str(out / "eval"),
                            **{k: v for k, v in options.items() if k in EVAL_KEYS - {"models"}})
    results, records = evaluate(settings)
    write_outputs(results, records, out / "eval")
    print(format_table(results))
    return {"models": dict(zip(wanted, models)),
            "results": {name: {k: results["models"][m][k] for k in ("mean", "std", "min", "max")}
                        for name, m in zip(wanted, models)}}
