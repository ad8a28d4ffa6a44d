"""Step-time overhead of the PAFT trainers against plain TRL, alternated in one process.

GRPO: `PaftGRPOTrainer` (prompts rebuilt from the pool before every generation) against `trl.GRPOTrainer`
on a dataset whose ``prompt`` column was rendered beforehand. SFT: `PaftSFTTrainer` (rows rendered and
tokenised by the collator at each optimizer step) against `trl.SFTTrainer` on the same prompt-completion
data tokenised by TRL before training.

Both sides get the *same prompt strings*: the PAFT chooser runs with a K larger than the run, so every row
keeps its position-0 template, and the baseline dataset is rendered with exactly those templates. So the ratio
measures what the wrapper costs (drawing, rendering, tokenising per step, per-template metrics), not the
effect of different prompt lengths. Completions have a fixed length (``min_new_tokens``) so sampling luck does
not change the work. Runs alternate ABBA per repeat; a step time is the interval between consecutive
``on_step_end`` events (the first step of each run, which includes setup, is dropped).

    python bench/overhead.py                     # small random Llama + SmolLM2 tokenizer, LoRA, CPU or GPU
    python bench/overhead.py --model smollm2     # SmolLM2-135M-Instruct itself (make model); slow on CPU
    python bench/overhead.py --repeats 2 --steps 3    # a quick look
    python bench/overhead.py --quick             # the tests' tiny model, 1 step: checks the path, measures nothing

The default model is a randomly initialised 4-layer Llama with SmolLM2's real tokenizer: a small model makes
the wrapper's fixed per-step costs weigh *more* against the step, so it is the stricter test.

Prints ``grpo_step_time_ratio`` and ``sft_step_time_ratio`` last (targets: <= 1.02 and <= 1.05). Measured on
the shared 2-core CPU machine (defaults, CPU clock): GRPO 1.013 and 0.990, SFT 1.001 and 0.998 in two runs; the
step-time interquartile range is about +-5%, so the wrapper's cost is below what this machine can resolve.
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
from peft import LoraConfig  # noqa: E402
from transformers import AutoTokenizer, TrainerCallback  # noqa: E402
from trl import GRPOTrainer, SFTTrainer  # noqa: E402

from paft_rl.configs import PaftGRPOConfig, PaftSFTConfig  # noqa: E402
from paft_rl.formatting import PromptFormat  # noqa: E402
from paft_rl.tasks import get_task, load_rows  # noqa: E402
from paft_rl.trainers import PaftGRPOTrainer, PaftSFTTrainer, build_dataset  # noqa: E402
from paft_rl.trainers.data import example_fields  # noqa: E402
from paft_rl.trainers.preflight import run_rewards  # noqa: E402

NEVER = 10**9  # template_every larger than any run: each row keeps its position-0 template


class StepClock(TrainerCallback):
    """Records the time between consecutive optimizer steps: wall time, or this process's CPU time.

    On a shared CPU machine the wall time of a step swings with other users' load (we saw 7 to 22 s for the
    same step); the CPU seconds this process spends, single-threaded, barely move. On a GPU, CPU time says
    nothing (kernels run asynchronously), so wall time is used there.
    """

    def __init__(self, clock: str = "wall"):
        self.now = time.process_time if clock == "cpu" else time.perf_counter
        self.intervals: list[float] = []
        self._last = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = None

    def on_step_end(self, args, state, control, **kwargs):
        now = self.now()
        if self._last is not None:
            self.intervals.append(now - self._last)
        self._last = now


def common_options(workdir: Path, steps: int, seed: int) -> dict:
    cpu = not torch.cuda.is_available()
    return dict(output_dir=str(workdir), max_steps=steps + 1, seed=seed, report_to="none", save_strategy="no",
                logging_steps=10**6, disable_tqdm=True, use_cpu=cpu, bf16=not cpu, learning_rate=1e-4,
                template_every=NEVER)


def fixed_prompts(dataset: Dataset, chooser, conversational: bool) -> list:
    """The prompt each row gets from the PAFT chooser at step 0 (= every step, since K is NEVER)."""
    prompt_format = PromptFormat(chat=conversational)
    return [prompt_format.build(chooser.render(chooser.choose(row["row_id"], 0), example_fields(row)))
            for row in dataset]


# ---------------------------------------------------------------------------- GRPO
def grpo_trainers(model_path, tokenizer, workdir: Path, run, clock_paft, clock_plain):
    options = dict(common_options(workdir, run.steps, run.seed), task="synth_arith", per_device_train_batch_size=8,
                   num_generations=4, max_completion_length=run.length,
                   generation_kwargs={"min_new_tokens": run.length}, model_init_kwargs={"dtype": "float32"})
    args = PaftGRPOConfig(**options)
    task = get_task("synth_arith")
    dataset = build_dataset(task, load_rows(task, limit=run.rows, seed=run.seed))
    rewards, _ = run_rewards(args, task, None)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    paft = PaftGRPOTrainer(model_path, rewards, args, dataset, processing_class=tokenizer, peft_config=lora,
                           callbacks=[clock_paft])
    plain_data = dataset.add_column("prompt", fixed_prompts(dataset, paft.chooser, True))
    plain = GRPOTrainer(model_path, rewards, args=PaftGRPOConfig(**options), train_dataset=plain_data,
                        processing_class=tokenizer, peft_config=lora, callbacks=[clock_plain])
    return paft, plain


# ---------------------------------------------------------------------------- SFT
def sft_trainers(model_path, tokenizer, workdir: Path, run, clock_paft, clock_plain):
    options = dict(common_options(workdir, run.steps, run.seed), task="synth_mc", per_device_train_batch_size=8,
                   max_length=512, model_init_kwargs={"dtype": "float32"})
    args = PaftSFTConfig(**options)
    task = get_task("synth_mc").with_answer_style("text")
    dataset = build_dataset(task, load_rows(task, limit=run.rows, seed=run.seed))
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    paft = PaftSFTTrainer(model_path, args, dataset, processing_class=tokenizer, peft_config=lora,
                          callbacks=[clock_paft])
    plain_data = Dataset.from_dict({
        "prompt": fixed_prompts(dataset, paft.chooser, True),
        "completion": [[{"role": "assistant", "content": target}] for target in dataset["target"]],
    })
    plain_args = PaftSFTConfig(**{**options, "completion_only_loss": True})
    plain = SFTTrainer(model_path, args=plain_args, train_dataset=plain_data, processing_class=tokenizer,
                       peft_config=lora, callbacks=[clock_plain])
    return paft, plain


def alternate(paft, plain, clock_paft: StepClock, clock_plain: StepClock, repeats: int) -> tuple[float, float]:
    """ABBA runs; returns median step time of each side over all runs."""
    for repeat in range(repeats):
        order = (paft, plain) if repeat % 2 == 0 else (plain, paft)
        for trainer in order:
            trainer.train()
    return statistics.median(clock_paft.intervals), statistics.median(clock_plain.intervals)


def small_model_dir(workdir: Path) -> str:
    """A random 4-layer Llama using SmolLM2's tokenizer, saved under ``workdir``."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from paft_rl.smollm import smollm2_dir

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir())
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    folder = workdir / "small-llama"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def iqr(values: list[float]) -> str:
    quartiles = statistics.quantiles(values, n=4)
    return f"{quartiles[0]:.3f}-{quartiles[2]:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="small",
                        help="model folder, 'smollm2' (SmolLM2-135M-Instruct), 'small' (default; see above) or "
                             "'tiny' (the tests' model)")
    parser.add_argument("--steps", type=int, default=4, help="timed optimizer steps per run")
    parser.add_argument("--repeats", type=int, default=4, help="runs per side, alternated ABBA")
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--length", type=int, default=24, help="GRPO completion tokens (fixed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["grpo", "sft"], help="run one of the two benchmarks")
    parser.add_argument("--clock", choices=["cpu", "wall"],
                        help="cpu: this process's CPU seconds, one thread (default without GPU); wall: elapsed time")
    parser.add_argument("--quick", action="store_true",
                        help="the tests' tiny model, 1 timed step x 2 runs per side, 16 rows, 4 tokens")
    options = parser.parse_args(argv)
    if options.quick:
        options.model, options.steps, options.repeats, options.rows, options.length = "tiny", 1, 2, 16, 4
    options.clock = options.clock or ("wall" if torch.cuda.is_available() else "cpu")
    if options.clock == "cpu":
        torch.set_num_threads(1)  # CPU seconds of one thread do not count other users' load or spin-waits
    scratch = tempfile.TemporaryDirectory()
    if options.model == "smollm2":
        from paft_rl.smollm import smollm2_dir

        options.model = str(smollm2_dir())
    elif options.model == "small":
        options.model = small_model_dir(Path(scratch.name))
    elif options.model == "tiny":
        from bench.common import tiny_model

        options.model = tiny_model(scratch.name)
    tokenizer = AutoTokenizer.from_pretrained(options.model)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU x{torch.get_num_threads()} threads"
    print(f"model {options.model}; {device}; {options.clock} clock; "
          f"{options.steps} timed steps x {options.repeats} runs per side")

    ratios = {}
    for name, build in (("grpo", grpo_trainers), ("sft", sft_trainers)):
        if options.only and options.only != name:
            continue
        clock_paft, clock_plain = StepClock(options.clock), StepClock(options.clock)
        with tempfile.TemporaryDirectory() as workdir:
            paft, plain = build(options.model, tokenizer, Path(workdir), options, clock_paft, clock_plain)
            paft_time, plain_time = alternate(paft, plain, clock_paft, clock_plain, options.repeats)
        ratios[name] = paft_time / plain_time
        print(f"{name}: median {options.clock} s/step PAFT {paft_time:.3f} (IQR {iqr(clock_paft.intervals)}), "
              f"plain TRL {plain_time:.3f} (IQR {iqr(clock_plain.intervals)}); "
              f"{len(clock_paft.intervals)} and {len(clock_plain.intervals)} steps")
    scratch.cleanup()
    for name, ratio in ratios.items():
        print(f"{name}_step_time_ratio {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
