"""GRPO step time with mixed-template groups against same-template groups, alternated in one process.

Both sides are `PaftGRPOTrainer` with the same settings (synth_arith, LoRA r16 on the attention projections, 8
completions a step = 2 questions x 4, the same seed and rows); one sets ``group_templates: mixed`` (4 templates per
group, one completion each). Completions have a fixed length (``min_new_tokens``, or vLLM's ``min_tokens``), so
sampling luck does not change the work. Runs alternate ABBA; a step time is the interval between consecutive
``on_step_end`` events (the first step of each run, which includes setup, is dropped), in CPU seconds of one
thread on a CPU (the shared machine's load does not count) and wall seconds on a GPU.

    python bench/grpo_mixed.py                      # the tests' tiny model (tests/tiny.py), HF generation
    python bench/grpo_mixed.py --model smollm2      # SmolLM2-135M-Instruct (make model)
    python bench/grpo_mixed.py --quick              # a smoke run in seconds (the test suite runs it)
    .venv-vllm/bin/python bench/grpo_mixed.py --vllm --model smollm2    # colocated vLLM (make bench-vllm)

Besides the step times, each side prints its prompt tokens per generation batch, the same padded to the batch's
longest prompt, and how many of them an ideal prefix cache would still have to prefill (the distinct prefixes of
the batch's prompts). HF generation and the loss's forward pass pad every prompt to the longest: a mixed batch
holds m times as many distinct prompts, so its longest is longer (the one cost of mixing that grows with the
model). vLLM's automatic prefix caching computes a same-template group's prompt once for its G completions, a mixed
group's m prompts m times (they share at most the text before the question): what prefix sharing loses.

Prints ``grpo_mixed_step_time_ratio`` (mixed / same) last. Goal with HF generation: <= 1.05. Measured numbers and
the machine they come from are in README.md ("Mixed-template groups").
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

from paft_rl.configs import PaftGRPOConfig  # noqa: E402
from paft_rl.tasks import get_task, load_rows  # noqa: E402
from paft_rl.trainers import PaftGRPOTrainer, build_dataset  # noqa: E402

sys.path.append(str(HERE))
from overhead import StepClock, alternate, iqr  # noqa: E402

GROUP = 4


class CountingTrainer(PaftGRPOTrainer):
    """Counts, per generation batch, the prompt tokens, the same padded to the longest prompt (what HF generation and
    the loss's forward pass compute), the distinct prefixes among them (what an ideal prefix cache prefills) and the
    distinct templates of each group."""

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        if self.model.training:
            counts = self.paft_counts
            counts["prompt_tokens"].append(sum(len(ids) for ids in prompt_ids))
            counts["padded_tokens"].append(max(len(ids) for ids in prompt_ids) * len(prompt_ids))
            counts["prefill_tokens"].append(distinct_prefixes(prompt_ids))
            ids = self._paft_group_template_ids
            counts["templates_per_group"] += [len(set(ids[i:i + GROUP])) for i in range(0, len(ids), GROUP)]
        return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                             has_tool_images)


def distinct_prefixes(sequences: list[list[int]]) -> int:
    """Tokens an ideal prefix cache computes for ``sequences``: the nodes of their token trie."""
    root, nodes = {}, 0
    for sequence in sequences:
        node = root
        for token in sequence:
            if token not in node:
                node[token] = {}
                nodes += 1
            node = node[token]
    return nodes


def build(model_path: str, tokenizer, workdir: Path, options, mixed: bool, clock) -> CountingTrainer:
    length = options.length
    fixed_length = {"min_tokens": length} if options.vllm else {"min_new_tokens": length}
    cpu = not torch.cuda.is_available()
    group = dict(group_templates="mixed", templates_per_group=GROUP) if mixed else {}
    args = PaftGRPOConfig(
        output_dir=str(workdir / ("mixed" if mixed else "same")), task="synth_arith", max_steps=options.steps + 1,
        seed=options.seed, per_device_train_batch_size=8, num_generations=GROUP, max_completion_length=length,
        learning_rate=1e-4, report_to="none", save_strategy="no", logging_steps=10**6, disable_tqdm=True,
        use_cpu=cpu, bf16=not cpu, generation_kwargs=fixed_length, model_init_kwargs={"dtype": "float32"} if cpu
        else None, use_vllm=options.vllm, vllm_mode="colocate", **group)
    task = get_task("synth_arith")
    dataset = build_dataset(task, load_rows(task, limit=options.rows, seed=options.seed))
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    trainer = CountingTrainer(model_path, args=args, train_dataset=dataset, processing_class=tokenizer,
                              peft_config=lora, callbacks=[clock])  # the task's own rewards
    trainer.paft_counts = {"prompt_tokens": [], "padded_tokens": [], "prefill_tokens": [], "templates_per_group": []}
    return trainer


def model_folder(name: str, workdir: Path, vllm: bool) -> str:
    """``tiny``: the tests' tiny Llama (vLLM's CPU kernels need its 64-wide heads); ``smollm2``; or a folder."""
    if name == "smollm2":
        from paft_rl.smollm import smollm2_dir

        return str(smollm2_dir())
    if name == "tiny":
        from bench.common import tiny_model

        return tiny_model(workdir, "llama-head64" if vllm else "llama")
    return name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="'tiny' (default), 'smollm2' or a model folder")
    parser.add_argument("--steps", type=int, default=4, help="timed optimizer steps per run")
    parser.add_argument("--repeats", type=int, default=4, help="runs per side, alternated ABBA")
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--length", type=int, default=24, help="completion tokens (fixed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vllm", action="store_true", help="colocated vLLM generation on both sides")
    parser.add_argument("--clock", choices=["cpu", "wall"],
                        help="cpu: this process's CPU seconds, one thread (default without GPU and vLLM); wall")
    parser.add_argument("--quick", action="store_true", help="1 timed step x 2 runs per side, 16 rows, 4 tokens")
    options = parser.parse_args(argv)
    if options.quick:
        options.steps, options.repeats, options.rows, options.length = 1, 2, 16, 4
    # vLLM's engine works in threads of its own: CPU seconds of this one would not see them.
    options.clock = options.clock or ("wall" if torch.cuda.is_available() or options.vllm else "cpu")
    if options.clock == "cpu":
        torch.set_num_threads(1)  # CPU seconds of one thread do not count other users' load or spin-waits
    with tempfile.TemporaryDirectory() as scratch:
        model_path = model_folder(options.model, Path(scratch), options.vllm)
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
        print(f"model {model_path}; {device}; {'vLLM colocate' if options.vllm else 'HF'} generation; "
              f"{options.clock} clock; {options.steps} timed steps x {options.repeats} runs per side", flush=True)
        clocks = {"mixed": StepClock(options.clock), "same": StepClock(options.clock)}
        trainers = {name: build(model_path, tokenizer, Path(scratch), options, name == "mixed", clocks[name])
                    for name in ("mixed", "same")}
        times = dict(zip(("mixed", "same"), alternate(trainers["mixed"], trainers["same"], clocks["mixed"],
                                                      clocks["same"], options.repeats)))
    for name, trainer in trainers.items():
        counts = {key: statistics.fmean(values) for key, values in trainer.paft_counts.items()}
        print(f"{name}: median step {times[name]:.3f} s (IQR {iqr(clocks[name].intervals)}, "
              f"{len(clocks[name].intervals)} steps); {counts['templates_per_group']:.2f} templates per group; prompt "
              f"tokens per generation {counts['prompt_tokens']:.0f}, padded {counts['padded_tokens']:.0f}, with an "
              f"ideal prefix cache {counts['prefill_tokens']:.0f}")
    def ratio(key: str) -> float:
        mixed, same = trainers["mixed"].paft_counts[key], trainers["same"].paft_counts[key]
        return statistics.fmean(mixed) / statistics.fmean(same)

    print(f"padding: mixed batches pad to {ratio('padded_tokens'):.2f}x the prompt tokens of same-template batches "
          f"(their prompts: {ratio('prompt_tokens'):.2f}x)")
    print(f"prefix sharing: mixed groups prefill {ratio('prefill_tokens'):.2f}x the prompt tokens of same-template "
          "groups")
    print(f"grpo_mixed_step_time_ratio {times['mixed'] / times['same']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
