"""Helpers for multi-stage runs (``paft-rl pipeline`` and the demo): stage markers, LoRA merging, timing.

A stage is finished when its folder holds ``stage.json``; a rerun skips finished stages and lets an
unfinished training stage resume from its last checkpoint, so an interrupted run loses at most the work
since that checkpoint.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prompt_pool import atomic_write_text

MARKER = "stage.json"


def stage_summary(folder: str | Path) -> dict | None:
    """The summary a finished stage left in ``folder``, or ``None`` when it has not finished."""
    marker = Path(folder) / MARKER
    return json.loads(marker.read_text()) if marker.is_file() else None


def run_stage(name: str, folder: str | Path, work: Callable[[], dict[str, Any]], log=print) -> dict:
    """Run ``work`` unless ``folder`` already holds a finished stage; record its summary and wall time."""
    done = stage_summary(folder)
    if done is not None:
        log(f"== {name}: already done ({done.get('seconds', 0):.0f} s earlier), skipping")
        return done
    log(f"== {name}")
    started = time.perf_counter()
    summary = {"stage": name, **(work() or {})}
    summary["seconds"] = round(time.perf_counter() - started, 1)
    Path(folder).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(folder) / MARKER, json.dumps(summary, indent=2) + "\n")
    log(f"== {name}: done in {summary['seconds']:.0f} s")
    return summary


def resume_or_overwrite(output_dir: str | Path) -> dict[str, Any]:
    """Recipe options that resume a training stage interrupted after a checkpoint, or start it afresh."""
    from transformers.trainer_utils import get_last_checkpoint

    output_dir = Path(output_dir)
    checkpoint = output_dir.is_dir() and get_last_checkpoint(str(output_dir))
    return {"resume_from_checkpoint": checkpoint} if checkpoint else {"overwrite": True}


def run_recipe(command: str, recipe: dict[str, Any], path: str | Path) -> str:
    """Write ``recipe`` to ``path`` (the record of what ran) and run ``paft-rl sft|grpo`` on it in this process."""
    import yaml

    from .commands import grpo, sft

    written = atomic_write_text(path, yaml.safe_dump(recipe, sort_keys=False))
    {"sft": sft, "grpo": grpo}[command].main(["--config", str(written)])
    return str(written)


def is_adapter(folder: str | Path) -> bool:
    return (Path(folder) / "adapter_config.json").is_file()


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Merge a LoRA adapter into its base model and save full weights (for a stage that needs them).

    Written into a temporary sibling folder and renamed, so an interrupted merge never looks finished.
    """
    import torch
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file():
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        model = AutoPeftModelForCausalLM.from_pretrained(str(adapter_dir), dtype=torch.float32)
        model.merge_and_unload().save_pretrained(str(staging), safe_serialization=True)
        AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(str(staging))
        staging.chmod(0o755)
        staging.rename(out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out_dir
