"""Helpers for multi-stage runs (``paft-rl pipeline``, ``sequence`` and the demo): stage markers that know what
produced them, LoRA merging, timing.

A stage records the settings (and the fingerprints of the stages it builds on) that produce it: when it starts,
in ``stage.started.json``, and when it finishes, in ``stage.json``. A rerun with the same settings skips a finished
stage and resumes an interrupted one from its last checkpoint; a rerun with other settings says what changed,
clears the stage and runs it again, and so every stage after it (their settings hold its fingerprint). The models
a stage consumes are in its settings by content (`consumed_models`), so a model retrained or edited by hand since
reruns every stage that reads it. A stage folder with files but no marker was not written by the workflow and is
refused, never deleted.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prompt_pool import UserError, atomic_write_text, short_value
from prompt_pool.io import created_mode

from .eval.cache import fingerprint
from .eval.fingerprint import model_fingerprint

MARKER = "stage.json"
# The LoRA settings workflow stages train with unless a recipe says otherwise (rank 16 on the attention projections).
LORA = {"use_peft": True, "lora_r": 16, "lora_alpha": 32,
        "lora_target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
STARTED = "stage.started.json"
# The settings key of the models a stage consumes, {model: fingerprint of its files} (`consumed_models`).
MODELS = "models"


def stage_summary(folder: str | Path) -> dict | None:
    """The summary a finished stage left in ``folder``, or ``None`` when it has not finished."""
    return _read(Path(folder) / MARKER)


def consumed_models(models: list[str], revision: str | None = None) -> dict[str, str]:
    """{model: fingerprint of its files} for a stage's settings (under `MODELS`): the stage reruns when one of the
    models it reads was changed since, by hand or by another run (`paft_rl.eval.fingerprint.model_fingerprint`)."""
    return {str(model): model_fingerprint(str(model), revision) for model in models}


def changed_settings(before: dict, now: dict, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every setting that differs (nested mappings flattened to ``a.b``); a consumed model
    whose files changed as ``model M: files changed (fingerprint old -> new)``."""
    changes = []
    for key in sorted(set(before) | set(now), key=str):
        old, new = before.get(key, "(unset)"), now.get(key, "(unset)")
        if key == MODELS and not prefix and isinstance(old, dict) and isinstance(new, dict):
            changes += [f"model {model}: files changed (fingerprint {old[model]} -> {new[model]})"
                        for model in sorted(set(old) & set(new)) if old[model] != new[model]]
            changes += changed_settings({m: old[m] for m in set(old) - set(new)},
                                        {m: new[m] for m in set(new) - set(old)}, f"{MODELS}.")
        elif isinstance(old, dict) and isinstance(new, dict):
            changes += changed_settings(old, new, f"{prefix}{key}.")
        elif old != new:
            changes.append(f"{prefix}{key}: {short_value(old)} -> {short_value(new)}")
    return changes


def run_stage(name: str, folder: str | Path, work: Callable[[bool], dict[str, Any]], settings: dict[str, Any],
              log=print, sync: tuple[bool, Callable[[], None]] | None = None) -> dict:
    """Run ``work(resume)`` unless ``folder`` holds this stage finished with the same ``settings``.

    ``resume`` is true when the folder holds this very stage, interrupted (a training stage then continues from
    its checkpoint); false when the stage starts afresh. The summary carries the stage's ``fingerprint``, which
    later stages put in their settings. Under several processes, ``sync`` is ``(is_main_process, wait)``: every
    process decides from the same files, only the main one writes or clears markers, and ``work`` runs on all.
    """
    is_main, wait = sync or (True, lambda: None)
    folder = Path(folder)
    wanted = fingerprint(settings)
    done, started = stage_summary(folder), _read(folder / STARTED)
    if done is not None and done.get("fingerprint") == wanted:
        log(f"== {name}: already done ({done.get('seconds', 0):.0f} s earlier), skipping")
        return done
    previous = done or started
    resume = done is None and started is not None and started.get("fingerprint") == wanted
    if previous is None and folder.is_dir() and any(folder.iterdir()):
        raise UserError(f"{folder} holds files this workflow did not write: move them, choose another output "
                        "folder, or pass --fresh to start over")
    if previous is not None and not resume:
        recorded = previous.get("settings")
        changes = changed_settings(recorded, settings) if recorded is not None else ["written by an older paft-rl"]
        log(f"== {name}: settings changed ({'; '.join(changes[:6])}{'; ...' if len(changes) > 6 else ''}): "
            "running it again")
    log(f"== {name}" + (" (resuming)" if resume else ""))
    wait()  # every process has read the markers before the main one changes them
    if is_main:
        if previous is not None and not resume:
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / STARTED, json.dumps({"fingerprint": wanted, "settings": settings}, indent=2,
                                                       default=str) + "\n")
    wait()
    began = time.perf_counter()
    summary = {"stage": name, **(work(resume) or {})}
    summary["seconds"] = round(time.perf_counter() - began, 1)
    summary.update(fingerprint=wanted, settings=settings)
    if is_main:
        atomic_write_text(folder / MARKER, json.dumps(summary, indent=2, default=str) + "\n")
    wait()
    log(f"== {name}: done in {summary['seconds']:.0f} s")
    return summary


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except json.JSONDecodeError:
        return None


def resume_or_overwrite(output_dir: str | Path, resume: bool = True) -> dict[str, Any]:
    """Recipe options that resume a training stage interrupted after a checkpoint, or start it afresh.

    ``resume`` false (the stage's settings changed, or it never ran) always starts afresh.
    """
    from transformers.trainer_utils import get_last_checkpoint

    output_dir = Path(output_dir)
    checkpoint = resume and output_dir.is_dir() and get_last_checkpoint(str(output_dir))
    return {"resume_from_checkpoint": checkpoint} if checkpoint else {"overwrite": True}


def run_recipe(command: str, recipe: dict[str, Any], path: str | Path, resume: bool | None = None) -> str:
    """Train ``recipe`` with ``paft-rl sft|grpo``'s code in this process (`paft_rl.training.train_recipe`), after
    saving it to ``path`` as the record of what ran (people read it; nothing reads it back): the one way every
    workflow trains a stage.

    Args:
        resume (`bool`, *optional*): ``True`` continues the stage from the last checkpoint in its output_dir (it
            was interrupted with the same settings), ``False`` starts it afresh over whatever is there; ``None``
            trains the recipe as it says.
    """
    import yaml

    from .training import recipe_configs, train_grpo, train_sft

    if resume is not None:
        recipe = {**recipe, **resume_or_overwrite(recipe["output_dir"], resume)}
    args, model_args = recipe_configs(command, recipe)  # checked before anything is written
    written = atomic_write_text(path, yaml.safe_dump(recipe, sort_keys=False))
    {"sft": train_sft, "grpo": train_grpo}[command](args, model_args)
    return str(written)


def training_prompt_settings(args) -> dict[str, str | None]:
    """The prompt settings a parsed training config (`PaftSFTConfig` / `PaftGRPOConfig`, defaults applied) trains
    with: what an evaluation of the model it makes must use, so the model is judged on the prompts it learned."""
    return {"prompt_format": args.prompt_format, "system_prompt": args.system_prompt}


def trained_precision(args) -> str:
    """``bf16``, ``fp16`` or ``fp32``: how a parsed training config trains (paft-rl picks by hardware when the
    recipe does not say). Part of a training stage's settings, so a run folder taken to a CPU of another kind
    (or run with its kernels restricted) trains there rather than reusing models trained in another precision."""
    return "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"


def shared_prompt_settings(stages: dict[str, dict[str, str | None]]) -> dict[str, str | None]:
    """The one set of prompt settings several training stages (name -> `training_prompt_settings`) share.

    One evaluation judges every model of a workflow with one prompt format, so stages trained on different
    prompts are refused rather than some of their models judged on prompts they never saw.
    """
    (first, settings), *others = stages.items()
    for name, other in others:
        for key, value in settings.items():
            if other[key] != value:
                raise UserError(f"the {first} trains with {key} {value!r} but the {name} with {other[key]!r}: set the "
                                f"same {key} in both, so the evaluation uses the prompts each model was trained on")
    return dict(settings)


def is_adapter(folder: str | Path) -> bool:
    return (Path(folder) / "adapter_config.json").is_file()


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path, replace: bool = False) -> Path:
    """Merge a LoRA adapter into its base model and save full weights (for a stage that needs them).

    Written into a temporary sibling folder and renamed, so an interrupted merge never looks finished. An existing
    merged model is kept, unless ``replace`` (the adapter changed): then it is swapped for the new one.
    """
    import torch
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file() and not replace:
        return out_dir
    if replace and out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        model = AutoPeftModelForCausalLM.from_pretrained(str(adapter_dir), dtype=torch.float32)
        model.merge_and_unload().save_pretrained(str(staging), safe_serialization=True)
        AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(str(staging))
        staging.chmod(created_mode(folder=True))
        staging.rename(out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out_dir
