"""A three-task sequence on a tiny model: stages run, the report's metrics match its own matrix; every task is
selected and evaluated with the prompt text it trains with; a bad config is one line naming the place."""

import json

import pytest
import torch
import yaml
from helpers import assert_adapter_trained

from paft_rl.cli import main
from paft_rl.selection.continual import sequence_metrics
from tests.tiny import make_tiny_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny"))


def write_config(tmp_path, model_dir, mode="merge", **overrides):
    piqa = tmp_path / "piqa.jsonl"
    piqa.write_text("".join(json.dumps({"goal": f"Open jar {i}", "sol1": "twist the lid", "sol2": "eat the lid",
                                        "label": i % 2}) + "\n" for i in range(8)))
    config = {
        "model_name_or_path": str(model_dir), "output_dir": str(tmp_path / "seq"), "adapter_mode": mode,
        "sft": {"max_steps": 1, "per_device_train_batch_size": 2, "learning_rate": 1e-3, "max_length": 512,
                "lora_r": 4, "lora_alpha": 8, "bf16": False, "logging_steps": 1, "data_limit": 8},
        "select": {"rows": 2, "batch_size": 8},
        "eval": {"limit": 1, "max_new_tokens": 4, "batch_size": 32},
        "tasks": [{"task": "synth_mc"}, {"task": "synth_arith"}, {"task": "piqa", "data": str(piqa)}],
        **overrides,
    }
    path = tmp_path / "seq.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_three_task_sequence(tmp_path, model_dir, capsys):
    # Stack mode exercises everything merge mode does (merging each adapter) plus rebuilding from adapters.
    mode = "stack"
    path = write_config(tmp_path, model_dir, mode)
    assert main(["sequence", "--config", str(path)]) == 0
    report = json.loads((tmp_path / "seq" / "sequence.json").read_text())
    assert report["tasks"] == ["synth_mc", "synth_arith", "piqa"]
    assert len(report["matrix"]) == 3 and all(len(row) == 3 for row in report["matrix"])
    assert report["metrics"] == pytest.approx(sequence_metrics(report["matrix"], report["baseline"]))
    for stage in (1, 2, 3):
        chosen = json.loads((tmp_path / "seq" / f"stage_{stage}" / "selection" / "scores.json").read_text())
        assert chosen["chosen"] == report["templates"][stage - 1]
    assert "AP" in capsys.readouterr().out
    if mode == "stack":
        assert not (tmp_path / "seq" / "stage_1" / "model").exists()
        assert_adapter_trained(make_tiny_model_dir(tmp_path / "model"), tmp_path / "seq" / "stage_1" / "adapter")
    # A rerun finds every stage finished and only rebuilds the report.
    assert main(["sequence", "--config", str(path)]) == 0
    assert "already done" in capsys.readouterr().out


def run_two_task_sequence(tmp_path, model_dir, capsys):
    """Run a synth_mc -> synth_arith sequence; returns its config and file, for a rerun with changes."""
    config = yaml.safe_load(write_config(tmp_path, model_dir).read_text())
    config["tasks"] = [{"task": "synth_mc"}, {"task": "synth_arith"}]
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["sequence", "--config", str(path)]) == 0
    capsys.readouterr()
    return config, path


@pytest.mark.slow
def test_reordered_tasks_rerun_every_stage(tmp_path, model_dir, capsys):
    """Swapping the task order must not reuse stage 1 (it trained the other task) nor mislabel the matrix."""
    config, path = run_two_task_sequence(tmp_path, model_dir, capsys)
    config["tasks"] = config["tasks"][::-1]
    path.write_text(yaml.safe_dump(config))
    assert main(["sequence", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "already done" not in out and "settings changed" in out
    report = json.loads((tmp_path / "seq" / "sequence.json").read_text())
    assert report["tasks"] == ["synth_arith", "synth_mc"]
    trained = yaml.safe_load((tmp_path / "seq" / "stage_1" / "recipe.yaml").read_text())
    assert trained["task"] == "synth_arith"


def expected_eval_prompts(model_dir, task_name, system_prompt):
    """What `evaluate` must feed the model for each (template, row) cell: the trainers' prompt path."""
    from transformers import AutoTokenizer

    from paft_rl.formatting import PromptFormat, prompt_text
    from paft_rl.tasks import get_task, load_rows, load_task_pool

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    task = get_task(task_name)
    pool = load_task_pool(task).subset("heldout")
    rows = load_rows(task, split=task.eval_split, limit=1)
    return {(template.id, str(row["row_id"])): prompt_text(tokenizer, PromptFormat(True, system_prompt).build(
        pool.render(template, task.example(row).fields)))
        for template in pool.templates for row in rows}


def selection_losses(model_dir, system_prompt):
    """SAPO's losses for synth_mc's first 2 rows under the starting model, prompted with ``system_prompt``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from paft_rl.selection import score_templates
    from paft_rl.tasks import get_task, load_rows, load_task_pool

    task = get_task("synth_mc")
    examples = [task.example(row) for row in load_rows(task, limit=2, seed=42)]
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    scores = score_templates(model, AutoTokenizer.from_pretrained(str(model_dir)), load_task_pool(task), examples,
                             n=2, batch_size=8, system_prompt=system_prompt, prompt_format="chat")
    return {score.template_id: score.loss for score in scores}


@pytest.mark.slow
def test_stage_recipe_prompt_settings_reach_selection_and_evaluation(tmp_path, model_dir):
    """The shared sft section's system prompt is in every evaluation prompt, exactly as the trainer builds it,
    and SAPO scored the templates with it (its losses equal a direct scoring with it, not without it)."""
    system = "You are terse."
    path = write_config(tmp_path, model_dir, tasks=[{"task": "synth_mc"}])
    config = yaml.safe_load(path.read_text())
    config["sft"].update(system_prompt=system, prompt_format="chat")
    path.write_text(yaml.safe_dump(config))
    assert main(["sequence", "--config", str(path)]) == 0
    expected = expected_eval_prompts(model_dir, "synth_mc", system)
    for folder in ("stage_0/synth_mc", "stage_1/eval/synth_mc"):
        lines = (tmp_path / "seq" / folder / "generations.jsonl").read_text().splitlines()
        seen = {(r["template"], r["row_id"]): r["prompt"] for r in map(json.loads, lines)}
        assert seen == expected and all(system in prompt for prompt in seen.values())
    assert expected != expected_eval_prompts(model_dir, "synth_mc", None)
    scores = json.loads((tmp_path / "seq" / "stage_1" / "selection" / "scores.json").read_text())["scores"]
    scored = {score["template_id"]: score["loss"] for score in scores}
    assert scored == pytest.approx(selection_losses(model_dir, system), abs=1e-5)
    assert scored != pytest.approx(selection_losses(model_dir, None), abs=1e-5)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"tasks": [{"task": "nope"}]}, "unknown task 'nope'"),
        ({"tasks": []}, "seq.yaml.tasks must list at least one task"),
        ({"adapter_mode": "glue"}, "seq.yaml.adapter_mode must be one of merge, stack, got 'glue'"),
        ({"colour": "red"}, "seq.yaml: unknown key 'colour'"),
        ({"tasks": ["synth_mc"]}, "seq.yaml.tasks[0]: must be a mapping"),
        ({"tasks": [{"task": "synth_mc", "eval_dat": "x"}]},
         "seq.yaml.tasks[0]: unknown key 'eval_dat'; did you mean 'eval_data'?"),
        # Once a TypeError from EvalSettings.__init__.
        ({"eval": {"limt": 1}}, "seq.yaml.eval: unknown key 'limt'; did you mean 'limit'?"),
        ({"eval": {"limit": 0}}, "seq.yaml.eval.limit must be a positive number, got 0"),
        ({"eval": {"task": "synth_arith"}}, "seq.yaml.eval.task is set by the sequence"),
        ({"eval": {"system_prompt": "Hi."}}, "seq.yaml.eval.system_prompt is set by the sequence"),
        ({"select": {"pick": "best"}}, "seq.yaml.select.pick must be one of lowest, highest, original, got 'best'"),
        ({"select": {"rows": 0}}, "seq.yaml.select.rows must be a positive number, got 0"),
        ({"select": {"rows": 20}}, "seq.yaml.select.rows 20 but the recipe trains on its first 8 rows (data_limit)"),
        ({"sft": {"template_draw": "uniform"}}, "seq.yaml.sft.template_draw is set by the sequence"),
        ({"tasks": [{"task": "synth_mc", "sft": {"output_dir": "x"}}]},
         "seq.yaml.tasks[0].sft.output_dir is set by the sequence"),
        ({"sft": {"lerning_rate": 1e-3}}, "seq.yaml.sft: unknown option 'lerning_rate'; did you mean 'learning_rate'?"),
        # Once reported as `--limit`.
        ({"sft": {"data_limit": 0}}, "seq.yaml.sft.data_limit must be a positive number, got 0"),
        ({"tasks": [{"task": "synth_mc"}, {"task": "synth_arith", "sft": {"data_limit": 0}}]},
         "seq.yaml.tasks[1].sft.data_limit must be a positive number, got 0"),
        ({"tasks": [{"task": "synth_mc", "sft": {"max_stesp": 2}}]},
         "seq.yaml.tasks[0].sft: unknown option 'max_stesp'; did you mean 'max_steps'?"),
    ],
)
def test_bad_config(tmp_path, model_dir, overrides, message, capsys):
    path = write_config(tmp_path, model_dir, **overrides)
    (tmp_path / "seq").mkdir()
    (tmp_path / "seq" / "mine.txt").write_text("kept")
    assert main(["sequence", "--config", str(path), "--fresh"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0]
    assert [p.name for p in (tmp_path / "seq").iterdir()] == ["mine.txt"]  # --fresh deletes nothing on bad input


def test_bad_flag(tmp_path, capsys):
    assert main(["sequence", "--config", str(tmp_path / "s.yaml"), "--frehs"]) == 2
    assert "did you mean '--fresh'?" in capsys.readouterr().err


@pytest.mark.slow
def test_a_changed_evaluation_evaluates_again_without_training_again(tmp_path, model_dir, capsys):
    config, path = run_two_task_sequence(tmp_path, model_dir, capsys)
    adapter = (tmp_path / "seq" / "stage_1" / "adapter" / "adapter_model.safetensors").read_bytes()
    config["eval"]["limit"] = 2
    config["eval"]["batch_size"] = 8  # speed only: not a reason to evaluate again by itself
    path.write_text(yaml.safe_dump(config))
    assert main(["sequence", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "stage 1/2: synth_mc: already done" in out and "stage 2/2: synth_arith: already done" in out
    assert out.count("settings changed (eval.limit: 1 -> 2)") == 3  # the baseline and both stages' evaluations
    assert "batch_size" not in out
    assert (tmp_path / "seq" / "stage_1" / "adapter" / "adapter_model.safetensors").read_bytes() == adapter
    results = json.loads((tmp_path / "seq" / "stage_2" / "eval" / "synth_mc" / "results.json").read_text())
    assert results["settings"]["limit"] == 2
