"""Everything that will fail is checked before work starts: each value TRL, transformers, PEFT, accelerate or
torch would reject only after the model has loaded is refused first, exit status 2, one line naming the option.

Every case here failed before with exit status 1 and a raw exception after the weights loaded, or was accepted
without a word (``max_steps: -5`` trained by epochs; a reward that scores nothing trained on no signal). A model
loader that must not be called (`no_weights`) proves "before any model loads"."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tiny import make_tiny_model_dir

from paft_rl.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]
POOL = [{"id": "a", "text": "Question: {question}\nAnswer:", "split": "train"},
        {"id": "b", "text": "Solve: {question}", "split": "train"},
        {"id": "h", "text": "Held out: {question}", "split": "heldout"}]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def no_weights(monkeypatch):
    """Loading any model's weights fails the run (with exit status 1): every check must come first."""
    from transformers import PreTrainedModel

    def refuse(cls, *args, **kwargs):
        raise AssertionError(f"{cls.__name__}.from_pretrained was called before the input was checked")

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(refuse))


def run(capsys, *argv):
    """Run the CLI in-process; (exit status, the error lines on stderr)."""
    code = cli([str(a) for a in argv])
    return code, [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]


def training(command, model_dir, tmp_path, *extra):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(t) + "\n" for t in POOL))
    argv = [command, "--model_name_or_path", model_dir, "--task", "synth_arith", "--pool", pool, "--output_dir",
            tmp_path / "out", "--data_limit", "8", "--max_steps", "1", "--report_to", "none",
            "--per_device_train_batch_size", "4", "--bf16", "false"]
    if command == "grpo":
        argv += ["--num_generations", "2", "--max_completion_length", "8"]
    return [*argv, *extra]


def missing_tracker() -> str:
    from transformers.integrations.integration_utils import get_available_reporting_integrations

    installed = get_available_reporting_integrations()
    missing = [name for name in ("wandb", "comet_ml", "neptune", "clearml", "swanlab") if name not in installed]
    if not missing:
        pytest.skip("every tracker tried is installed")
    return missing[0]


CASES = [
    # (command, extra options, what the one line says)
    ("sft", ["--per_device_train_batch_size", "0"],
     "option per_device_train_batch_size must be a positive number, got 0"),
    ("sft", ["--gradient_accumulation_steps", "0"], "option gradient_accumulation_steps must be a positive number"),
    ("sft", ["--learning_rate", "-0.001"], "option learning_rate must be >= 0, got -0.001"),
    ("sft", ["--use_peft", "true", "--lora_r", "0"], "option lora_r must be a positive number, got 0"),
    ("sft", ["--use_peft", "true", "--lora_target_modules", "q_projj"],
     "lora_target_modules (modules of {model}): unknown module 'q_projj'; did you mean 'q_proj'?"),
    # PEFT adapts the modules that match and silently leaves out the others
    ("sft", ["--use_peft", "true", "--lora_target_modules", "q_proj", "v_projj"], "unknown module 'v_projj'"),
    ("sft", ["--use_peft", "true", "--lora_target_modules", "self_attn", "mlp"],
     "lora_target_modules: 'self_attn' names LlamaAttention modules, which LoRA cannot adapt (it adapts linear, "
     "embedding and convolution layers); name the layers inside (k_proj, o_proj, q_proj, v_proj)"),
    ("sft", ["--seed", str(2**32)], "option seed must be in [0, 4294967295], got 4294967296"),
    ("sft", ["--seed", "-1"], "option seed must be in [0, 4294967295], got -1"),
    ("sft", ["--report_to", "wandbb"], "report_to: unknown tracker 'wandbb'; did you mean 'wandb'?"),
    ("sft", ["--report_to", "MISSING"], "report_to MISSING: "),
    ("sft", ["--push_to_hub", "true"], "push_to_hub needs the Hugging Face Hub but offline mode is on"),
    ("sft", ["--resume_from_checkpoint", "true"], "resume_from_checkpoint is true but output_dir"),
    ("sft", ["--resume_from_checkpoint", "no/such/checkpoint-3"],
     "resume_from_checkpoint no/such/checkpoint-3 is not a folder"),
    ("sft", ["--resume_from_checkpoint", "RUN"], "resume_from_checkpoint {run} holds no trainer state or weights, so "
                                                 "it is not a checkpoint: name its last one, {run}/checkpoint-2"),
    ("sft", ["--max_steps", "-5", "--num_train_epochs", "1"],
     "option max_steps must be a positive number of optimizer steps, or -1 to train for num_train_epochs, got -5"),
    ("sft", ["--max_steps", "0"], "option max_steps must be a positive number of optimizer steps"),
    ("grpo", ["--max_completion_length", "0"], "option max_completion_length must be a positive number, got 0"),
    ("grpo", ["--temperature", "-0.5"], "option temperature must be a positive number, got -0.5"),
    ("grpo", ["--temperature", "0"], "option temperature must be a positive number, got 0.0"),
    ("grpo", ["--reward_weights", "1.0", "0.5"],
     "reward_weights has 2 weight(s) for 1 reward(s) (math_accuracy, the task default): give one weight per reward"),
    ("grpo", ["--rewards", "mc_accuracy"], "reward mc_accuracy cannot score task 'synth_arith': it returns None"),
    ("grpo", ["--use_vllm", "true"], "use_vllm is true but vLLM is not installed here: on a GPU machine pip install"),
]


@pytest.mark.parametrize(("command", "extra", "expected"), CASES, ids=[" ".join(c[1]) for c in CASES])
def test_late_failures_are_refused_before_the_model_loads(command, extra, expected, model_dir, tmp_path, capsys,
                                                          no_weights):
    if "--use_vllm" in extra:
        from trl.import_utils import is_vllm_available

        if is_vllm_available():
            pytest.skip("vLLM is installed here")
    if "MISSING" in extra:
        tracker = missing_tracker()
        extra, expected = [tracker if e == "MISSING" else e for e in extra], expected.replace("MISSING", tracker)
    if "RUN" in extra:  # an earlier run's folder, not one of its checkpoints
        (tmp_path / "earlier" / "checkpoint-2").mkdir(parents=True)
        (tmp_path / "earlier" / "checkpoint-2" / "trainer_state.json").write_text("{}")
        extra = [str(tmp_path / "earlier") if e == "RUN" else e for e in extra]
    code, errors = run(capsys, *training(command, model_dir, tmp_path, *extra))
    assert code == 2, errors
    expected = expected.format(model=str(model_dir), run=tmp_path / "earlier")
    assert len(errors) == 1 and expected in errors[0], errors
    assert "trl[vllm]" not in errors[0] and "Traceback" not in errors[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("task", "data", "style"), [
    ("synth_arith", None, None), ("synth_mc", None, None), ("synth_mc", None, "letter"), ("synth_tool", None, None),
    ("gsm8k", "gsm8k/train.jsonl", None), ("math", "math/train.jsonl", None),
    ("hellaswag", "hellaswag/validation.jsonl", "text"), ("piqa", "piqa/validation.jsonl", None),
    ("winogrande", "winogrande/validation.jsonl", None), ("race", "race/validation.jsonl", "letter"),
    ("arc", "arc_challenge/test.jsonl", None), ("bfcl", "bfcl/BFCL_v4_multiple.json", None)])
def test_every_task_reward_scores_its_own_right_answers(task, data, style, model_dir, tmp_path, shared_file):
    """The reward probe refuses nothing a task's own reward can score (prompts as chats and as plain text)."""
    from paft_rl.formatting import PromptFormat
    from paft_rl.trainers.preflight import check_rewards_score_the_task, prepare_inputs, run_rewards
    from paft_rl.training import recipe_configs

    recipe = {"model_name_or_path": str(model_dir), "task": task, "output_dir": str(tmp_path / "out"),
              "num_generations": 2, "per_device_train_batch_size": 2, "data_limit": 8, "bf16": False,
              **({"data": str(shared_file(data))} if data else {}), **({"mc_answer_style": style} if style else {})}
    args, model_args = recipe_configs("grpo", recipe)
    inputs = prepare_inputs(args, model_args.model_name_or_path)
    inputs.reward_funcs, inputs.reward_names = run_rewards(args, inputs.task, None)
    for inputs.prompt_format in (PromptFormat(chat=True), PromptFormat(chat=False)):
        check_rewards_score_the_task(inputs)


def test_push_to_hub_without_a_token(model_dir, tmp_path, capsys, no_weights, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # online, as on a user's machine, but logged out
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    code, errors = run(capsys, *training("sft", model_dir, tmp_path, "--push_to_hub", "true"))
    assert code == 2 and errors[-1].endswith("push_to_hub needs a Hugging Face token: log in (hf auth login), set "
                                             "HF_TOKEN or hub_token, or set push_to_hub: false")


def test_a_single_target_module_is_a_module_name(model_dir, tmp_path, capsys):
    """TRL hands a one-item lora_target_modules to PEFT as a regular expression over full module paths, which
    ``q_proj`` never matches (it failed after the model loaded: "Target modules q_proj not found"); paft-rl reads
    it as the module name it is."""
    code, errors = run(capsys, *training("sft", model_dir, tmp_path, "--use_peft", "true", "--lora_r", "2",
                                         "--lora_target_modules", "q_proj", "--max_length", "256"))
    assert code == 0, errors
    assert json.loads((tmp_path / "out" / "adapter_config.json").read_text())["target_modules"] == ["q_proj"]


def test_library_call_checks_the_same(model_dir, tmp_path, no_weights):
    """`train_sft` called from code, with a ModelConfig built in code, runs the same pre-flight."""
    from trl import ModelConfig

    from paft_rl.configs import PaftSFTConfig
    from paft_rl.training import train_sft
    from prompt_pool import UserError

    args = PaftSFTConfig(output_dir=str(tmp_path / "out"), task="synth_arith", max_steps=1, data_limit=4, bf16=False,
                         report_to="none")
    with pytest.raises(UserError, match=r"^lora_alpha must be a positive number, got 0$"):
        train_sft(args, ModelConfig(model_name_or_path=str(model_dir), use_peft=True, lora_alpha=0))
    with pytest.raises(UserError, match="seed must be in"):
        PaftSFTConfig(output_dir=str(tmp_path / "out"), task="synth_arith", seed=2**40)


# ---------------------------------------------------------------------------------------------- workflows
def write(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def sequence_config(tmp_path, model_dir, **task_two):
    return write(tmp_path / "seq.yaml", {
        "model_name_or_path": str(model_dir), "output_dir": str(tmp_path / "seq"),
        "sft": {"max_steps": 1, "per_device_train_batch_size": 2, "max_length": 256, "lora_r": 4, "lora_alpha": 8,
                "bf16": False, "data_limit": 8},
        "select": {"rows": 2}, "eval": {"limit": 1, "max_new_tokens": 4},
        "tasks": [{"task": "synth_mc"}, {"task": "synth_arith", **task_two}]})


@pytest.mark.parametrize(("task_two", "expected"), [
    ({"sft": {"per_device_train_batch_size": 0}},
     "seq.yaml.tasks[1].sft.per_device_train_batch_size must be a positive number, got 0"),
    ({"sft": {"lora_target_modules": ["q_proj", "v_prj"]}},
     "seq.yaml.tasks[1] (synth_arith): lora_target_modules (modules of {model}): unknown module 'v_prj'; did you "
     "mean 'v_proj'?"),
    ({"data": "no/such/rows.jsonl"}, "seq.yaml.tasks[1] (synth_arith): "),
    ({"eval_data": "no/such/eval.jsonl"}, "seq.yaml.tasks[1] (synth_arith) evaluation: "),
])
def test_sequence_checks_every_stage_before_the_first(tmp_path, model_dir, capsys, no_weights, task_two, expected):
    # Before: the starting model was evaluated on every task and stage 1 selected and trained before the
    # second task's section (or its data) failed, naming neither the task nor the key.
    code, errors = run(capsys, "sequence", "--config", sequence_config(tmp_path, model_dir, **task_two))
    assert code == 2 and len(errors) == 1 and expected.format(model=str(model_dir)) in errors[0], errors
    assert not (tmp_path / "seq").exists()


def pipeline_config(tmp_path, model_dir, grpo=None, evaluation=None):
    common = {"task": "synth_arith", "report_to": "none", "bf16": False, "data_limit": 8, "max_steps": 1,
              "per_device_train_batch_size": 4}
    sft = write(tmp_path / "sft.yaml", {**common, "model_name_or_path": str(model_dir),
                                        "output_dir": str(tmp_path / "sft"), "max_length": 256})
    grpo_recipe = write(tmp_path / "grpo.yaml", {**common, "model_name_or_path": "made-by-the-sft-stage",
                                                 "output_dir": str(tmp_path / "grpo"), "num_generations": 2,
                                                 "max_completion_length": 4, **(grpo or {})})
    return write(tmp_path / "p.yaml", {"sft": str(sft), "grpo": str(grpo_recipe), "output_dir": str(tmp_path / "run"),
                                       "eval": {"limit": 1, "max_new_tokens": 4, **(evaluation or {})}})


@pytest.mark.parametrize(("grpo", "evaluation", "expected"), [
    ({"rewards": ["tool_call_accuracy"]}, None,
     "stage grpo: reward tool_call_accuracy cannot score task 'synth_arith'"),
    ({"use_peft": True, "lora_target_modules": ["q_proj", "k_prj"]}, None, "unknown module 'k_prj'"),
    (None, {"data": "no/such/eval.jsonl"}, "eval: "),
])
def test_pipeline_checks_every_stage_and_its_evaluation_before_the_first(tmp_path, model_dir, capsys, no_weights,
                                                                         grpo, evaluation, expected):
    # Before: SFT trained (and the LoRA merged), then the GRPO stage or the evaluation failed.
    code, errors = run(capsys, "pipeline", "--config", pipeline_config(tmp_path, model_dir, grpo, evaluation))
    assert code == 2 and len(errors) == 1 and expected.format(tmp=tmp_path) in errors[0], errors
    assert not (tmp_path / "run").exists() and not (tmp_path / "sft").exists()


def test_select_checks_the_recipe_it_writes_before_the_model_loads(tmp_path, model_dir, capsys, no_weights):
    recipe = write(tmp_path / "r.yaml", {"model_name_or_path": str(model_dir), "task": "synth_arith",
                                         "output_dir": str(tmp_path / "run"), "use_peft": True,
                                         "lora_target_modules": ["q_proj", "v_proj", "o_prj"]})
    code, errors = run(capsys, "select", "--config", recipe, "--rows", "4", "--out", tmp_path / "sel")
    assert code == 2 and "unknown module 'o_prj'; did you mean 'o_proj'?" in errors[0]
    assert not (tmp_path / "sel").exists()


# ---------------------------------------------------------------------------------------------- --help
@pytest.mark.parametrize("command", ["sft", "grpo"])
def test_help_leads_with_what_a_recipe_sets_first(command, capsys):
    with pytest.raises(SystemExit):
        cli([command, "--help"])
    text = capsys.readouterr().out
    sections = re.findall(r"^(\S[^\n]*):$", text, flags=re.MULTILINE)
    assert sections[:4] == ["recipe", "start here: the model, the task, its data and templates, where the model "
                                      "goes, how long", "paft-rl options (template pool and draws)",
                            "TRL ModelConfig: the model, LoRA and quantization"]
    config = "GRPOConfig" if command == "grpo" else "SFTConfig"
    trl_groups = [i for i, s in enumerate(sections) if s.startswith(f"TRL {config}: ")]
    transformers_groups = [i for i, s in enumerate(sections) if s.startswith("transformers TrainingArguments: ")]
    assert trl_groups and transformers_groups and max(trl_groups) < min(transformers_groups)
    lead = text[text.index("start here"):text.index("paft-rl options")]
    assert re.findall(r"^  --(\w+)", lead, flags=re.MULTILINE) == [
        "model_name_or_path", "task", "data", "pool", "output_dir", "max_steps", "num_train_epochs"]
    assert text.index("--model_name_or_path") < 1200  # was near the end of 760 / 1,200 lines
    generation = text[text.index("TRL GRPOConfig: generation:"):] if command == "grpo" else ""
    assert command == "sft" or generation.index("--temperature") < generation.index("transformers TrainingArguments")
    assert "`" not in text


# ---------------------------------------------------------------------------------------------- several processes
def test_a_user_error_is_said_by_the_main_process(monkeypatch, capsys):
    """Under a launcher every process fails on the same input; only rank 0 says so at once, the others wait for
    the launcher to stop them (and speak only if it does not)."""
    from paft_rl import cli as cli_module

    naps = []
    monkeypatch.setattr(cli_module.time, "sleep", naps.append)
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        assert cli(["pool", "stats", "no/such/pool.jsonl"]) == 2
    assert naps == [cli_module.PEER_GRACE_SECONDS]  # rank 1 waited first; rank 0 did not


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_accelerate_processes_print_a_user_error_once(model_dir, tmp_path):
    """Before: the line twice (or not at all, when the launcher stopped rank 0 first because rank 1 had failed
    first), then the launcher's traceback. ``--quiet`` is accelerate's switch for its own traceback."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--quiet",
               "--config_file", "launch/accelerate/cpu_two_processes.yaml",
               "--main_process_port", str(29500 + os.getpid() % 400),
               "-m", "paft_rl.cli", "sft", "--config", "launch/recipes/synth_mc_sft_cpu.yaml",
               "--model_name_or_path", str(model_dir), "--output_dir", str(tmp_path / "out"),
               "--per_device_train_batch_size", "0"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    log = result.stdout + result.stderr
    line = "paft-rl sft: error: option per_device_train_batch_size must be a positive number, got 0"
    assert result.returncode != 0 and log.count(line) == 1, log[-3000:]
    # The root cause the launcher names is the main process, with paft-rl's status for a user error.
    assert re.search(r"Root Cause.*?rank\s*: 0 \(local_rank: 0\)\s*exitcode\s*: 2 ", log, flags=re.DOTALL), log[-3000:]
    assert "Traceback" not in log
    assert not (tmp_path / "out").exists()
