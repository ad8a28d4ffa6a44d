"""Two machines, simulated on one: two ``accelerate launch`` processes with launch/accelerate/multi_node.yaml
(DeepSpeed ZeRO-3, c10d rendezvous) and only the machine fields overridden (``--num_machines 2 --num_processes 2
--machine_rank 0|1 --main_process_ip 127.0.0.1 --main_process_port P``), gloo on CPU, train PAFT GRPO for two
steps. Each "machine" records the prompts that reach TRL's generation dispatch and its full (gathered) weights:
every group keeps one template and prompt across the two machines, and the weights stay equal on both.
The same file is the worker the launchers start."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIG = "launch/accelerate/multi_node.yaml"


def launch_machine(rank: int, port: int, model_dir: Path, out: Path) -> subprocess.Popen:
    """One "machine": its own ``accelerate launch``, as the SLURM script starts one per node."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", CONFIG,
               "--num_machines", "2", "--num_processes", "2", "--machine_rank", str(rank),
               "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
               __file__, str(model_dir), str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)])}
    log = open(out.parent / f"machine{rank}.log", "w")  # noqa: SIM115 - closed with the process below
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


def wait_for_listener(port: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"machine 0 did not open the rendezvous port {port} (exit code {process.poll()})")


@pytest.mark.multiprocess
@pytest.mark.slow
def test_two_machines_share_group_prompts_and_weights(tmp_path):
    pytest.importorskip("deepspeed", reason="the multi-node config uses DeepSpeed: pip install paft-rl[deepspeed]")
    from helpers import assert_groups_share_one_prompt
    from tiny import make_tiny_model_dir

    model_dir = make_tiny_model_dir(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    port = 29900 + os.getpid() % 90
    # On a cluster only machine 0 answers to main_process_ip, so it hosts the rendezvous store. Here both do, and
    # whichever binds first hosts it; start machine 0 first so that it is the host, as on a cluster.
    machines = [launch_machine(0, port, model_dir, out)]
    try:
        wait_for_listener(port, machines[0])
        machines.append(launch_machine(1, port, model_dir, out))
        codes = [machine.wait(timeout=500) for machine in machines]
    finally:
        for machine in machines:
            if machine.poll() is None:
                machine.kill()
                machine.wait()
    logs = [(tmp_path / f"machine{rank}.log").read_text() for rank in (0, 1)]
    assert codes == [0, 0], "\n".join(log[-3000:] for log in logs)
    records = [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [record["world_size"] for record in records] == [2, 2]
    assert [record["zero_stage"] for record in records] == [3, 3]  # the config's ZeRO-3, not plain DDP
    assert_groups_share_one_prompt(records)
    assert records[0]["weights"] == records[1]["weights"]
    assert records[0]["weights"] != records[0]["initial_weights"]


# ---------------------------------------------------------------------------- worker (run by accelerate launch)
def gathered_weights_digest(model) -> str:
    """Digest of the full weights; under ZeRO-3 each rank holds a shard, so gather them first."""
    import deepspeed
    from helpers import weights_digest

    with deepspeed.zero.GatheredParameters(list(model.parameters())):
        return weights_digest(model)


def machine_worker(model_dir: str, output_dir: str) -> None:
    import torch.distributed
    from helpers import GROUP, digit_share, recording_grpo_trainer
    from tiny import make_tiny_tokenizer

    from paft_rl.configs import PaftGRPOConfig
    from paft_rl.tasks import load_rows
    from paft_rl.trainers import build_dataset
    from paft_rl.trainers.preflight import resolve_task

    args = PaftGRPOConfig(output_dir=output_dir, task="synth_arith", max_steps=2, per_device_train_batch_size=6,
                          num_generations=GROUP, max_completion_length=4, learning_rate=0.05, report_to="none",
                          use_cpu=True, bf16=False, save_strategy="no", seed=1, logging_steps=1)
    task = resolve_task(args)
    dataset = build_dataset(task, load_rows(task, limit=12, seed=0))
    trainer = recording_grpo_trainer()(model_dir, [digit_share], args, dataset, processing_class=make_tiny_tokenizer())
    initial = gathered_weights_digest(trainer.model)
    trainer.train()
    record = {"generated": trainer.generated, "weights": gathered_weights_digest(trainer.model),
              "initial_weights": initial, "world_size": torch.distributed.get_world_size(),
              "zero_stage": trainer.accelerator.state.deepspeed_plugin.zero_stage}
    rank = int(os.environ["RANK"])
    (Path(output_dir) / f"rank{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    from paft_rl.cli import close_process_group, leave_distributed_run

    machine_worker(*sys.argv[1:3])
    if close_process_group():  # as the CLI does: a finished rank could otherwise abort at teardown
        leave_distributed_run(0)
