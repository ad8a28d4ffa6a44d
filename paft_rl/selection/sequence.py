"""Task sequences (SAPO's continual setting): train tasks one after another, choosing each task's template
with the model as it stands at that task's boundary, and measure forgetting and transfer.

Each stage: score the task's train templates under the current model and pick one (SAPO's rule), LoRA-SFT on
that template, fold the adapter into the running model, then evaluate every task of the sequence on its
held-out templates. The accuracy matrix gives AP, BWT and FWT (`paft_rl.selection.continual`).

``adapter_mode: merge`` keeps a full model per stage. ``stack`` keeps only the base model and one LoRA adapter
per task on disk; a stage's model (base plus the adapters so far) is assembled in a scratch folder when it is
needed and deleted afterwards.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prompt_pool import UserError, atomic_write_text, read_yaml_mapping

from ..stages import merge_adapter, run_recipe, run_stage, stage_summary
from .continual import sequence_metrics

ADAPTER_MODES = ("merge", "stack")


@dataclass
class SequenceConfig:
    """A task sequence.

    Args:
        model_name_or_path (`str`): the starting model.
        output_dir (`str`): run folder.
        tasks (`list[dict]`): one SFT recipe fragment per stage (at least ``task``), merged over ``sft``.
        sft (`dict`): SFT options shared by every stage (learning rate, steps, LoRA...).
        select (`dict`): ``rows`` (SAPO's N), ``pick`` (``lowest`` / ``highest``), ``batch_size``.
        eval (`dict`): ``limit`` (questions per template), ``templates`` (``heldout``...), ``batch_size``.
        adapter_mode (`str`): ``merge`` or ``stack``.
    """

    model_name_or_path: str
    output_dir: str
    tasks: list[dict[str, Any]]
    sft: dict[str, Any] = field(default_factory=dict)
    select: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    adapter_mode: str = "merge"

    @classmethod
    def from_yaml(cls, path: str) -> SequenceConfig:
        raw = read_yaml_mapping(path, "sequence config")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise UserError(f"{Path(path).name}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        missing = [k for k in ("model_name_or_path", "output_dir", "tasks") if not raw.get(k)]
        if missing:
            raise UserError(f"{Path(path).name}: set {', '.join(missing)}")
        config = cls(**raw)
        config.check()
        return config

    def check(self) -> None:
        from ..tasks import get_task

        if self.adapter_mode not in ADAPTER_MODES:
            raise UserError(f"adapter_mode must be merge or stack, got {self.adapter_mode!r}")
        if not isinstance(self.tasks, list) or not all(isinstance(t, dict) and t.get("task") for t in self.tasks):
            raise UserError("tasks must be a list of mappings, each with a `task:` name")
        for stage in self.tasks:
            get_task(stage["task"])  # unknown names fail now, not after the first stage trained


def _stage_recipe(config: SequenceConfig, index: int, model: str, out: Path) -> dict[str, Any]:
    stage = {k: v for k, v in config.tasks[index].items() if k not in ("eval_data", "eval_split")}
    recipe = {"use_peft": True, "lora_r": 16, "lora_alpha": 32, "report_to": "none", "save_strategy": "no",
              **config.sft, **stage}
    recipe.update({"model_name_or_path": model, "output_dir": str(out / "adapter"), "overwrite": True})
    return recipe


def _evaluate(model: str, stage: dict[str, Any], config: SequenceConfig, out: Path) -> float:
    """Mean accuracy of ``model`` over the held-out templates of one stage's task.

    A stage may name its evaluation data (``eval_data``, ``eval_split``); by default the task's evaluation split
    of its ``data`` (synthetic tasks generate a separate test stream).
    """
    from ..eval.report import write_outputs
    from ..eval.runner import EvalSettings, evaluate

    options = {"limit": 50, "templates": "heldout", "batch_size": 32, **config.eval}
    data = {"data": stage.get("eval_data", stage.get("data")), "split": stage.get("eval_split")}
    settings = EvalSettings(task=stage["task"], models=[model], out=str(out), progress=False, **data, **options)
    results, records = evaluate(settings)
    write_outputs(results, records, out)
    return float(results["models"][model]["mean"])


def run_sequence(config: SequenceConfig, log=print) -> dict:
    """Run every stage (skipping finished ones) and return the matrix and metrics."""
    from .select import select_template, write_selection

    out = Path(config.output_dir)
    names = [stage["task"] for stage in config.tasks]
    baseline = run_stage("baseline: evaluate every task with the starting model", out / "stage_0",
                         lambda: {"accuracy": [_evaluate(config.model_name_or_path, stage, config, out / "stage_0" / stage["task"])
                                               for stage in config.tasks]}, log)["accuracy"]
    current = config.model_name_or_path
    adapters: list[str] = []
    matrix = []
    for index, name in enumerate(names, start=1):
        folder = out / f"stage_{index}"

        def work(index=index, name=name, folder=folder):
            recipe = _stage_recipe(config, index - 1, current, folder)
            choice = select_template(recipe, config.select.get("rows"), config.select.get("pick", "lowest"),
                                     int(config.select.get("batch_size", 16)))
            write_selection(choice, recipe, f"sequence stage {index}", folder / "selection")
            recipe.update({"template_draw": "top", "template_id": choice.chosen.template_id})
            run_recipe("sft", recipe, folder / "recipe.yaml")
            model = str(merge_adapter(folder / "adapter", folder / "model"))
            accuracy = [_evaluate(model, stage, config, folder / "eval" / stage["task"]) for stage in config.tasks]
            return {"task": name, "template": choice.chosen.template_id, "accuracy": accuracy}

        summary = run_stage(f"stage {index}/{len(names)}: {name}", folder, work, log)
        matrix.append(summary["accuracy"])
        adapters.append(str(folder / "adapter"))
        if config.adapter_mode == "stack" and index > 1:
            # The previous full model was only needed to train this stage; its adapter stays on disk.
            shutil.rmtree(out / f"stage_{index - 1}" / "model", ignore_errors=True)
        current = _stage_model(folder, config, adapters)
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
