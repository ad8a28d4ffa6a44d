"""GRPO step time with colocated vLLM generation against HF ``generate``, SmolLM2-135M-Instruct, alternated in one
process.

Both sides are `PaftGRPOTrainer` with the same recipe settings (those of launch/recipes/synth_arith_grpo_cpu.yaml:
LoRA r16 on the attention projections, 8 prompts x 4 generations a step); one sets ``use_vllm: true,
vllm_mode: colocate``. Completions have a fixed length (``min_new_tokens`` / vLLM's ``min_tokens`` equal to
``max_completion_length``), so sampling luck does not change the work. The vLLM side's step includes what a user
pays: merging LoRA and pushing the weights into the engine before each generation, and the extra forward pass
TRL makes for its importance-sampling correction. Runs alternate ABBA; a step time is the wall time between
consecutive ``on_step_end`` events, so the first step of each run (setup, engine warm-up) is not counted.

Run in the vLLM environment (``make vllm-env``), after ``make model`` converted SmolLM2 once (``make bench-vllm``
does both):

    .venv-vllm/bin/python bench/grpo_vllm.py                 # 3 timed steps x 2 runs per side
    .venv-vllm/bin/python bench/grpo_vllm.py --steps 2 --repeats 1
    .venv-vllm/bin/python bench/grpo_vllm.py --quick     # the tests' tiny model, 1 step: checks the path only

Prints ``grpo_vllm_step_time_ratio`` (HF step time / vLLM step time; above 1 means vLLM is faster) last.
Measured numbers and the machine they come from are in README.md ("vLLM").
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

# bench/rewards.py would shadow the `rewards` package: import from the repository root first.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache on CPU; vLLM's default is larger
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from peft import LoraConfig  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from paft_rl import precision  # noqa: E402
from paft_rl.configs import PaftGRPOConfig  # noqa: E402
from paft_rl.smollm import smollm2_dir  # noqa: E402
from paft_rl.tasks import get_task, load_rows  # noqa: E402
from paft_rl.trainers import PaftGRPOTrainer, build_dataset  # noqa: E402

sys.path.append(str(HERE))
from overhead import StepClock, iqr  # noqa: E402

from bench.common import tiny_model  # noqa: E402

WANTED_FLAGS = {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}


def trainer(model_path: str, tokenizer, workdir: Path, run, use_vllm: bool, clock) -> PaftGRPOTrainer:
    fixed_length = {"min_tokens": run.length} if use_vllm else {"min_new_tokens": run.length}
    args = PaftGRPOConfig(
        output_dir=str(workdir / ("vllm" if use_vllm else "hf")), task="synth_arith", max_steps=run.steps + 1,
        seed=run.seed, per_device_train_batch_size=8, num_generations=4, max_completion_length=run.length,
        learning_rate=1e-4, report_to="none", save_strategy="no", logging_steps=10**6, disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(), generation_kwargs=fixed_length,  # precision as paft-rl picks it
        use_vllm=use_vllm, vllm_mode="colocate")
    task = get_task("synth_arith")
    dataset = build_dataset(task, load_rows(task, limit=run.rows, seed=run.seed))
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    return PaftGRPOTrainer(model_path, args=args, train_dataset=dataset, processing_class=tokenizer,
                           peft_config=lora, callbacks=[clock])  # the task's own rewards


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per run")
    parser.add_argument("--repeats", type=int, default=2, help="runs per side, alternated ABBA")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--length", type=int, default=48, help="completion tokens (fixed)")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--quick", action="store_true",
                        help="the tests' tiny model (64-wide heads), 1 timed step x 2 runs per side, 4 tokens")
    options = parser.parse_args(argv)
    if options.quick:
        options.steps, options.repeats, options.length, options.rows = 1, 2, 4, 16
    scratch = tempfile.TemporaryDirectory()
    model_path = tiny_model(scratch.name, "llama-head64") if options.quick else str(smollm2_dir())
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    flags = " ".join(sorted(precision.cpu_flags() & WANTED_FLAGS)) or "none of avx2/avx512/amx"
    print(f"model {model_path}; {os.cpu_count()} CPUs ({flags}); load average {os.getloadavg()[0]:.1f}; "
          f"native bf16 {precision.cpu_has_native_bf16()}; "
          f"{options.steps} timed steps x {options.repeats} runs per side")
    clocks = {"hf": StepClock("wall"), "vllm": StepClock("wall")}
    with tempfile.TemporaryDirectory() as workdir:
        trainers = {name: trainer(model_path, tokenizer, Path(workdir), options, name == "vllm", clocks[name])
                    for name in ("vllm", "hf")}
        for repeat in range(options.repeats):
            for name in ("hf", "vllm") if repeat % 2 == 0 else ("vllm", "hf"):
                trainers[name].train()  # StepClock times from the end of the run's first step on
                print(f"run {repeat} {name}: torch threads {torch.get_num_threads()}, "
                      f"load average {os.getloadavg()[0]:.1f}", flush=True)
    times = {name: statistics.median(clock.intervals) for name, clock in clocks.items()}
    for name, clock in clocks.items():
        print(f"{name}: median step {times[name]:.2f} s (IQR {iqr(clock.intervals)}, {len(clock.intervals)} steps)")
    print(f"grpo_vllm_step_time_ratio {times['hf'] / times['vllm']:.3f}")
    scratch.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
