"""Bad input stops before the first step with one line saying what to change; TRL hooks still exist."""

from __future__ import annotations

import inspect
import json

import pytest
from tiny import make_tiny_model_dir

from paft_rl.cli import main as cli

GOOD_POOL = [{"id": "a", "text": "Question: {question}\nAnswer:", "split": "train"},
             {"id": "b", "text": "Solve: {question}", "split": "train"}]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny"))


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def run(command, model_dir, tmp_path, capsys, *extra, pool=GOOD_POOL):
    pool_path = write_jsonl(tmp_path / "pool.jsonl", pool)
    argv = [command, "--model_name_or_path", str(model_dir), "--task", "synth_arith", "--pool", str(pool_path),
            "--output_dir", str(tmp_path / "out"), "--data_limit", "8", "--max_steps", "1", "--report_to", "none",
            "--per_device_train_batch_size", "4", "--bf16", "false"]
    if command == "grpo":
        argv += ["--num_generations", "2", "--max_completion_length", "8"]
    argv += list(extra)
    code = cli(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert not (tmp_path / "out").exists(), "wrote before failing"
    return code, err[-1] if err else ""


@pytest.mark.parametrize("command", ["sft", "grpo"])
def test_pool_that_fails_validation(command, model_dir, tmp_path, capsys):
    pool = GOOD_POOL + [{"id": "bad", "text": "No placeholder here", "split": "train"}]
    code, message = run(command, model_dir, tmp_path, capsys, pool=pool)
    assert code == 2 and "bad" in message and "question" in message


def test_dataset_missing_a_field_the_pool_needs(model_dir, tmp_path, capsys):
    data = write_jsonl(tmp_path / "rows.jsonl", [{"prompt_text": "2+2?", "answer": "#### 4"}] * 4)
    code, message = run("grpo", model_dir, tmp_path, capsys, "--data", str(data))
    assert code == 2 and "question" in message and "--data" in message


def test_pool_field_not_in_data_with_alias(model_dir, tmp_path, capsys):
    pool = [{"id": "q", "text": "Problem: {problem}", "split": "train"}]
    code, message = run("sft", model_dir, tmp_path, capsys, "--field_aliases", "problem=missing", pool=pool)
    assert code == 2 and "problem" in message


def test_prompt_longer_than_context(model_dir, tmp_path, capsys):
    long_pool = GOOD_POOL + [{"id": "long", "text": "Read carefully. " * 300 + "{question}", "split": "train"}]
    code, message = run("grpo", model_dir, tmp_path, capsys, pool=long_pool)
    assert code == 2 and "'long'" in message and "max_completion_length" in message


def test_sft_prompt_longer_than_max_length(model_dir, tmp_path, capsys):
    code, message = run("sft", model_dir, tmp_path, capsys, "--max_length", "12")
    assert code == 2 and "max_length" in message


def test_batch_that_cannot_hold_whole_groups(model_dir, tmp_path, capsys):
    code, message = run("grpo", model_dir, tmp_path, capsys, "--per_device_train_batch_size", "3")
    assert code == 2 and "per_device_train_batch_size" in message and "num_generations" in message


@pytest.mark.parametrize("extra, expected", [
    (["--template_draw", "fixed"], "fixed_template"),
    (["--template_draw", "top"], "template_id"),
    (["--template_draw", "top", "--template_id", "nope"], "nope"),
    (["--rewards", "no_such_reward"], "no_such_reward"),
    (["--template_every", "0"], "template_every"),
])
def test_option_mistakes(extra, expected, model_dir, tmp_path, capsys):
    code, message = run("grpo", model_dir, tmp_path, capsys, *extra)
    assert code == 2 and expected in message


def test_existing_checkpoints_need_overwrite_or_resume(model_dir, tmp_path, capsys):
    (tmp_path / "out" / "checkpoint-3").mkdir(parents=True)
    (tmp_path / "out" / "checkpoint-3" / "marker").write_text("old run")
    pool_path = write_jsonl(tmp_path / "pool.jsonl", GOOD_POOL)
    code = cli(["sft", "--model_name_or_path", str(model_dir), "--task", "synth_arith", "--pool", str(pool_path),
                "--output_dir", str(tmp_path / "out")])
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "--overwrite" in message and "--resume_from_checkpoint" in message
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["checkpoint-3"]
    code = cli(["sft", "--model_name_or_path", str(model_dir), "--task", "synth_arith", "--pool", str(pool_path),
                "--output_dir", str(tmp_path / "out"), "--overwrite", "true", "--max_steps", "1", "--data_limit", "4",
                "--per_device_train_batch_size", "2", "--report_to", "none", "--save_steps", "1"])
    assert code == 0
    assert not (tmp_path / "out" / "checkpoint-3").exists() and (tmp_path / "out" / "checkpoint-1").is_dir()


# ---------------------------------------------------------------------------- the TRL methods we override
HOOKS = {
    # (class path, method): parameter names after self, as the PAFT trainers and tests rely on them
    ("trl.GRPOTrainer", "_generate_and_score_completions"): ["inputs"],
    ("trl.GRPOTrainer", "_calculate_rewards"): ["inputs", "prompts", "completions", "completion_ids_list"],
    ("trl.GRPOTrainer", "_generate"): ["prompts"],
    ("trl.GRPOTrainer", "_log_completion_extra"): ["column", "values"],
    ("trl.GRPOTrainer", "_log_metric"): ["name", "value"],
    ("trl.GRPOTrainer", "_generate_single_turn"): ["prompt_ids", "images", "multimodal_fields", "num_generations",
                                                   "has_tool_images"],
    ("trl.SFTTrainer", "get_batch_samples"): ["epoch_iterator", "num_batches", "device"],
    ("trl.SFTTrainer", "_get_num_items_in_batch"): ["batch_samples", "device"],
    ("trl.SFTTrainer", "_prepare_inputs"): ["inputs"],
    ("trl.SFTTrainer", "prediction_step"): ["model", "inputs", "prediction_loss_only", "ignore_keys"],
    ("trl.GRPOTrainer", "_prepare_inputs"): ["generation_batch"],
    ("transformers.Trainer", "evaluation_loop"): ["dataloader", "description", "prediction_loss_only", "ignore_keys",
                                                  "metric_key_prefix"],
}


@pytest.mark.parametrize("owner, method", list(HOOKS), ids=[f"{o}.{m}" for o, m in HOOKS])
def test_overridden_trl_methods_keep_their_signature(owner, method):
    import importlib

    module, name = owner.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    assert hasattr(cls, method), f"{owner}.{method} disappeared: the PAFT trainers must be updated for this TRL"
    params = list(inspect.signature(getattr(cls, method)).parameters)[1:]
    assert params == HOOKS[(owner, method)], f"{owner}.{method} changed signature to {params}"


def test_grpo_trainer_still_buffers_state_the_rewrite_uses():
    """Attributes set in GRPOTrainer.__init__ that the PAFT trainer writes or reads."""
    import trl

    source = inspect.getsource(trl.GRPOTrainer.__init__)
    for attribute in ("self._pending_extra_logs", "self._metrics", "self.reward_weights", "self._logs"):
        assert attribute in source, f"GRPOTrainer no longer sets {attribute}"
    generate = inspect.getsource(trl.GRPOTrainer._generate_and_score_completions)
    assert 'x["prompt"] for x in inputs' in generate, "GRPOTrainer no longer reads prompts from the inputs"
