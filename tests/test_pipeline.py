"""`paft-rl pipeline`: SFT (LoRA) -> merge -> GRPO -> eval on a tiny model, and resuming after a failed stage."""

import json

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from helpers import assert_adapter_trained
from paft_rl.cli import main
from tests.tiny import make_tiny_model_dir

COMMON = {"task": "synth_mc", "report_to": "none", "bf16": False, "logging_steps": 1, "data_limit": 16, "seed": 0}


def write(path, data):
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.fixture
def configs(tmp_path):
    model = make_tiny_model_dir(tmp_path / "model")
    sft = write(tmp_path / "sft.yaml", {**COMMON, "model_name_or_path": str(model), "output_dir": str(tmp_path / "sft"),
                                        "use_peft": True, "lora_r": 4, "lora_alpha": 8, "max_steps": 2,
                                        "per_device_train_batch_size": 4, "save_steps": 1, "max_length": 512})
    grpo_recipe = {**COMMON, "model_name_or_path": "replaced-by-the-pipeline", "output_dir": str(tmp_path / "grpo"),
                   "max_steps": 1, "per_device_train_batch_size": 4, "num_generations": 2, "max_completion_length": 4}
    pipeline = {"sft": sft, "grpo": write(tmp_path / "grpo.yaml", grpo_recipe), "output_dir": str(tmp_path / "run"),
                "eval": {"task": "synth_mc", "limit": 2, "max_new_tokens": 4, "models": ["base", "sft", "grpo"]}}
    return tmp_path, pipeline, grpo_recipe


@pytest.mark.slow
def test_pipeline_end_to_end_and_resume(configs, capsys):
    tmp_path, pipeline, grpo_recipe = configs
    # First run: the GRPO recipe cannot hold whole groups; that is reported before SFT trains.
    write(tmp_path / "grpo.yaml", {**grpo_recipe, "num_generations": 3})
    path = write(tmp_path / "p.yaml", pipeline)
    assert main(["pipeline", "--config", path]) == 2
    assert "num_generations" in capsys.readouterr().err
    assert not (tmp_path / "run" / "sft").exists() and not (tmp_path / "sft").exists()
    # Fixed: the whole pipeline runs; a rerun skips every finished stage.
    write(tmp_path / "grpo.yaml", grpo_recipe)
    assert main(["pipeline", "--config", path]) == 0
    capsys.readouterr()
    assert main(["pipeline", "--config", path]) == 0
    out = capsys.readouterr().out
    assert "sft: already done" in out and "merge LoRA: already done" in out and "grpo: already done" in out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["merge"]["model"] == str(tmp_path / "sft") + "-merged"
    # The merged model is the base plus the trained adapter, nothing else.
    merged = assert_adapter_trained(make_tiny_model_dir(tmp_path / "model"), tmp_path / "sft")
    saved = AutoModelForCausalLM.from_pretrained(summary["merge"]["model"]).state_dict()
    assert saved.keys() == merged.keys() and all(torch.allclose(saved[n], merged[n]) for n in merged)
    grpo_used = yaml.safe_load((tmp_path / "run" / "recipes" / "grpo.yaml").read_text())
    assert grpo_used["model_name_or_path"] == summary["merge"]["model"]
    assert set(summary["eval"]["results"]) == {"base", "sft", "grpo"}
    written = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    assert len(written["models"]) == 3 and written["settings"]["n_questions"] == 2  # base, sft, grpo on eval.limit


@pytest.mark.parametrize(
    "change, message",
    [
        ({"sft": "missing.yaml"}, "sft recipe 'missing.yaml' does not exist"),
        ({"colour": 1}, "unknown key 'colour'"),
        ({"eval": {"task": "synth_mc", "limt": 3}}, "eval: unknown key 'limt'; did you mean 'limit'?"),
        ({"eval": {"limit": 3}}, "eval needs a task"),
        ({"eval": {"task": "synth_mc", "models": ["teacher"]}}, "not teacher"),
    ],
)
def test_pipeline_bad_config(configs, change, message, capsys):
    tmp_path, pipeline, _ = configs
    path = write(tmp_path / "p.yaml", {**pipeline, **change})
    assert main(["pipeline", "--config", path]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_pipeline_reruns_a_changed_eval_and_refuses_foreign_checkpoints(configs, capsys):
    tmp_path, pipeline, _ = configs
    pipeline = {**pipeline, "eval": {"task": "synth_mc", "limit": 1, "max_new_tokens": 4, "models": ["sft"]}}
    pipeline.pop("grpo")
    # Another run's checkpoint sits in the SFT recipe's output_dir: never resumed as this pipeline's.
    (tmp_path / "sft" / "checkpoint-7").mkdir(parents=True)
    path = write(tmp_path / "p.yaml", pipeline)
    assert main(["pipeline", "--config", path]) == 2
    assert "did not start" in capsys.readouterr().err and (tmp_path / "sft" / "checkpoint-7").is_dir()
    assert main(["pipeline", "--config", path, "--fresh"]) == 0
    capsys.readouterr()
    first = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    assert first["settings"]["n_questions"] == 1
    # The evaluation changed: it runs again (SFT does not), and results.json describes the new one.
    write(tmp_path / "p.yaml", {**pipeline, "eval": {**pipeline["eval"], "limit": 2}})
    assert main(["pipeline", "--config", path]) == 0
    out = capsys.readouterr().out
    assert "sft: already done" in out and "eval: settings changed (eval.limit: 1 -> 2)" in out
    assert json.loads((tmp_path / "run" / "eval" / "results.json").read_text())["settings"]["n_questions"] == 2
