"""Cloze-style multiple choice (``piqa_cloze``, ``hellaswag_cloze``, ``arc_cloze``): templates show only the
context, evaluation scores each option's text as the continuation by default, SFT trains on that very
continuation; and a local data file sliced into training and evaluation rows (``train[:N]`` / ``train[N:]``)."""

from __future__ import annotations

import json

import pytest
from test_eval_loglik import direct_logliks

from paft_rl import cli
from paft_rl.eval.loglik import option_delimiter
from paft_rl.formatting import PromptFormat, completion_text
from paft_rl.tasks import get_task, load_rows
from paft_rl.trainers.data import build_dataset
from prompt_pool import PromptPool, Template, UserError

ROWS = [
    {"goal": "Open a stuck jar lid", "sol1": "run the lid under hot water, then twist", "sol2": "freeze the jar",
     "label": 0},
    {"goal": "Dry wet shoes", "sol1": "put them in the oven at full heat", "sol2": "stuff them with newspaper",
     "label": 1},
    {"goal": "Keep bread fresh", "sol1": "store it in a closed bag", "sol2": "leave it in the sun", "label": 0},
]


@pytest.fixture
def piqa_file(tmp_path):
    path = tmp_path / "piqa.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    return path


@pytest.mark.parametrize("text, field", [("Goal: {goal}\nA. {sol1}\nB. {sol2}\nAnswer:", "{sol1}"),
                                         ("{goal}\n{options}\nAnswer:", "{options}")])
def test_a_cloze_template_that_shows_the_options_is_refused(text, field):
    problems = PromptPool([Template("shows", text)]).problems(get_task("piqa_cloze"))
    assert problems and all("is cloze" in p and "never the options" in p for p in problems)
    assert any(field in p for p in problems)
    # The context alone is a valid cloze template; the multiple-choice task still needs the options shown.
    assert PromptPool([Template("ok", "Goal: {goal}\nSolution:")]).problems(get_task("piqa_cloze")) == []
    assert PromptPool([Template("ok", "Goal: {goal}\nSolution:")]).problems(get_task("piqa"))


def test_cloze_tasks_answer_with_the_option_text(piqa_file):
    task = get_task("piqa_cloze")
    assert task.is_multiple_choice and task.answers_with_text and task.default_scoring == "loglik"
    assert get_task("piqa").default_scoring == "generate"
    with pytest.raises(UserError, match="mc_answer_style 'letter' does not fit cloze task 'piqa_cloze'"):
        task.with_answer_style("letter")
    dataset = build_dataset(task, load_rows(task, str(piqa_file)))
    assert dataset["target"] == [" run the lid under hot water, then twist", " stuff them with newspaper",
                                 " store it in a closed bag"]
    assert dataset["gold"] == ["A", "B", "A"] and dataset["options"][1] == [ROWS[1]["sol1"], ROWS[1]["sol2"]]


def test_sft_trains_on_the_continuation_loglik_scores(piqa_file, tiny_model):
    # Plain prompts: the text SFT trains on (prompt + completion, less the end-of-text token) is the prompt
    # followed by the right option exactly as loglik scoring appends it.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    task = get_task("piqa_cloze")
    row = build_dataset(task, load_rows(task, str(piqa_file)))[1]
    prompt = PromptFormat(chat=False).text(tokenizer, f"Goal: {ROWS[1]['goal']}\nSolution:")
    completion = completion_text(tokenizer, prompt, row["target"]).removesuffix(tokenizer.eos_token)
    assert prompt + completion == prompt + option_delimiter(prompt, chat=False) + ROWS[1]["sol2"]
    # Chat prompts: the assistant turn opens with the option itself, as loglik appends it after the chat prompt
    # (before, SFT trained " <option>" there while loglik scored "<option>").
    messages = PromptFormat(chat=True).build(f"Goal: {ROWS[1]['goal']}\nSolution:")
    chat_prompt = PromptFormat(chat=True).text(tokenizer, f"Goal: {ROWS[1]['goal']}\nSolution:")
    assert option_delimiter(chat_prompt, chat=True) == ""
    assert completion_text(tokenizer, messages, row["target"]).startswith(ROWS[1]["sol2"])
    # A plain prompt ending in a newline: no space before the option either.
    assert completion_text(tokenizer, prompt + "\n", row["target"]).startswith(ROWS[1]["sol2"])


def test_eval_scores_a_cloze_task_by_loglik_by_default(tmp_path, piqa_file, tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pool = tmp_path / "pool.jsonl"
    pool.write_text(json.dumps({"id": "goal", "text": "Goal: {goal}\nSolution:", "split": "heldout"}) + "\n")
    out = tmp_path / "out"
    assert cli.main(["eval", "--task", "piqa_cloze", "--models", str(tiny_model), "--data", str(piqa_file),
                     "--templates", str(pool), "--prompt_format", "plain", "--out", str(out), "--no_progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["scoring"] == "loglik"
    records = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    assert len(records) == len(ROWS)
    for record in records:
        row = ROWS[int(record["row_id"])]
        assert record["prompt"] == f"Goal: {row['goal']}\nSolution:"
        assert row["sol1"] not in record["prompt"] and row["sol2"] not in record["prompt"]
        options = [row["sol1"], row["sol2"]]
        assert record["option_logliks"] == pytest.approx(direct_logliks(model, tokenizer, record["prompt"], options,
                                                                        chat=False), abs=1e-4)


def test_split_slices_a_local_file(tmp_path, piqa_file, tiny_model, capsys):
    task = get_task("piqa_cloze")
    first, rest = load_rows(task, str(piqa_file), "train[:2]"), load_rows(task, str(piqa_file), "train[2:]")
    assert first["goal"] == [ROWS[0]["goal"], ROWS[1]["goal"]] and rest["goal"] == [ROWS[2]["goal"]]
    assert len(load_rows(task, str(piqa_file), "validation")) == len(ROWS)  # a plain name: the whole file
    for split, message in [("train[abc]", "split 'train[abc]' is no slice of piqa.jsonl"),
                           ("test[:2]", "split 'test[:2]': piqa.jsonl is one split, 'train'"),
                           ("train[5:]", "split 'train[5:]' is no slice of piqa.jsonl")]:
        with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
            load_rows(task, str(piqa_file), split)
    # Through the CLI: one line, exit 2, before any model loads.
    assert cli.main(["eval", "--task", "piqa_cloze", "--models", str(tiny_model), "--data", str(piqa_file),
                     "--split", "train[x:]", "--out", str(tmp_path / "out")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and "train[x:]" in errors[0]


def test_lm_eval_export_of_a_cloze_task_scores_by_loglik(tmp_path, piqa_file, capsys):
    import yaml

    pool = tmp_path / "pool.jsonl"
    pool.write_text(json.dumps({"id": "goal", "text": "Goal: {goal}\nSolution:", "split": "heldout"}) + "\n")
    out = tmp_path / "lm"
    assert cli.main(["pool", "export", str(pool), "--task", "piqa_cloze", "--format", "lm-eval", "--out", str(out),
                     "--data", str(piqa_file)]) == 0
    task = yaml.safe_load((out / "paft_piqa_cloze_pool_goal.yaml").read_text())
    assert task["output_type"] == "multiple_choice" and task["target_delimiter"] == " "
    assert task["doc_to_text"] == "Goal: {{ goal }}\nSolution:"
    capsys.readouterr()
    assert cli.main(["pool", "export", str(pool), "--task", "piqa_cloze", "--format", "lm-eval", "--out",
                     str(tmp_path / "bad"), "--data", str(piqa_file), "--scoring", "generate"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is cloze" in err and "--scoring loglik" in err
