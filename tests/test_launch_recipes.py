"""GPU readiness without a GPU: every recipe under launch/recipes parses with the same parser as ``paft-rl``,
for the world size its launch line states, and passes TRL's group arithmetic there; every accelerate config
goes through accelerate's own launch validation, and the DeepSpeed ones build a `DeepSpeedPlugin` from the
environment ``accelerate launch`` would give the processes.

Each recipe's first line is ``# launch: <command>`` and its second ``# batch: <N> ... per optimizer step ...``;
the tests read both, so the documented numbers cannot drift from the recipe.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
RECIPES = sorted((LAUNCH / "recipes").glob("*.yaml"))
PIPELINES = sorted((LAUNCH / "pipelines").glob("*.pipeline.yaml"))
ACCELERATE_CONFIGS = sorted((LAUNCH / "accelerate").glob("*.yaml"))
DEEPSPEED_CONFIGS = sorted((LAUNCH / "deepspeed").glob("*.json"))


# ---------------------------------------------------------------------------- reading launch lines
def launch_command(recipe: Path) -> list[str]:
    """The recipe's launch command: its ``# launch:`` line, else (CPU recipes) a ``paft-rl CMD --config`` comment."""
    comments = [line[1:].strip() for line in recipe.read_text().splitlines() if line.startswith("#")]
    for line in comments:
        if line.startswith("launch:"):
            return shlex.split(line[len("launch:"):])
    for line in comments:
        if line.startswith("paft-rl ") and "--config" in line:
            return shlex.split(line)
    raise AssertionError(f"{recipe.name}: no `# launch:` line")


def command_and_config(argv: list[str]) -> tuple[str, Path]:
    """(``sft`` | ``grpo``, recipe path) named by a launch command."""
    command = next(word for word in argv if word in ("sft", "grpo"))
    return command, ROOT / argv[argv.index("--config") + 1]


def sbatch_plan(argv: list[str]) -> str:
    """The SLURM script's dry-run plan for an ``sbatch --nodes N SCRIPT RECIPE [ARGS]`` launch line."""
    from helpers import SCRIPT, dry_run

    script = next(word for word in argv if word.endswith(".slurm"))
    assert ROOT / script == SCRIPT
    return dry_run(int(argv[argv.index("--nodes") + 1]), argv[argv.index(script) + 1:])


def accelerate_launch_args(argv: list[str]):
    """accelerate's own validation of an ``accelerate launch`` command: (resolved args, environment of the workers)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    start = argv.index("launch") + 1
    args, defaults, mixed_precision_from_config = _validate_launch_command(
        launch_command_parser().parse_args(argv[start:]))
    if args.use_deepspeed:
        # As accelerate's launch_command does: tells DeepSpeedPlugin which keys came from the accelerate config.
        fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mixed_precision_from_config else [])
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        _, env = prepare_deepspeed_cmd_env(args)
    elif args.multi_gpu:
        env = prepare_multi_gpu_env(args)
    else:
        env = {"ACCELERATE_MIXED_PRECISION": str(args.mixed_precision)}
    return args, env


def launch_plan(recipe: Path) -> dict:
    """World size, accelerate config and subcommand of a recipe, from its launch line."""
    plan = plan_from_argv(launch_command(recipe))
    assert plan["recipe"] == recipe, f"{recipe.name}: its launch line trains {plan['recipe'].name}"
    return plan


def plan_from_argv(argv: list[str]) -> dict:
    """World size, accelerate config, subcommand, recipe and ``--key value`` overrides of a launch command."""
    if argv[0] == "sbatch":
        line = next(line for line in sbatch_plan(argv).splitlines() if line.startswith("train node 0"))
        argv = shlex.split(line.split(": ", 1)[1])
        argv = argv[argv.index("accelerate"):]
    command, recipe = command_and_config(argv)
    overrides = argv[argv.index("--config") + 2:]
    plan = {"world": 1, "command": command, "argv": argv, "accelerate": None, "recipe": recipe, "overrides": overrides}
    if argv[0] == "accelerate":
        with _cwd(ROOT):
            args, env = accelerate_launch_args(argv)
        plan["world"] = int(args.num_processes) if (args.use_deepspeed or args.multi_gpu) else 1
        plan["accelerate"] = (args, env)
    return plan


# ---------------------------------------------------------------------------- parsing a recipe as paft-rl does
@contextmanager
def world_size(processes: int):
    """Make TrainingArguments report ``processes`` so TRL's own checks run for that world size."""
    from transformers import TrainingArguments

    with mock.patch.object(TrainingArguments, "world_size", new=property(lambda self: processes)):
        yield


def parse(recipe: Path, command: str, processes: int, *overrides: str):
    from paft_rl.configs import PaftGRPOConfig, PaftSFTConfig
    from paft_rl.trainers.recipes import parse_recipe

    config_class = PaftGRPOConfig if command == "grpo" else PaftSFTConfig
    with world_size(processes):
        return parse_recipe(config_class, ["--config", str(recipe), *overrides])


def stated_batch(recipe: Path) -> dict:
    line = next((line for line in recipe.read_text().splitlines() if line.startswith("# batch:")), "")
    match = re.match(r"# batch: (\d+) (completions|sequences) per optimizer step"
                     r"(?: = (\d+) prompts x (\d+) generations)?", line)
    return {} if match is None else {"total": int(match[1]), "prompts": match[3] and int(match[3]),
                                     "generations": match[4] and int(match[4])}


# ---------------------------------------------------------------------------- recipes
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_parses_and_fits_its_world_size(recipe):
    plan = launch_plan(recipe)
    args, model_args = parse(recipe, plan["command"], plan["world"], *plan["overrides"])
    assert model_args.model_name_or_path
    per_step = args.per_device_train_batch_size * plan["world"] * args.gradient_accumulation_steps
    stated = stated_batch(recipe)
    if plan["command"] == "grpo":
        # TRL 1.16: one generation batch per optimizer step, made of whole groups of num_generations.
        assert args.generation_batch_size == (args.per_device_train_batch_size * plan["world"]
                                              * args.steps_per_generation)
        assert args.generation_batch_size % args.num_generations == 0
        if stated:
            assert (stated["total"], stated["prompts"], stated["generations"]) == (
                args.generation_batch_size, args.generation_batch_size // args.num_generations,
                args.num_generations), f"{recipe.name}: the `# batch:` line disagrees with the recipe"
        if args.use_vllm and args.vllm_mode == "colocate":
            assert plan["world"] % args.vllm_tensor_parallel_size == 0, "vLLM TP size must divide the GPU count"
        if args.use_vllm and args.vllm_mode == "server":
            assert plan["argv"].count("--vllm_server_host") == 1, "server mode needs the server's host"
    elif stated:
        assert stated["total"] == per_step, f"{recipe.name}: the `# batch:` line disagrees with the recipe"
    if plan["accelerate"] is not None and plan["accelerate"][0].mixed_precision == "bf16":
        assert args.bf16, f"{recipe.name}: the accelerate config runs bf16 but the recipe does not"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_names_a_known_task_rewards_and_valid_pool(recipe):
    from paft_rl.tasks import get_task, load_task_pool, parse_field_aliases
    from rewards import REWARDS

    values = yaml.safe_load(recipe.read_text())
    task = get_task(values["task"])
    for name in values.get("rewards") or [task.reward]:
        assert name in REWARDS, f"{recipe.name}: unknown reward {name!r}"
    if values.get("reward_weights"):
        assert len(values["reward_weights"]) == len(values["rewards"])
    if not values.get("pool") and values.get("template_draw", "uniform") != "fixed":
        pool = load_task_pool(task, None, parse_field_aliases(values.get("field_aliases")))
        assert pool.train, f"{recipe.name}: the built-in {task.name} pool has no train templates"


def test_every_gpu_recipe_states_its_launch_and_batch():
    for recipe in RECIPES:
        if recipe.stem.endswith("_cpu"):
            continue
        lines = recipe.read_text().splitlines()
        assert lines[0].startswith("# launch: "), f"{recipe.name}: first line must be `# launch: ...`"
        assert stated_batch(recipe), f"{recipe.name}: second line must be `# batch: N ... per optimizer step`"
        # Multi-node recipes go through the SLURM script (it starts the vLLM server); the rest through accelerate.
        if recipe.stem.endswith("_multinode"):
            assert lines[0].startswith("# launch: sbatch ") and ".slurm " in lines[0], recipe.name
        else:
            assert lines[0].startswith("# launch: accelerate launch ") and " -m paft_rl.cli " in lines[0], recipe.name


def test_readme_launch_lines_parse_and_fit():
    lines = [line for line in (LAUNCH / "README.md").read_text().splitlines()
             if re.match(r"(accelerate launch|paft-rl (sft|grpo)) ", line)]
    assert len(lines) >= 10
    for line in lines:
        plan = plan_from_argv(shlex.split(line))
        args, _ = parse(plan["recipe"], plan["command"], plan["world"], *plan["overrides"])
        if plan["command"] == "grpo":
            assert args.generation_batch_size % args.num_generations == 0, line
            if args.use_vllm and args.vllm_mode == "colocate":
                assert plan["world"] % args.vllm_tensor_parallel_size == 0, line


def test_group_rule_violation_is_caught_for_a_different_world_size():
    """The check has teeth: the 0.5B recipe (16 x 1 x 8 = 128) on 3 GPUs gives 384 completions, fine, but with
    num_generations 10 neither holds whole groups."""
    from prompt_pool import UserError

    recipe = LAUNCH / "recipes" / "gsm8k_grpo_qwen2.5-0.5b.yaml"
    with pytest.raises(UserError, match="num_generations"):
        parse(recipe, "grpo", 3, "--num_generations", "10")


def test_paft_pool_field_aliases_in_comments_validate(shared_data):
    """The commented ``pool:`` blocks of the SFT recipes work on PAFT's published pools (JSONL copies here)."""
    from paft_rl.tasks import get_task, load_task_pool, parse_field_aliases

    checked = 0
    for recipe in RECIPES:
        commented = "\n".join(line[2:] for line in recipe.read_text().splitlines()
                              if re.match(r"# (pool|field_aliases|drop_duplicate_templates):", line))
        if not commented:
            continue
        values = yaml.safe_load(commented)
        task = yaml.safe_load(recipe.read_text())["task"]
        pool_file = shared_data / "paft_prompts" / "train" / f"{task}.jsonl"
        pool = load_task_pool(get_task(task), str(pool_file), parse_field_aliases(values.get("field_aliases")),
                              drop_duplicates=bool(values.get("drop_duplicate_templates")))
        assert len(pool.train) > 100
        checked += 1
    assert checked == 4  # hellaswag, piqa, winogrande, race


def pipeline_world(path: Path) -> int:
    """Processes a pipeline file's launch line starts (1 for a plain ``paft-rl pipeline``)."""
    argv = launch_command(path)
    assert "pipeline" in argv and argv[argv.index("--config") + 1] == str(path.relative_to(ROOT)), path.name
    if argv[0] != "accelerate":
        return 1
    with _cwd(ROOT):
        args, _ = accelerate_launch_args(argv)
    return int(args.num_processes) if (args.use_deepspeed or args.multi_gpu) else 1


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name.removesuffix(".pipeline.yaml"))
def test_pipeline_file_parses_and_its_stages_fit_its_world_size(path, monkeypatch):
    """Every stage recipe of a shipped pipeline parses as the pipeline runs it (its model set to the stage it
    starts from) and passes TRL's group arithmetic for the world size of the file's launch line; every evaluation
    judges templates the training never saw."""
    from paft_rl.configs import PaftGRPOConfig
    from paft_rl.workflows.pipeline import make_plan, read_pipeline

    monkeypatch.chdir(ROOT)  # recipe and data paths are relative to the repository root
    world = pipeline_world(path)
    with world_size(world):
        plan = make_plan(read_pipeline(path, log=lambda *_: None))
    for name, args in plan.parsed.items():
        if isinstance(args, PaftGRPOConfig):
            assert args.generation_batch_size == args.per_device_train_batch_size * world * args.steps_per_generation
            assert args.generation_batch_size % args.num_generations == 0, f"{path.name}: stage {name}"
            if args.use_vllm and args.vllm_mode == "colocate":
                assert world % args.vllm_tensor_parallel_size == 0, f"{path.name}: stage {name}"
    assert plan.evaluations or plan.sequences, f"{path.name} judges nothing"
    for name, (_, settings) in plan.evaluations.items():
        assert settings.templates == "heldout", f"{path.name}: stage {name} must judge held-out templates"
    for stage in plan.config.stages:
        if stage.kind == "train" and stage.train == "grpo" and stage.model != "base":
            assert plan.recipes[stage.name]["model_name_or_path"] == plan.models[stage.model]


def test_cli_runs_as_a_module():
    """``accelerate launch -m paft_rl.cli`` needs ``python -m paft_rl.cli`` to work."""
    result = subprocess.run([sys.executable, "-m", "paft_rl.cli", "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "grpo" in result.stdout


# ---------------------------------------------------------------------------- accelerate and DeepSpeed configs
@pytest.mark.parametrize("config", ACCELERATE_CONFIGS, ids=lambda p: p.stem)
def test_accelerate_config_passes_accelerate_validation(config):
    from accelerate.utils import DeepSpeedPlugin

    values = yaml.safe_load(config.read_text())
    argv = ["accelerate", "launch", "--config_file", str(config.relative_to(ROOT)), "-m", "paft_rl.cli", "grpo"]
    with mock.patch.dict(os.environ, {}), _cwd(ROOT):
        args, env = accelerate_launch_args(argv)
        assert int(args.num_processes) == values["num_processes"]
        if values["distributed_type"] != "DEEPSPEED":
            return
        ds_file = values["deepspeed_config"]["deepspeed_config_file"]
        assert (ROOT / ds_file).is_file()
        # What TrainingArguments does in each worker under `accelerate launch` (minus the deepspeed import).
        os.environ.update(env)
        plugin = DeepSpeedPlugin()
        plugin.set_mixed_precision("bf16")
        assert plugin.deepspeed_config["bf16"]["enabled"] is True
        assert plugin.zero_stage == json.loads((ROOT / ds_file).read_text())["zero_optimization"]["stage"]
        assert plugin.zero3_init_flag == (plugin.zero_stage == 3)


@pytest.mark.parametrize("ds_file", DEEPSPEED_CONFIGS, ids=lambda p: p.stem)
def test_deepspeed_json_leaves_batch_and_precision_to_the_recipe(ds_file):
    config = json.loads(ds_file.read_text())
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                "gradient_clipping"):
        assert config[key] == "auto", f"{ds_file.name}: {key} must be 'auto' (the recipe decides)"
    assert config["bf16"]["enabled"] == config["fp16"]["enabled"] == "auto"
    zero = config["zero_optimization"]
    assert zero["stage"] == (2 if "zero2" in ds_file.stem else 3)
    offload = "offload" in ds_file.stem
    for part in ("offload_optimizer", "offload_param"):
        assert zero.get(part, {"device": "none"})["device"] == ("cpu" if offload else "none")
    # ZeRO-Offload with a torch optimizer is refused by DeepSpeed; the offload config names DeepSpeed's AdamW.
    assert ("optimizer" in config) == offload


@pytest.mark.parametrize("recipe_name, config_name", [
    ("gsm8k_grpo_qwen2.5-1.5b", "zero2"), ("gsm8k_grpo_qwen2.5-7b", "zero3"),
    ("gsm8k_grpo_qwen2.5-7b", "zero3_offload"),
])
def test_deepspeed_auto_values_resolve_from_recipe(recipe_name, config_name):
    """With deepspeed installed: the recipe parsed inside the environment of ``accelerate launch`` (as each worker
    does) and HF's filling of every "auto" value, for 8 processes."""
    pytest.importorskip("deepspeed")
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    recipe = LAUNCH / "recipes" / f"{recipe_name}.yaml"
    argv = ["accelerate", "launch", "--config_file", f"launch/accelerate/{config_name}.yaml", "--num_processes", "8",
            "-m", "paft_rl.cli", "grpo"]
    with mock.patch.dict(os.environ, {}), _cwd(ROOT), world_size(8):
        _, env = accelerate_launch_args(argv)
        os.environ.update(env)
        args, _ = parse(recipe, "grpo", 8)
        filled = HfTrainerDeepSpeedConfig(args.deepspeed_plugin.deepspeed_config)
        filled.trainer_config_process(args)
        qwen_7b = SimpleNamespace(config=SimpleNamespace(hidden_size=3584))  # only hidden_size is read
        filled.trainer_config_finalize(args, qwen_7b, num_training_steps=100)
    config = filled.config
    assert "auto" not in json.dumps(config)
    assert config["train_batch_size"] == args.per_device_train_batch_size * 8 * args.gradient_accumulation_steps
    assert config["bf16"]["enabled"] is True


@contextmanager
def _cwd(path: Path):
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)
