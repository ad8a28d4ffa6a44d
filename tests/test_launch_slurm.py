"""The multi-node SLURM script, without a cluster: its dry-run plan for 2 and 4 nodes, its `vllm serve` flags
against the command TRL builds for server mode, its bad-input messages, and one real run in which ``srun``,
``vllm``, ``curl`` and ``accelerate`` are small shell fakes (health wait, one launcher per node, clean shutdown)."""

from __future__ import annotations

import shlex

import pytest
from helpers import dry_run, run_slurm_script

RECIPE = "launch/recipes/gsm8k_grpo_qwen2.5-7b_multinode.yaml"


def plan_commands(plan: str, prefix: str) -> list[tuple[str, list[str], list[str]]]:
    """(node, srun options, command) of every plan line that starts with ``prefix``."""
    found = []
    for line in plan.splitlines():
        if line.startswith(prefix):
            node = line.split(":", 1)[0].split()[-1]
            argv = shlex.split(line.split(": ", 1)[1])
            assert argv[0] == "srun"
            options = []
            for word in argv[1:]:
                if not word.startswith("--"):
                    break
                options.append(word)
            assert f"--nodelist={node}" in options
            found.append((node, options, argv[1 + len(options):]))
    return found


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.mark.parametrize("nodes", [2, 4])
def test_dry_run_plan_trains_on_all_but_the_last_node(nodes):
    plan = dry_run(nodes, [RECIPE, "--max_steps", "10"])
    server = f"node{nodes:02d}"
    trainers = plan_commands(plan, "train node")
    assert [node for node, _, _ in trainers] == [f"node{i:02d}" for i in range(1, nodes)]
    for rank, (_, _, launch) in enumerate(trainers):
        assert launch[:2] == ["accelerate", "launch"]
        assert option(launch, "--num_machines") == str(nodes - 1)
        assert option(launch, "--num_processes") == str((nodes - 1) * 8)
        assert option(launch, "--machine_rank") == str(rank)
        assert option(launch, "--main_process_ip") == "node01"
        assert option(launch, "--rdzv_backend") == "c10d"
        assert option(launch, "--config_file") == "launch/accelerate/multi_node.yaml"
        assert launch[launch.index("-m"):launch.index("-m") + 3] == ["-m", "paft_rl.cli", "grpo"]
        assert option(launch, "--config") == RECIPE
        assert option(launch, "--vllm_mode") == "server"
        assert option(launch, "--vllm_server_host") == server
        assert option(launch, "--vllm_server_port") == "8000"
        assert launch[-2:] == ["--max_steps", "10"]  # user overrides come last and win
    (node, _, vllm), = plan_commands(plan, "vllm node")
    assert node == server
    assert vllm[:2] == ["env", "VLLM_SERVER_DEV_MODE=1"]
    serve = vllm[2:]
    assert serve[:3] == ["vllm", "serve", "Qwen/Qwen2.5-7B-Instruct"] and option(serve, "--port") == "8000"
    assert f"http://{server}:8000/health" in plan
    assert plan.rstrip().endswith("dry run: nothing started")


def test_vllm_flags_are_those_trl_server_mode_needs():
    """Our `vllm serve` line carries every flag of the command `trl vllm-serve` builds (TRL 1.16), same values."""
    from trl.scripts.vllm_serve import ScriptArguments, build_command

    plan = dry_run(3, [RECIPE], VLLM_PORT="8011", VLLM_TP="2", VLLM_GPU_MEMORY_UTILIZATION="0.85")
    (_, _, vllm), = plan_commands(plan, "vllm node")
    ours = vllm[vllm.index("serve"):]
    trl = build_command(ScriptArguments(model="Qwen/Qwen2.5-7B-Instruct", port=8011, tensor_parallel_size=2,
                                        gpu_memory_utilization=0.85))
    trl = trl[trl.index("serve"):]
    # TRL adds --enable-scale-out only when vLLM >= 0.30 is installed; the pinned vLLM extra is 0.31.
    trl_flags = {word: trl[i + 1] if i + 1 < len(trl) and not trl[i + 1].startswith("--") else None
                 for i, word in enumerate(trl) if word.startswith("--")}
    for flag, value in trl_flags.items():
        if flag in ("--kv-cache-dtype", "--model-impl", "--uvicorn-log-level"):
            continue  # vLLM's own defaults, which TRL spells out
        assert flag in ours, f"vllm serve lacks {flag}"
        if value is not None:
            assert option(ours, flag) == value, flag
    assert "--enable-scale-out" in ours


def test_settings_and_model_override_reach_the_commands():
    plan = dry_run(3, [RECIPE, "--model_name_or_path", "/models/sft-out"], GPUS_PER_NODE="4", VLLM_PORT="8123",
                   MAIN_PORT="29999", ACCELERATE_CONFIG="launch/accelerate/zero3_offload.yaml", SLURM_CPUS_ON_NODE="64")
    (_, _, vllm), = plan_commands(plan, "vllm node")
    assert vllm[vllm.index("serve") + 1] == "/models/sft-out"
    for _, options, argv in plan_commands(plan, "train node"):
        assert "--cpus-per-task=64" in options  # a step gets one CPU unless told
        assert option(argv, "--num_processes") == "8" and option(argv, "--main_process_port") == "29999"
        assert option(argv, "--vllm_server_port") == "8123"
        assert option(argv, "--config_file") == "launch/accelerate/zero3_offload.yaml"


@pytest.mark.parametrize("nodes, args, env, message", [
    (1, [RECIPE], {}, "need at least 2 nodes"),
    (2, ["launch/recipes/missing.yaml"], {}, "recipe launch/recipes/missing.yaml not found"),
    (2, [], {}, "no recipe given"),
    (2, [RECIPE], {"SLURM_NNODES": "3"}, "SLURM_NNODES=3"),
    (2, [RECIPE], {"ACCELERATE_CONFIG": "nope.yaml"}, "accelerate config nope.yaml not found"),
    (2, [RECIPE], {"VLLM_TP": "16"}, "VLLM_TP=16 exceeds"),
])
def test_bad_input_is_one_clear_line(nodes, args, env, message):
    result = run_slurm_script(nodes, args, DRY_RUN="1", **env)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------- a run with fake cluster tools
FAKES = {
    # srun: drop its own options and run the step here.
    "srun": 'while [[ $1 == --* ]]; do shift; done\nexec "$@"\n',
    # vllm: becomes healthy after a moment, records its environment, notes when it is stopped.
    "vllm": 'echo "$VLLM_SERVER_DEV_MODE $*" > "$FAKE_LOG/vllm"\n'
            'trap \'echo stopped >> "$FAKE_LOG/vllm"; exit 0\' TERM\n'
            'sleep 0.3; touch "$FAKE_LOG/healthy"\nwhile true; do sleep 0.05; done\n',
    "curl": '[ -f "$FAKE_LOG/healthy" ]\n',
    # accelerate: record the launch; rank 1 exits with FAKE_STATUS.
    "accelerate": 'echo "$*" > "$FAKE_LOG/launch.$$"\n'
                  'for ((i = 1; i <= $#; i++)); do [ "${!i}" = --machine_rank ] && j=$((i + 1)) && rank=${!j}; done\n'
                  '[ "$rank" = 1 ] && exit "${FAKE_STATUS:-0}"\nexit 0\n',
}


@pytest.mark.parametrize("status", [0, 3], ids=["success", "training-fails"])
def test_run_waits_for_health_launches_each_node_and_stops_the_server(status, tmp_path):
    result = run_slurm_script(3, [RECIPE], tools=FAKES, FAKE_LOG=str(tmp_path), FAKE_STATUS=str(status),
                              POLL_SECONDS="0.1", HEALTH_TIMEOUT="30")
    assert result.returncode == status, result.stderr
    launches = sorted(path.read_text() for path in tmp_path.glob("launch.*"))
    assert [option(shlex.split(text), "--machine_rank") for text in launches] == ["0", "1"]
    vllm = (tmp_path / "vllm").read_text().splitlines()
    assert vllm[0].startswith("1 serve Qwen/Qwen2.5-7B-Instruct")  # VLLM_SERVER_DEV_MODE=1 reached the server
    assert vllm[-1] == "stopped", "the vLLM server must be stopped when the job ends"
    assert ("vLLM server healthy" in result.stdout) and (("training finished" in result.stdout) == (status == 0))


def test_health_timeout_stops_the_job(tmp_path):
    never_healthy = {**FAKES, "curl": "exit 7\n"}
    result = run_slurm_script(2, [RECIPE], tools=never_healthy, FAKE_LOG=str(tmp_path), POLL_SECONDS="0.1",
                              HEALTH_TIMEOUT="1")
    assert result.returncode == 2 and "not healthy after 1 s" in result.stderr
    assert not list(tmp_path.glob("launch.*"))
    assert (tmp_path / "vllm").read_text().splitlines()[-1] == "stopped"
