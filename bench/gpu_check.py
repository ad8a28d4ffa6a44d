"""paft-rl on one CUDA GPU: GRPO step times and peak memory of PAFT same-template groups, mixed groups and plain TRL
(alternated in one process, bf16), then SFT under DeepSpeed ZeRO-2 (torchrun, one process). Run by
``bench/gpu_check.sh``, which installs the carried wheels first; ``--cpu`` is the smoke run on a CPU (the tests'
tiny model, fp32, one timed step a run).

    python bench/gpu_check.py --model smollm2-config/      # GPU: SmolLM2-135M (random weights if none are there)
    python bench/gpu_check.py --cpu                        # CPU smoke run, tiny model

The model: a folder with weights is used as it is; a folder with only ``config.json`` and the tokenizer (what fits in
a 64 MiB transfer: SmolLM2-135M's weights do not) gets weights initialised at random from that config. Step time
and memory depend on the shapes, the batch and the fixed completion length (``min_new_tokens``), not on the
weights' values. The three GRPO sides see the same rows; same and plain TRL see the same prompt strings (each row
keeps its first template: K larger than the run), mixed spreads each group over ``num_generations`` templates.

Prints, last: ``grpo_same_vs_trl_step_time_ratio``, ``grpo_mixed_vs_same_step_time_ratio`` and the SFT ZeRO-2 line.
Memory: the peak of ``torch.cuda.max_memory_allocated`` during a side's runs above what was allocated when each
run started (the weights of all three trainers stay resident), the largest over its runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# bench/rewards.py would shadow the `rewards` package: import from the repository root first.
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

GIB = 2**30
SIDES = ("same", "mixed", "plain_trl")


def settings(cpu: bool) -> dict:
    """GRPO and SFT sizes: a real GPU step, or seconds on a CPU."""
    if cpu:
        return dict(prompts=2, generations=4, length=4, steps=1, repeats=2, rows=16, sft_steps=2, sft_batch=4)
    return dict(prompts=8, generations=8, length=64, steps=5, repeats=2, rows=256, sft_steps=10, sft_batch=16)


# ---------------------------------------------------------------------------- model
def model_folder(spec: str | None, scratch: Path, cpu: bool) -> str:
    """A loadable model folder: the tests' tiny model (``tiny``), a folder with weights, or one initialised at
    random from a folder's config.json and tokenizer."""
    if spec in (None, "tiny"):
        from bench.common import tiny_model

        return tiny_model(scratch)
    folder = Path(spec)
    if any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin")):
        return str(folder)
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(folder)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32 if cpu else torch.bfloat16)
    target = scratch / f"{folder.name}-random"
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(folder).save_pretrained(target)
    print(f"model: {folder.name} shapes, weights initialised at random ({model.num_parameters() / 1e6:.0f}M "
          "parameters)", flush=True)
    return str(target)


# ---------------------------------------------------------------------------- GRPO
def grpo_trainers(model_path: str, tokenizer, workdir: Path, size: dict, cpu: bool, clocks: dict) -> dict:
    from overhead import NEVER, fixed_prompts
    from trl import GRPOTrainer

    from paft_rl.configs import PaftGRPOConfig
    from paft_rl.tasks import get_task, load_rows
    from paft_rl.trainers import PaftGRPOTrainer, build_dataset
    from paft_rl.trainers.preflight import run_rewards

    common = dict(task="synth_arith", max_steps=size["steps"] + 1, seed=0, template_every=NEVER,
                  per_device_train_batch_size=size["prompts"] * size["generations"],
                  num_generations=size["generations"], max_completion_length=size["length"],
                  generation_kwargs={"min_new_tokens": size["length"]}, learning_rate=1e-6, report_to="none",
                  save_strategy="no", logging_steps=10**6, disable_tqdm=True, use_cpu=cpu, bf16=not cpu,
                  model_init_kwargs={"dtype": "float32" if cpu else "bfloat16"})
    task = get_task("synth_arith")
    dataset = build_dataset(task, load_rows(task, limit=size["rows"], seed=0))
    rewards, _ = run_rewards(PaftGRPOConfig(output_dir=str(workdir / "same"), **common), task, None)
    trainers = {}
    for side, group in (("same", {}), ("mixed", {"group_templates": "mixed"})):
        args = PaftGRPOConfig(output_dir=str(workdir / side), **common, **group)
        trainers[side] = PaftGRPOTrainer(model_path, rewards, args, dataset, processing_class=tokenizer,
                                         callbacks=[clocks[side]])
    chooser = trainers["same"].chooser
    plain_data = dataset.add_column("prompt", fixed_prompts(dataset, chooser, True))
    trainers["plain_trl"] = GRPOTrainer(model_path, rewards, args=PaftGRPOConfig(
        output_dir=str(workdir / "plain"), **common), train_dataset=plain_data, processing_class=tokenizer,
        callbacks=[clocks["plain_trl"]])
    return trainers


def run_grpo(model_path: str, workdir: Path, size: dict, cpu: bool) -> dict[str, float]:
    from overhead import StepClock, iqr
    from transformers import AutoTokenizer

    clock = "wall"  # on a GPU, CPU seconds say nothing; on the CPU smoke run only the lines matter
    clocks = {side: StepClock(clock) for side in SIDES}
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    trainers = grpo_trainers(model_path, tokenizer, workdir, size, cpu, clocks)
    peaks = dict.fromkeys(SIDES, 0.0)
    for repeat in range(size["repeats"]):
        for side in SIDES if repeat % 2 == 0 else tuple(reversed(SIDES)):
            if not cpu:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                resident = torch.cuda.memory_allocated()
            trainers[side].train()
            if not cpu:
                torch.cuda.synchronize()
                peaks[side] = max(peaks[side], (torch.cuda.max_memory_allocated() - resident) / GIB)
    times = {side: statistics.median(clocks[side].intervals) for side in SIDES}
    for side in SIDES:
        memory = f"{peaks[side]:.2f} GiB" if not cpu else "n/a on CPU"
        print(f"grpo {side}: median step {times[side]:.3f} s (IQR {iqr(clocks[side].intervals)}, "
              f"{len(clocks[side].intervals)} steps); peak memory above resident {memory}", flush=True)
    return times


# ---------------------------------------------------------------------------- SFT under ZeRO-2
def zero2_config() -> dict:
    return {"zero_optimization": {"stage": 2}, "bf16": {"enabled": "auto"}, "train_micro_batch_size_per_gpu": "auto",
            "train_batch_size": "auto", "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
            "zero_allow_untested_optimizer": True, "zero_force_ds_cpu_optimizer": False}


def sft_worker(model_path: str, output_dir: str, cpu: bool) -> None:
    """Runs under torchrun: PAFT SFT with DeepSpeed ZeRO-2; rank 0 prints step time, peak memory and losses."""
    from overhead import StepClock
    from transformers import AutoTokenizer

    from paft_rl.cli import close_process_group
    from paft_rl.configs import PaftSFTConfig
    from paft_rl.tasks import get_task, load_rows
    from paft_rl.trainers import PaftSFTTrainer, build_dataset

    size = settings(cpu)
    args = PaftSFTConfig(output_dir=output_dir, task="synth_arith", max_steps=size["sft_steps"] + 1, seed=0,
                         per_device_train_batch_size=size["sft_batch"], max_length=256, learning_rate=1e-5,
                         report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True, use_cpu=cpu,
                         bf16=not cpu, deepspeed=zero2_config(),
                         model_init_kwargs={"dtype": "float32" if cpu else "bfloat16"})
    task = get_task("synth_arith")
    dataset = build_dataset(task, load_rows(task, limit=size["sft_batch"] * (size["sft_steps"] + 1), seed=0))
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    clock = StepClock("wall")
    trainer = PaftSFTTrainer(model_path, args, dataset, processing_class=tokenizer, callbacks=[clock])
    if not cpu:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    stage = trainer.accelerator.state.deepspeed_plugin.zero_stage if trainer.is_deepspeed_enabled else None
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    if trainer.accelerator.is_main_process:
        memory = f"{torch.cuda.max_memory_allocated() / GIB:.2f} GiB" if not cpu else "n/a on CPU"
        print(f"sft zero{stage}: {len(losses)} steps, median step {statistics.median(clock.intervals):.3f} s, "
              f"peak memory {memory}, loss {losses[0]:.3f} -> {losses[-1]:.3f}", flush=True)
    close_process_group()


def run_sft(model_path: str, workdir: Path, cpu: bool) -> int:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port", "29533",
               __file__, "--sft-worker", model_path, str(workdir / "sft")] + (["--cpu"] if cpu else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(command, env=env).returncode


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="'tiny' (default on CPU), a model folder, or a folder with config.json and "
                                        "the tokenizer only (random weights)")
    parser.add_argument("--cpu", "--quick", action="store_true", help="smoke run on the CPU (fp32, tiny sizes)")
    parser.add_argument("--sft-worker", nargs=2, metavar=("MODEL", "OUTPUT_DIR"), help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    sys.path.append(str(HERE))  # overhead.py's clock and fixed prompts
    if options.sft_worker:
        sft_worker(*options.sft_worker, options.cpu)
        return 0
    if not options.cpu and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU here; run with --cpu for the smoke run", file=sys.stderr)
        return 2
    import transformers
    import trl

    device = "CPU" if options.cpu else torch.cuda.get_device_name(0)
    print(f"gpu_check: {device}; torch {torch.__version__}, transformers {transformers.__version__}, "
          f"trl {trl.__version__}", flush=True)
    size = settings(options.cpu)
    with tempfile.TemporaryDirectory() as scratch:
        model_path = model_folder(options.model, Path(scratch), options.cpu)
        print(f"grpo: {size['prompts']} prompts x {size['generations']} completions of {size['length']} tokens, "
              f"{size['steps']} timed steps x {size['repeats']} runs per side, alternated", flush=True)
        times = run_grpo(model_path, Path(scratch), size, options.cpu)
        print(f"grpo_same_vs_trl_step_time_ratio {times['same'] / times['plain_trl']:.3f}")
        print(f"grpo_mixed_vs_same_step_time_ratio {times['mixed'] / times['same']:.3f}", flush=True)
        status = run_sft(model_path, Path(scratch), options.cpu)
    print(json.dumps({"sft_zero2_exit_status": status}))
    return status


if __name__ == "__main__":
    sys.exit(main())
