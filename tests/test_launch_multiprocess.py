"""The CPU demo recipe under ``accelerate launch`` with launch/accelerate/cpu_two_processes.yaml: two processes
(gloo) on a tiny model, for a few steps, through ``-m paft_rl.cli`` exactly as the GPU launch lines run it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_cpu_demo_recipe_trains_with_two_accelerate_processes(tmp_path):
    from helpers import assert_adapter_trained
    from tiny import make_tiny_model_dir

    model_dir = make_tiny_model_dir(tmp_path)
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", "launch/accelerate/cpu_two_processes.yaml",
        "--main_process_port", str(29700 + os.getpid() % 200),
        "-m", "paft_rl.cli", "sft", "--config", "launch/recipes/synth_mc_sft_cpu.yaml",
        "--model_name_or_path", str(model_dir), "--output_dir", str(out),
        "--max_steps", "2", "--data_limit", "32", "--per_device_train_batch_size", "4", "--max_length", "256",
        "--save_strategy", "no", "--log_level", "info", "--logging_steps", "1",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    # Trainer's own banner: 4 per device x 2 processes.
    assert re.search(r"Total train batch size \(w\. parallel, distributed & accumulation\) = 8", log), log[-3000:]
    assert_adapter_trained(model_dir, out)  # the recipe trains LoRA; rank 0 saved it
