"""SAPO scoring: losses equal a direct per-example computation; picks; weights; bad input."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from paft_rl.formatting import PromptFormat, encode_example
from paft_rl.selection import pick_template, score_templates, softmax_scores
from paft_rl.tasks import get_task, load_rows
from prompt_pool import PromptPool, Template, UserError
from tests.tiny import make_tiny_model_dir, make_tiny_tokenizer


@pytest.fixture(scope="module")
def model_and_tokenizer(tmp_path_factory):
    path = make_tiny_model_dir(tmp_path_factory.mktemp("tiny"))
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(path), make_tiny_tokenizer()


POOL = PromptPool([
    Template("plain", "Question: {question}\nAnswer:"),
    Template("options", "{question}\n{options}\nReply with the option text."),
    Template("letters", "Pick one: {A} / {B} / {C} / {D}. {question}"),
    Template("held", "## {question}", "heldout"),
])


def examples(n=6):
    task = get_task("synth_mc")
    return [task.example(row) for row in load_rows(task, limit=n)]


def direct_loss(model, tokenizer, template, example):
    ids, n_prompt = encode_example(tokenizer, POOL.render(template, example.fields), example.target,
                                   PromptFormat(chat=True))
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    targets = torch.tensor(ids[n_prompt:])
    return torch.nn.functional.cross_entropy(logits[n_prompt - 1:-1], targets).item()


def test_losses_equal_direct_per_example_computation(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    rows = examples()
    scores = score_templates(model, tokenizer, POOL, rows, n=5, batch_size=3)
    assert [s.template_id for s in scores] == ["plain", "options", "letters"]  # train templates only
    for score in scores:
        template = POOL.get(score.template_id)
        expected = [direct_loss(model, tokenizer, template, e) for e in rows[:5]]
        assert score.row_losses == pytest.approx(expected, abs=1e-5)
        assert score.loss == pytest.approx(sum(expected) / 5, abs=1e-5)
        assert score.rows == 5 and score.tokens > 5


def test_batch_size_does_not_change_losses(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    one = score_templates(model, tokenizer, POOL, examples(), n=4, batch_size=1)
    many = score_templates(model, tokenizer, POOL, examples(), n=4, batch_size=12)
    assert [s.loss for s in one] == pytest.approx([s.loss for s in many], abs=1e-5)


def test_picks_and_weights():
    from paft_rl.selection.scoring import TemplateScore

    scores = [TemplateScore(i, loss, 10, 1, [loss], [10]) for i, loss in (("a", 2.0), ("b", 1.0), ("c", 3.0))]
    assert pick_template(scores).template_id == "b"
    assert pick_template(scores, "highest").template_id == "c"
    negative_losses = {s.template_id: -s.loss for s in scores}
    assert softmax_scores(negative_losses, 0) == {"a": 0.0, "b": 1.0, "c": 0.0}
    weights = softmax_scores(negative_losses, 1.0)
    assert math.isclose(sum(weights.values()), 1.0)
    assert weights["b"] / weights["a"] == pytest.approx(math.e)
    with pytest.raises(UserError, match="'lowest' or 'highest'"):
        pick_template(scores, "best")
    with pytest.raises(UserError, match="temperature must be >= 0"):
        softmax_scores(negative_losses, -0.5)


@pytest.mark.parametrize(
    "pool, rows, n, message",
    [
        (PromptPool([Template("only", "{question} {options}")]), 3, 2, "at least 2 candidate templates"),
        (POOL, 3, 10, "n = 10 but the data has only 3 rows"),
        (POOL, 3, 0, "positive number of rows"),
    ],
)
def test_bad_input(model_and_tokenizer, pool, rows, n, message):
    model, tokenizer = model_and_tokenizer
    with pytest.raises(UserError, match=message):
        score_templates(model, tokenizer, pool, examples(rows), n=n)


def test_rows_without_gold(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    rows = examples(3)
    rows[1].target = ""
    with pytest.raises(UserError, match="1 row\\(s\\) have no gold answer"):
        score_templates(model, tokenizer, POOL, rows, n=3)


def test_select_command_writes_table_and_recipe(tmp_path, capsys):
    import json

    import yaml

    from paft_rl.cli import main

    model_dir = make_tiny_model_dir(tmp_path / "model")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model_name_or_path": str(model_dir), "task": "synth_mc",
                                      "output_dir": str(tmp_path / "run"), "learning_rate": 1e-4}))
    assert main(["select", "--config", str(recipe), "--rows", "4"]) == 0
    out = tmp_path / "run" / "sapo_selection"
    summary = json.loads((out / "scores.json").read_text())
    losses = [s["loss"] for s in summary["scores"]]
    assert losses == sorted(losses) and summary["chosen"] == summary["scores"][0]["template_id"]
    assert len(summary["scores"]) == 24
    trained = yaml.safe_load((out / "selected_recipe.yaml").read_text())
    assert trained["template_draw"] == "top" and trained["template_id"] == summary["chosen"]
    assert trained["learning_rate"] == 1e-4
    assert (out / "scores.csv").read_text().startswith("rank,template_id,loss")
    assert main(["select", "--config", str(recipe), "--rows", "4", "--pick", "highest",
                 "--out", str(tmp_path / "h")]) == 0
    highest = json.loads((tmp_path / "h" / "scores.json").read_text())
    assert highest["chosen"] == summary["scores"][-1]["template_id"]


@pytest.mark.parametrize(
    "recipe, args, message",
    [
        ({"task": "synth_mc", "pool": "ONE"}, ["--rows", "3"], "SAPO needs at least 2"),
        ({"task": "synth_mc"}, ["--rows", "0"], "option rows must be a positive number, got 0"),
        ({"task": "synth_mc"}, ["--pick", "best"], "option pick: invalid choice: 'best'"),
        ({"task": "gsm8k", "data": "DATA"}, ["--rows", "50"], "--rows 50 but the data has only 3 rows"),
        ({"task": "synth_mc", "data_limit": 0}, [], "r.yaml.data_limit must be a positive number, got 0"),
        ({"task": "synth_mc", "prompt_format": "chatty"}, [],
         "prompt_format must be one of auto, chat, plain, got 'chatty'"),
        ({"task": "synth_mc", "model_name_or_path": None}, [], "r.yaml names no model"),
    ],
)
def test_select_bad_input(tmp_path, recipe, args, message, capsys):
    import json

    import yaml

    from paft_rl.cli import main

    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps({"id": "a", "text": "{question} {options}"}) + "\n")
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"question": "q", "answer": "#### 1"}) + "\n" for _ in range(3)))
    recipe = {"model_name_or_path": str(tmp_path / "never-loaded"), **recipe}
    recipe = {k: str(one) if v == "ONE" else str(data) if v == "DATA" else v for k, v in recipe.items()}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["select", "--config", str(path), *args]) == 2
    assert message in capsys.readouterr().err


def test_select_scores_with_the_recipes_rows_and_prompt_settings(tmp_path):
    """The recipe is read as `paft-rl sft` reads it: its data_limit, seed, prompt_format and system_prompt are
    what the templates are scored with (the losses equal a direct scoring with them, and differ without)."""
    import json

    import yaml

    from paft_rl.cli import main
    from paft_rl.tasks import load_task_pool

    model_dir = make_tiny_model_dir(tmp_path / "model")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model_name_or_path": str(model_dir), "task": "synth_mc", "data_limit": 3,
                                      "seed": 7, "prompt_format": "chat", "system_prompt": "You are terse."}))
    assert main(["select", "--config", str(recipe), "--out", str(tmp_path / "sel")]) == 0
    summary = json.loads((tmp_path / "sel" / "scores.json").read_text())
    scored = {score["template_id"]: score["loss"] for score in summary["scores"]}
    task = get_task("synth_mc")
    rows = [task.example(row) for row in load_rows(task, limit=3, seed=7)]
    model = AutoModelForCausalLM.from_pretrained(model_dir)

    def direct(system_prompt):
        scores = score_templates(model, make_tiny_tokenizer(), load_task_pool(task), rows, n=3,
                                 system_prompt=system_prompt, prompt_format="chat")
        return {score.template_id: score.loss for score in scores}

    assert {score["rows"] for score in summary["scores"]} == {3}
    assert scored == pytest.approx(direct("You are terse."), abs=1e-5)
    assert scored != pytest.approx(direct(None), abs=1e-5)


def test_select_reads_sft_and_grpo_recipes_with_trls_defaults():
    from paft_rl.configs import PaftGRPOConfig, PaftSFTConfig
    from paft_rl.training import recipe_configs

    recipe = {"model_name_or_path": "m", "task": "synth_arith", "bf16": False}
    sft, _ = recipe_configs(None, recipe, "r.yaml")
    grpo, model_args = recipe_configs(None, {**recipe, "num_generations": 4, "per_device_train_batch_size": 4},
                                      "g.yaml")
    assert type(sft) is PaftSFTConfig and sft.max_length == 1024 and sft.prompt_format == "auto"
    assert type(grpo) is PaftGRPOConfig and grpo.num_generations == 4 and model_args.model_name_or_path == "m"


def test_scoring_sees_exactly_the_tokens_sft_trains_on():
    from paft_rl.trainers import PaftSFTCollator, build_dataset
    from paft_rl.trainers.draws import FixedDraw, TemplateChooser

    tokenizer = make_tiny_tokenizer()
    task = get_task("synth_mc")
    rows = build_dataset(task, load_rows(task, limit=3))
    for template in POOL.train:
        collator = PaftSFTCollator(tokenizer, TemplateChooser(FixedDraw(POOL, 0, template)), PromptFormat(chat=True))
        batch = collator(list(rows), step=0)
        for i, row in enumerate(rows):
            example = task.example(row)
            ids, n_prompt = encode_example(tokenizer, POOL.render(template, example.fields), example.target,
                                           PromptFormat(chat=True))
            trained = batch["input_ids"][i][batch["attention_mask"][i].bool()].tolist()
            assert trained == ids
            assert (batch["labels"][i][:n_prompt] == -100).all() and batch["labels"][i][n_prompt] != -100
