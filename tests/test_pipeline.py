"""`paft-rl pipeline` on a tiny model: named stages (train, merge, select, evaluate), each rerun only when it or a
stage it names changed; the older sft -> grpo -> eval form, converted."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from helpers import assert_adapter_trained
from transformers import AutoModelForCausalLM

from paft_rl.cli import main
from paft_rl.tasks import get_task, load_task_pool
from paft_rl.trainers.sft import PaftSFTCollator
from prompt_pool import UserError
from tests.tiny import make_tiny_model_dir

COMMON = {"task": "synth_mc", "report_to": "none", "bf16": False, "logging_steps": 1, "data_limit": 16, "seed": 0}
FIXED = "{question} ## {A} ## {B} ## {C} ## {D} ##"


def write(path, data):
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


# ---------------------------------------------------------------------------------------------- stages form
@pytest.fixture
def three_conditions(tmp_path):
    """The PAFT paper's protocol in miniature: one fixed template, the train template the base model answers
    best (TopAccuracy), PAFT over the train pool; all judged together on the held-out templates."""
    model = make_tiny_model_dir(tmp_path / "model")
    recipe = {**COMMON, "max_steps": 2, "per_device_train_batch_size": 4, "save_steps": 1, "max_length": 512}
    pipeline = {
        "model_name_or_path": str(model), "output_dir": str(tmp_path / "run"),
        "stages": [
            {"name": "fixed", "train": "sft", "recipe": recipe,
             "with": {"template_draw": "fixed", "fixed_template": FIXED}},
            {"name": "top_choice", "select": "accuracy", "recipe": recipe, "rows": 2},
            {"name": "top", "train": "sft", "recipe": recipe, "template_from": "top_choice"},
            {"name": "paft", "train": "sft", "recipe": recipe, "with": {"template_draw": "uniform"}},
            {"name": "eval", "evaluate": {"models": ["base", "fixed", "top", "paft"], "limit": 2,
                                          "max_new_tokens": 2, "progress": False}},
        ],
    }
    return tmp_path, pipeline


@pytest.fixture
def seen_templates(monkeypatch):
    """Template id and prompt text of every example each training stage's collator rendered, by stage name."""
    from paft_rl.workflows import pipeline

    seen: dict[str, list[tuple[str, str]]] = {}
    current = []
    run_recipe, texts = pipeline.run_recipe, PaftSFTCollator.texts

    def recording_run(command, recipe, path, resume=None):
        current.append(Path(path).stem)  # the pipeline records each stage's recipe as recipes/<stage>.yaml
        return run_recipe(command, recipe, path, resume)

    def recording_texts(self, rows, step, evaluation=False):
        prompts, completions, ids = texts(self, rows, step, evaluation)
        if not evaluation:
            seen.setdefault(current[-1], []).extend(zip(ids, prompts))
        return prompts, completions, ids

    monkeypatch.setattr(pipeline, "run_recipe", recording_run)
    monkeypatch.setattr(PaftSFTCollator, "texts", recording_texts)
    return seen


@pytest.mark.slow
def test_three_conditions_train_on_what_they_say_and_are_judged_on_the_same_cells(three_conditions, seen_templates,
                                                                                   capsys):
    tmp_path, pipeline = three_conditions
    path = write(tmp_path / "p.yaml", pipeline)
    assert main(["pipeline", "--config", path]) == 0
    capsys.readouterr()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    pool = load_task_pool(get_task("synth_mc"))
    train_ids = {t.id for t in pool.train}

    # Each condition trained on what it says: the fixed wording only; the chosen train template only; the pool.
    assert {t for t, _ in seen_templates["fixed"]} == {"fixed"}
    assert all(" ## " in prompt for _, prompt in seen_templates["fixed"])
    chosen = summary["top_choice"]["chosen"]
    scores = summary["top_choice"]["scores"]
    assert chosen in train_ids and set(scores) == train_ids and scores[chosen] == max(scores.values())
    assert {t for t, _ in seen_templates["top"]} == {chosen}
    paft = {t for t, _ in seen_templates["paft"]}
    assert paft <= train_ids and len(paft) > 1
    # The TopAccuracy choice was judged on train templates only, never a held-out one.
    chosen_on = {json.loads(line)["template"]
                 for line in (tmp_path / "run" / "top_choice" / "eval" / "generations.jsonl").read_text().splitlines()}
    assert chosen_on == train_ids

    # Every model judged on the same (template, question) pairs: the held-out templates.
    records = [json.loads(line) for line in (tmp_path / "run" / "eval" / "generations.jsonl").read_text().splitlines()]
    cells = {label: {(r["template"], r["row_id"]) for r in records if r["label"] == label}
             for label in ("base", "fixed", "top", "paft")}
    heldout = {t.id for t in pool.heldout}
    assert all(c == cells["base"] for c in cells.values()) and {t for t, _ in cells["base"]} == heldout
    assert len(cells["base"]) == 2 * len(heldout)
    assert set(summary["eval"]["results"]) == {"base", "fixed", "top", "paft"}

    # Changing one stage reruns it and what names it (the evaluation), nothing else.
    pipeline["stages"][3]["with"] = {"template_draw": "uniform", "learning_rate": 1.0e-4}
    write(tmp_path / "p.yaml", pipeline)
    seen_templates.clear()
    assert main(["pipeline", "--config", path]) == 0
    out = capsys.readouterr().out
    for name in ("fixed", "top_choice", "top"):
        assert f"== {name} " in out and f"{name} (" in out
        assert any(line.startswith(f"== {name} (") and "already done" in line for line in out.splitlines())
    assert "paft (sft): settings changed (recipe.learning_rate:" in out
    assert "eval (evaluate base, fixed, top, paft): settings changed (after.paft:" in out
    assert set(seen_templates) == {"paft"}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"colour": 1}, "p.yaml: unknown key 'colour'"),
        ({"stages": []}, "p.yaml.stages is empty"),
        ({"stages": [{"name": "a", "train": "sft", "recipe": "missing.yaml"}]},
         "p.yaml.stages[0].recipe 'missing.yaml' does not exist"),
        ({"stages": [{"name": "a", "train": "sft", "merge": "b", "recipe": {}}]}, "give exactly one of"),
        ({"stages": [{"name": "a", "merge": "b", "rows": 3}]}, "'a': a merge stage takes no rows"),
        ({"stages": [{"name": "a", "train": "sft", "recipe": {**COMMON, "max_steps": 1}}, {"name": "m", "merge": "a"}]},
         "stage m: stage a trains full weights (no use_peft), so there is no LoRA adapter to merge"),
        ({"stages": [{"name": "e", "evaluate": {"models": ["teacher"]}}]},
         "stages[0] (e) names 'teacher', which is no earlier stage"),
        ({"stages": [{"name": "e", "evaluate": {"models": ["base"], "limt": 3}}]},
         "p.yaml.stages[0].evaluate: unknown key 'limt'; did you mean 'limit'?"),
        ({"stages": [{"name": "e", "evaluate": {"models": ["base", "base"]}}]}, "models names base twice"),
        ({"stages": [{"name": "e", "evaluate": {"models": ["base"], "out": "x"}}]}, "evaluate.out is set by the"),
    ],
)
def test_bad_stages_are_refused_before_anything_runs(three_conditions, change, message, capsys):
    tmp_path, pipeline = three_conditions
    path = write(tmp_path / "p.yaml", {**pipeline, **change})
    assert main(["pipeline", "--config", path]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_a_mistake_in_the_last_stage_costs_nothing(three_conditions, capsys):
    tmp_path, pipeline = three_conditions
    pipeline["stages"][3]["with"] = {"template_draw": "uniform", "learning_rat": 1.0}
    assert main(["pipeline", "--config", write(tmp_path / "p.yaml", pipeline)]) == 2
    err = capsys.readouterr().err
    assert "stage paft" in err and "learning_rat" in err and len(err.strip().splitlines()) == 1
    pipeline["stages"][3]["with"] = {"template_draw": "uniform", "system_prompt": "Be brief."}
    assert main(["pipeline", "--config", write(tmp_path / "p.yaml", pipeline)]) == 2
    err = capsys.readouterr().err
    assert "trains with system_prompt" in err and "set the same system_prompt" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"template_from": "fixed"}, "uses 'fixed' as its template_from, but 'fixed' is a train stage"),
        # one stage named in two roles is judged in each: a select stage makes no model to train on
        ({"model": "top_choice"}, "uses 'top_choice' as its model, but 'top_choice' is a select stage"),
    ],
)
def test_a_stage_that_builds_on_the_wrong_kind_is_refused(three_conditions, change, message, capsys):
    tmp_path, pipeline = three_conditions
    pipeline["stages"][2].update(change)
    assert main(["pipeline", "--config", write(tmp_path / "p.yaml", pipeline)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------- the older form
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
def test_older_form_runs_as_stages_end_to_end_and_resumes(configs, capsys):
    tmp_path, pipeline, grpo_recipe = configs
    # First run: the GRPO recipe cannot hold whole groups; that is reported before SFT trains.
    write(tmp_path / "grpo.yaml", {**grpo_recipe, "num_generations": 3})
    path = write(tmp_path / "p.yaml", pipeline)
    assert main(["pipeline", "--config", path]) == 2
    assert "num_generations" in capsys.readouterr().err
    assert not (tmp_path / "run" / "sft").exists() and not (tmp_path / "sft").exists()
    # Fixed: the whole pipeline runs, as the stages the older form means; a rerun skips every finished stage.
    write(tmp_path / "grpo.yaml", grpo_recipe)
    assert main(["pipeline", "--config", path]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == ("p.yaml: sft/grpo/eval is the older pipeline form; it runs as the stages sft "
                                   "(train) -> merge (merge) -> grpo (train) -> eval (evaluate). Write them under "
                                   "stages: (docs/workflows.md) to drop this line.")
    assert (f"stage grpo: the recipe's model_name_or_path 'replaced-by-the-pipeline' is replaced by "
            f"'{tmp_path / 'run' / 'merge' / 'model'}'") in out.splitlines()
    assert main(["pipeline", "--config", path]) == 0
    out = capsys.readouterr().out
    assert out.count("already done") == 4
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["merge"]["model"] == str(tmp_path / "run" / "merge" / "model")
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
        ({"sft": "missing.yaml"}, "p.yaml.stages[0].recipe 'missing.yaml' does not exist"),
        ({"sft": None, "grpo": None}, "sft and grpo are both missing"),
        ({"colour": 1}, "p.yaml: unknown key 'colour'"),
        # Before, a typo'd eval key was dropped and the evaluation ran on the whole dataset.
        ({"eval": {"task": "synth_mc", "limt": 3}}, "evaluate: unknown key 'limt'; did you mean 'limit'?"),
        ({"eval": {"task": "synth_mc", "limit": 0}}, "limit must be a positive number"),
        ({"eval": {"task": "synth_mc", "models": ["teacher"]}}, "(eval) names 'teacher', which is no earlier stage"),
        ({"eval": {"task": "synth_mc", "models": ["sft", "sft"]}}, "evaluate.models names sft twice"),
        ({"eval": {"task": "synth_mc", "out": "elsewhere"}}, "evaluate.out is set by the pipeline"),
        ({"eval": {"task": "synth_mc", "prompt_format": "chatty"}}, "evaluate.prompt_format must be one of"),
        ({"grpo": None, "eval": {"task": "synth_mc", "models": ["grpo"]}}, "names 'grpo', which is no earlier stage"),
        ({"eval": {"task": "synth_mc", "system_prompt": "Be brief."}},
         "evaluate.system_prompt is 'Be brief.' but the stage"),
        ({"eval": {"task": "synth_mc", "prompt_format": "plain"}}, "evaluate.prompt_format is 'plain' but the stage"),
    ],
)
def test_older_form_bad_config_is_refused_before_anything_trains(configs, change, message, capsys):
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
    assert "trains with system_prompt" in err and "set the same system_prompt" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "sft").exists()


@pytest.mark.slow
@pytest.mark.parametrize("system_prompt", ["You answer with the option text only.", None])
def test_pipeline_evaluates_with_the_training_prompt(tmp_path, system_prompt):
    """The evaluation sees the very prompt text the trainer builds with the recipe's settings: with the recipe's
    system prompt when it has one, without when it has none."""
    from transformers import AutoTokenizer

    from paft_rl.eval.runner import EvalSettings, build_cells, eval_templates
    from paft_rl.formatting import PromptFormat, prompt_text

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
    assert "sft (sft): already done" in out and "eval (evaluate sft): settings changed (eval.limit: 1 -> 2)" in out
    assert json.loads((tmp_path / "run" / "eval" / "results.json").read_text())["settings"]["n_questions"] == 2


def test_eval_task_defaults_to_the_task_the_stages_train(configs):
    from paft_rl.workflows.pipeline import make_plan, read_pipeline

    tmp_path, pipeline, grpo_recipe = configs
    path = write(tmp_path / "p.yaml", {**pipeline, "eval": {"limit": 2}})
    _, settings = make_plan(read_pipeline(path, log=lambda *_: None)).evaluations["eval"]
    assert settings.task == "synth_mc" and settings.limit == 2
    write(tmp_path / "grpo.yaml", {**grpo_recipe, "task": "synth_arith"})
    with pytest.raises(UserError, match=r"^stage eval: the stages train on different tasks \(sft: synth_mc, grpo: "
                                        r"synth_arith\): set evaluate.task$"):
        make_plan(read_pipeline(path, log=lambda *_: None))


@pytest.mark.slow
def test_select_by_loss_picks_for_a_train_stage(three_conditions, seen_templates, capsys):
    """SAPO inside a pipeline: the select stage scores the train templates on the base model; the stage that names
    it trains on the template it picked (here the highest loss, the paper's control)."""
    tmp_path, pipeline = three_conditions
    recipe = pipeline["stages"][0]["recipe"]
    pipeline["stages"] = [
        {"name": "choice", "select": "loss", "pick": "highest", "rows": 4, "recipe": recipe},
        {"name": "sapo", "train": "sft", "recipe": recipe, "template_from": "choice"},
        {"name": "eval", "evaluate": {"models": ["sapo"], "limit": 1, "max_new_tokens": 2, "progress": False}},
    ]
    assert main(["pipeline", "--config", write(tmp_path / "p.yaml", pipeline)]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    losses = summary["choice"]["scores"]
    assert summary["choice"]["chosen"] == max(losses, key=losses.get) and summary["choice"]["rule"] == "highest loss"
    assert {t for t, _ in seen_templates["sapo"]} == {summary["choice"]["chosen"]}
    written = json.loads((tmp_path / "run" / "choice" / "scores.json").read_text())
    assert written["chosen"] == summary["choice"]["chosen"]
