"""Two processes (torchrun, gloo, CPU): every GRPO group sees one prompt on every rank, groups draw different
templates, and the weights stay identical across ranks. The same file is the worker torchrun starts."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from helpers import (
    GROUP,
    assert_groups_share_one_prompt,
    assert_weights_trained,
    digit_share,
    recording_grpo_trainer,
    torchrun,
    weights_digest,
)


def read_records(output_dir: Path) -> list[dict]:
    return [json.loads((output_dir / f"rank{rank}.json").read_text()) for rank in (0, 1)]


@pytest.mark.multiprocess
@pytest.mark.slow
def test_two_processes_share_group_prompts_and_weights(tmp_path):
    from tiny import make_tiny_model_dir

    model_dir = make_tiny_model_dir(tmp_path)
    result = torchrun([__file__, "grpo", str(model_dir), str(tmp_path / "out")], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_records(tmp_path / "out")
    assert_groups_share_one_prompt(records)
    assert records[0]["weights"] == records[1]["weights"]
    assert records[0]["weights"] != records[0]["initial_weights"]


@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_on_cpu(stage, tmp_path):
    pytest.importorskip("deepspeed", reason="DeepSpeed is optional: pip install paft-rl[deepspeed]")
    from tiny import make_tiny_model_dir

    model_dir = make_tiny_model_dir(tmp_path)
    result = torchrun([__file__, "grpo", str(model_dir), str(tmp_path / "grpo"), str(stage)], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_groups_share_one_prompt(read_records(tmp_path / "grpo"))
    result = torchrun([__file__, "sft", str(model_dir), str(tmp_path / "sft"), str(stage)], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_weights_trained(model_dir, tmp_path / "sft")  # under ZeRO-3 gathered from the ranks' shards to be saved


# ---------------------------------------------------------------------------- worker (run by torchrun)
def deepspeed_config(stage: int) -> dict:
    """A ZeRO config for CPU runs; "auto" values are filled in from the trainer's arguments."""
    zero = {"stage": stage, "stage3_gather_16bit_weights_on_model_save": stage == 3}  # ZeRO-3: save safetensors
    return {"zero_optimization": zero, "train_micro_batch_size_per_gpu": "auto",
            "train_batch_size": "auto", "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
            "zero_allow_untested_optimizer": True, "zero_force_ds_cpu_optimizer": False}


def grpo_worker(model_dir: str, output_dir: str, **overrides) -> None:
    from tiny import make_tiny_tokenizer

    from paft_rl.configs import PaftGRPOConfig
    from paft_rl.tasks import load_rows
    from paft_rl.trainers import build_dataset
    from paft_rl.trainers.preflight import resolve_task

    options = dict(output_dir=output_dir, task="synth_arith", max_steps=2, per_device_train_batch_size=6,
                   num_generations=GROUP, max_completion_length=4, learning_rate=0.05, report_to="none",
                   use_cpu=True, bf16=False, save_strategy="no", seed=1, logging_steps=1)
    args = PaftGRPOConfig(**{**options, **overrides})
    task = resolve_task(args)
    dataset = build_dataset(task, load_rows(task, limit=12, seed=0))
    zero3 = bool(args.deepspeed) and args.deepspeed.get("zero_optimization", {}).get("stage") == 3
    trainer = recording_grpo_trainer()(model_dir, [digit_share], args, dataset, processing_class=make_tiny_tokenizer())
    initial = None if zero3 else weights_digest(trainer.model)  # ZeRO-3 params are partitioned
    trainer.train()
    final = None if zero3 else weights_digest(trainer.model)
    record = {"generated": trainer.generated, "weights": final, "initial_weights": initial}
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    rank = int(os.environ.get("RANK", "0"))
    (Path(output_dir) / f"rank{rank}.json").write_text(json.dumps(record))


def sft_worker(model_dir: str, output_dir: str, **overrides) -> None:
    from paft_rl.cli import main as cli

    argv = ["sft", "--model_name_or_path", model_dir, "--task", "synth_arith", "--output_dir", output_dir,
            "--data_limit", "16", "--max_steps", "2", "--per_device_train_batch_size", "2", "--report_to", "none",
            "--save_strategy", "no", "--bf16", "false", "--use_cpu", "true", "--max_length", "256"]
    for key, value in overrides.items():
        argv += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    sys.exit(cli(argv))


if __name__ == "__main__":
    mode, model_path, out = sys.argv[1:4]
    extra = {"deepspeed": deepspeed_config(int(sys.argv[4]))} if len(sys.argv) > 4 else {}
    {"grpo": grpo_worker, "sft": sft_worker}[mode](model_path, out, **extra)
    from paft_rl.cli import close_process_group, leave_distributed_run

    if close_process_group():  # as the CLI does: a finished rank could otherwise abort at teardown
        leave_distributed_run(0)
