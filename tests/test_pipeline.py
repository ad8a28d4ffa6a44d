"""`paft-rl pipeline`: SFT (LoRA) -> merge -> GRPO -> eval on a tiny model, and resuming after a failed stage."""

import json

import pytest
import torch
import yaml
from helpers import assert_adapter_trained
from transformers import AutoModelForCausalLM

from paft_rl.cli import main
from prompt_pool import UserError
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
        ({"sft": "missing.yaml"}, "p.yaml.sft recipe 'missing.yaml' does not exist"),
        ({"sft": None, "grpo": None}, "name at least one stage recipe"),
        ({"colour": 1}, "p.yaml: unknown key 'colour'"),
        # Before, a typo'd eval key was dropped and the evaluation ran on the whole dataset.
        ({"eval": {"task": "synth_mc", "limt": 3}}, "p.yaml.eval: unknown key 'limt'; did you mean 'limit'?"),
        ({"eval": {"task": "synth_mc", "limit": 0}}, "limit must be a positive number"),
        ({"eval": {"task": "synth_mc", "models": ["teacher"]}}, "p.yaml.eval.models item 'teacher': must be one of"),
        ({"eval": {"task": "synth_mc", "models": ["sft", "sft"]}}, "p.yaml.eval.models names sft twice"),
        ({"eval": {"task": "synth_mc", "out": "elsewhere"}}, "p.yaml.eval.out is set by the pipeline"),
        ({"eval": {"task": "synth_mc", "labels": ["a"]}}, "p.yaml.eval.labels are set by the pipeline"),
        ({"eval": {"task": "synth_mc", "prompt_format": "chatty"}}, "p.yaml.eval.prompt_format must be one of"),
        ({"grpo": None, "eval": {"task": "synth_mc", "models": ["grpo"]}}, "names grpo, a stage this pipeline has no"),
        ({"eval": {"task": "synth_mc", "system_prompt": "Be brief."}},
         "eval.system_prompt is 'Be brief.' but the grpo recipe"),
        ({"eval": {"task": "synth_mc", "prompt_format": "plain"}}, "eval.prompt_format is 'plain' but the grpo recipe"),
    ],
)
def test_pipeline_bad_config_is_refused_before_anything_trains(configs, change, message, capsys):
    tmp_path, pipeline, _ = configs
    recipe = {key: value for key, value in {**pipeline, **change}.items() if value is not None}
    path = write(tmp_path / "p.yaml", recipe)
    assert main(["pipeline", "--config", path]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists() and not (tmp_path / "sft").exists()


def test_pipeline_refuses_recipes_trained_on_different_prompts(configs, capsys):
    """One evaluation judges every model, so the SFT and GRPO recipes must train on the same prompts."""
    tmp_path, pipeline, grpo_recipe = configs
    write(tmp_path / "grpo.yaml", {**grpo_recipe, "system_prompt": "Be brief."})
    assert main(["pipeline", "--config", write(tmp_path / "p.yaml", pipeline)]) == 2
    err = capsys.readouterr().err
    assert "trains with system_prompt 'Be brief.' but the sft recipe" in err and "set the same system_prompt" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "sft").exists()


@pytest.mark.slow
@pytest.mark.parametrize("system_prompt", ["You answer with the option text only.", None])
def test_pipeline_evaluates_with_the_training_prompt(tmp_path, system_prompt):
    """The evaluation sees the very prompt text the trainer builds with the recipe's settings: with the recipe's
    system prompt when it has one, without when it has none."""
    from transformers import AutoTokenizer

    from paft_rl.eval.runner import EvalSettings, build_cells, eval_templates
    from paft_rl.formatting import PromptFormat, prompt_text
    from paft_rl.tasks import get_task

    model = make_tiny_model_dir(tmp_path / "model")
    recipe = {**COMMON, "model_name_or_path": str(model), "output_dir": str(tmp_path / "sft"), "max_steps": 1,
              "per_device_train_batch_size": 4, "save_strategy": "no", "max_length": 512, "prompt_format": "chat"}
    if system_prompt:
        recipe["system_prompt"] = system_prompt
    pipeline = {"sft": write(tmp_path / "sft.yaml", recipe), "output_dir": str(tmp_path / "run"),
                "eval": {"task": "synth_mc", "limit": 2, "max_new_tokens": 2, "progress": False}}
    assert main(["pipeline", "--config", write(tmp_path / "p.yaml", pipeline)]) == 0

    records = [json.loads(line) for line in (tmp_path / "run" / "eval" / "generations.jsonl").read_text().splitlines()]
    task = get_task("synth_mc")
    cells = build_cells(task, eval_templates(task, "heldout", []),
                        EvalSettings(task="synth_mc", models=["m"], out="x", limit=2))
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "sft"))
    trainer_text = {(c.template, c.row): prompt_text(tokenizer, PromptFormat(True, system_prompt).build(c.prompt))
                    for c in cells}
    assert len(records) == len(cells) == 20 and {r["label"] for r in records} == {"sft"}
    assert {(r["template"], r["row_id"]): r["prompt"] for r in records} == trainer_text
    needle = system_prompt or "You answer with the option text only."
    assert all((needle in r["prompt"]) == bool(system_prompt) for r in records)
    results = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    assert results["settings"]["system_prompt"] == system_prompt and results["settings"]["prompt_format"] == "chat"


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


def test_eval_task_defaults_to_the_task_the_stages_train(configs):
    from paft_rl.settings import read_settings_file
    from paft_rl.workflows.pipeline import PipelineConfig, check_stage_recipes, evaluation_settings

    tmp_path, pipeline, grpo_recipe = configs
    path = write(tmp_path / "p.yaml", {**pipeline, "eval": {"limit": 2}})
    config = read_settings_file(PipelineConfig, path, "pipeline config")
    _, settings = evaluation_settings(config, check_stage_recipes(config))
    assert settings.task == "synth_mc" and settings.limit == 2
    write(tmp_path / "grpo.yaml", {**grpo_recipe, "task": "synth_arith"})
    with pytest.raises(UserError, match=r"^the stages train on different tasks \(sft: synth_mc, grpo: synth_arith\): "
                                        r"set eval.task$"):
        evaluation_settings(config, check_stage_recipes(config))
